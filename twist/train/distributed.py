"""Process groups and model wrapping for ``twist-train`` under ``torchrun``.

The same command runs alone (one CPU or GPU) or under ``torchrun`` on one or many nodes;
there is no home-made launcher. ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK and the
rendezvous; here we only join the group (NCCL on GPUs, gloo on CPU) and wrap the model:

* ``ddp``: torch DistributedDataParallel, for models that fit on one device (TWIST-125M to
  1.3B);
* ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) per transformer block, then the
  root, for models that do not fit (the LLaMA-7B recipe);
* ``auto``: ``ddp`` when several processes, nothing when one.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from twist.dist import local_rank, rank_and_world


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device."""
    rank, world = rank_and_world() if "WORLD_SIZE" in os.environ else (0, 1)
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be auto, cpu or cuda; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is visible")
    if want_cuda:
        torch.cuda.set_device(local_rank())
        dev = torch.device("cuda", local_rank())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if want_cuda else "gloo",
            timeout=datetime.timedelta(minutes=30),
            **({"device_id": dev} if want_cuda else {}),
        )
    return DistInfo(rank, world, local_rank() if world > 1 else 0, dev)


def shutdown_distributed() -> None:
    """Leave the process group cleanly.

    Models wrapped by DDP/FSDP sit in reference cycles and keep gloo work objects; if they
    are only freed at interpreter shutdown, after the group is gone, gloo can abort the
    process ("terminate called without an active exception") although training finished.
    So: collect them now, wait for every rank, then destroy the group. Callers drop their own
    references (the trainer) first.
    """
    if dist.is_initialized():
        import gc

        gc.collect()
        with contextlib.suppress(Exception):
            dist.barrier()
        dist.destroy_process_group()


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    if strategy not in ("auto", "none", "ddp", "fsdp"):
        raise ValueError(f"train.strategy must be auto, none, ddp or fsdp; got {strategy!r}")
    if strategy == "auto":
        return "ddp" if info.enabled else "none"
    if strategy in ("ddp", "fsdp") and not info.enabled:
        return "none"
    return strategy


def wrap_model(
    model: torch.nn.Module, strategy: str, info: DistInfo, *, fsdp_param_dtype: torch.dtype | None = None
) -> torch.nn.Module:
    """Wrap ``model`` (already on ``info.device``) for data-parallel training.

    ``fsdp_param_dtype``: under FSDP2, all-gather parameters and compute in this dtype (bf16
    halves the all-gather traffic of the 7B recipe) while gradients are reduced and the
    sharded master weights and optimiser state stay fp32. ``None``: fp32 throughout.
    """
    if strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # FSDP2

    mp = MixedPrecisionPolicy(param_dtype=fsdp_param_dtype, reduce_dtype=torch.float32 if fsdp_param_dtype else None)
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for m in model.modules():
        if type(m).__name__ in blocks:
            fully_shard(m, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and not hasattr(model, "config") else model


def full_state_dicts(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, strategy: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model and optimiser state, gathered whole on CPU, in one layout for every strategy.

    The optimiser state is keyed by parameter name (not by position, as
    ``Optimizer.state_dict`` does), so a checkpoint written by one process, by DDP or by
    FSDP2 resumes under any of them, with any number of processes.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if strategy == "fsdp":
        return get_state_dict(model, optimizer, options=opts)
    _, optim_sd = get_state_dict(unwrap(model), optimizer, options=opts)
    return unwrap(model).state_dict(), optim_sd


@contextlib.contextmanager
def _own_step_flags(optimizer: torch.optim.Optimizer):
    """Loading a state dict replaces the param groups' settings; how this run steps (fused
    kernels, foreach, capturable) is its own choice, not the checkpoint's: keep it."""
    own = [{k: g[k] for k in ("fused", "foreach", "capturable") if k in g} for g in optimizer.param_groups]
    yield
    for g, flags in zip(optimizer.param_groups, own):
        g.update(flags)


def load_full_state_dicts(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, Any],
    optim_state: dict[str, Any],
    strategy: str,
) -> None:
    """Load what :func:`full_state_dicts` wrote, whatever strategy and world size wrote it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    if strategy == "fsdp":
        target = model
    else:
        target = unwrap(model)
        target.load_state_dict(model_state)
    with _own_step_flags(optimizer):
        set_state_dict(
            target,
            optimizer,
            model_state_dict=model_state if strategy == "fsdp" else {},
            optim_state_dict=keyed_by_name(optim_state, model, optimizer),
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False),
        )


def extra_buffers(model: torch.nn.Module, model_state: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Buffers on CPU: those ``model_state`` leaves out (non-persistent: rotary ``inv_freq``,
    causal masks), or all of them. A checkpoint keeps them so an FSDP2 resume needs no model
    built on the host."""
    skip = model_state or {}
    return {n: b.detach().cpu() for n, b in unwrap(model).named_buffers() if n not in skip}


@torch.no_grad()
def materialize_from_rank0(
    model: torch.nn.Module,
    full: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None,
    info: DistInfo,
) -> None:
    """Give an FSDP2 model laid out on the meta device real storage and rank 0's values.

    ``full`` (rank 0 only): the whole state dict and every buffer. Parameters reach the
    other ranks as shards (``broadcast_from_rank0``); buffers, which FSDP2 does not shard,
    are broadcast whole.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    weights, buffers = full if full is not None else ({}, None)
    materialize_with_buffers(model, buffers, info.device, broadcast=True)
    set_model_state_dict(
        model,
        {k: v for k, v in weights.items() if k not in buffers} if info.is_main else {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False),
    )


@contextlib.contextmanager
def _single_process_quiet():
    """torch.distributed.checkpoint warns on every call without a process group; one process
    is a supported case here, so that warning is noise."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def save_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: str | os.PathLike) -> None:
    """Every rank writes its part of the model and optimiser state (torch.distributed.checkpoint).

    Under FSDP2 each rank writes only its shards, so no rank gathers the whole model; under
    DDP or one process the full tensors are written once. Collective.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with _single_process_quiet():
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(directory),
                     no_dist=not dist.is_initialized())
    except CheckpointException as e:  # name the directory and the first rank's real error
        rank, (cause, *_rest) = next(iter(e.failures.items()))
        message = f"writing the sharded checkpoint {directory} failed on rank {rank}: {type(cause).__name__}: {cause}"
        if isinstance(cause, OSError):
            raise OSError(cause.errno, message) from cause
        raise RuntimeError(message) from cause


def load_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: str | os.PathLike) -> None:
    """Load :func:`save_sharded` output into this run, whatever strategy and world size wrote it
    (torch.distributed.checkpoint reshards on load). Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)  # templates: this run's layout
    state = {"model": model_sd, "optim": optim_sd}
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(directory), no_dist=not dist.is_initialized())
    with _own_step_flags(optimizer):
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def load_sharded_model_alone(model: torch.nn.Module, directory: str | os.PathLike) -> None:
    """Fill an unsharded model on this process only (the export on rank 0), from sharded files."""
    import torch.distributed.checkpoint as dcp

    state = {"model": unwrap(model).state_dict()}  # the model's own tensors, filled in place
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(directory), no_dist=True)


@torch.no_grad()
def materialize_with_buffers(
    model: torch.nn.Module,
    buffers: dict[str, torch.Tensor] | None,
    device: torch.device,
    *,
    broadcast: bool = False,
) -> None:
    """Give a model laid out on the meta device storage, and its buffers their saved values;
    the weights are loaded next. ``broadcast``: only rank 0 has ``buffers`` (the others pass
    ``None``) and sends them to every rank (FSDP2 does not shard buffers)."""
    model.to_empty(device=device)
    for name, b in unwrap(model).named_buffers():
        if buffers is not None:
            if name not in buffers:
                raise RuntimeError(f"no saved value for buffer {name}")
            b.copy_(buffers[name].to(b.device, b.dtype))
        if broadcast:
            dist.broadcast(b, src=0)
    inner = unwrap(model)
    if hasattr(inner, "tie_weights"):
        inner.tie_weights()


def keyed_by_name(
    optim_state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """An optimiser state dict keyed by parameter name. Older checkpoints stored
    ``Optimizer.state_dict()`` (keyed by position in the param groups); positions are mapped
    to names through this run's optimiser, which groups the same model's parameters the same way."""
    positions = [p for g in optim_state.get("param_groups", []) for p in g.get("params", [])]
    if not positions or not all(isinstance(p, int) for p in positions):
        return optim_state
    name_of = {id(p): n for n, p in unwrap(model).named_parameters()}
    order = [name_of[id(p)] for g in optimizer.param_groups for p in g["params"]]
    if len(order) != len(positions):
        raise ValueError(
            f"checkpoint optimiser state has {len(positions)} parameters, this model {len(order)}: "
            "not the same architecture"
        )
    return {
        "state": {order[i]: v for i, v in optim_state.get("state", {}).items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in optim_state["param_groups"]],
    }


def load_optimizer_from_rank0(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, optim_state: dict[str, Any] | None
) -> None:
    """Load rank 0's full optimiser state into an FSDP2 run; each rank keeps its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    with _own_step_flags(optimizer):
        set_optimizer_state_dict(
            model,
            optimizer,
            keyed_by_name(optim_state, model, optimizer) if optim_state is not None else {},
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
        )


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself when alone)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over ranks (identity when alone). float64 keeps token counts exact."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (``[obj]`` when alone)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
