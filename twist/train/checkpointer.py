"""A run's checkpoints: save, resume and export, behind one interface, for every strategy.

A checkpoint (``<out_dir>/checkpoints/{last,best}``, written atomically by twist.checkpoint)
holds the model, the optimiser, and the trainer's small state (schedule, data position, RNG
of every rank, progress). Two formats:

* ``full``: rank 0 gathers model and optimiser into one ``state.pt``. The optimiser state is
  keyed by parameter name, not by position, so a run written by one process, by DDP or by
  FSDP2 resumes under any of them, with any number of processes;
* ``sharded``: every rank writes its own part with torch.distributed.checkpoint into
  ``<checkpoint>/shards``, and rank 0 adds the small rest (no 80 GB gather for a 7B model).
  Loading reshards.

The export writes the best checkpoint (the last one without validation) as a speech LM
directory that plain ``from_pretrained`` loads (twist.lm.save_speech_lm).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from twist import dist as D
from twist.atomic import atomic_write_text, disk_full_cause, disk_full_error
from twist.checkpoint import (
    SHARDS,
    commit_checkpoint,
    copy_checkpoint,
    is_checkpoint,
    load_checkpoint,
    save_checkpoint,
    shards_dir,
    staging_dir,
)
from twist.contract import UnitContract
from twist.dist import DistInfo
from twist.errors import InputError, MissingInputError, RunExistsError
from twist.train.parallelize import unwrap


class Checkpointer:
    """Checkpoints of one run under ``<out_dir>/checkpoints``, in one format, for one strategy.

    Args:
        out_dir: the run directory.
        fmt: ``full`` or ``sharded``.
        info: this process's rank and device.
        strategy: ``none``, ``ddp`` or ``fsdp``.
    """

    def __init__(self, out_dir: str | Path, fmt: str, info: DistInfo, strategy: str) -> None:
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / "checkpoints"
        self.fmt = fmt
        self.info = info
        self.strategy = strategy

    def resume_point(self, mode: str) -> Path | None:
        """The checkpoint to continue from: ``auto`` (``last`` if there), ``true`` (must be), ``false`` (must not)."""
        last = self.dir / "last"
        exists = is_checkpoint(last)
        if mode == "true" and not exists:
            raise MissingInputError(f"resume=true but there is no checkpoint at {last}")
        if mode == "false" and exists:
            raise RunExistsError(f"{self.out_dir} already holds a training run ({last}); pass resume=auto to "
                                 "continue it or choose another out_dir")
        return last if exists else None

    def read(self, path: Path, contract: UnitContract, *, data_name: str, needed: bool = True) -> dict[str, Any] | None:
        """Load checkpoint ``path`` (``None`` when this rank does not need it) and check its
        unit contract against the training data's."""
        if not needed:
            return None
        ckpt = load_checkpoint(path)
        UnitContract.from_dict(ckpt["contract"]).check_compatible(contract, mine=f"checkpoint {path}",
                                                                  theirs=f"dataset {data_name}")
        return ckpt

    def save(self, names: tuple[str, ...], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             small_state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        """Write checkpoints ``names`` (e.g. ``("best", "last")``) atomically; collective.

        ``small_state`` is everything but model and optimiser (rank 0; ``None`` elsewhere).
        """
        if self.fmt == "full":
            model_sd, optim_sd = full_state_dicts(model, optimizer, self.strategy)
            if self.info.is_main:
                state = {"model": model_sd, "buffers": extra_buffers(model, model_sd), "optimizer": optim_sd,
                         **small_state}
                for name in names:
                    save_checkpoint(self.dir / name, state, meta=meta)
            D.barrier()
            return
        first = self.dir / names[0]
        tmp = D.broadcast_object(str(staging_dir(first)) if self.info.is_main else None)
        try:
            save_sharded(model, optimizer, Path(tmp) / SHARDS)
            if self.info.is_main:
                commit_checkpoint(tmp, first, {**small_state, "buffers": extra_buffers(model)}, meta=meta)
                for name in names[1:]:
                    copy_checkpoint(first, self.dir / name)
        except BaseException:
            if self.info.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        D.barrier()

    def restore(self, ckpt: dict[str, Any] | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                weights_loaded: bool, shards: Path | None,
                check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Load model and optimiser from a checkpoint; return its small state on every rank.

        ``weights_loaded``: an FSDP2 start from a full checkpoint, where only rank 0 read it and
        the weights were broadcast already; the optimiser state is broadcast here, and the
        small rest sent as objects. ``check(state)`` runs before any tensor is loaded (e.g. that
        the checkpoint's model is the configured one).
        """
        if weights_loaded:
            small = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "buffers")} if ckpt else None
            small = D.broadcast_object(small)
            if check is not None:
                check(small)
            load_optimizer_from_rank0(model, optimizer, ckpt["optimizer"] if ckpt else None)
            return small
        if check is not None:
            check(ckpt)
        if shards is not None:
            load_sharded(model, optimizer, shards)  # every rank reads its own part
        else:
            load_full_state_dicts(model, optimizer, ckpt["model"], ckpt["optimizer"], self.strategy)
        return ckpt

    def export(self, model: torch.nn.Module, contract: UnitContract, host_copy: Any, step_of: dict[str, int]) -> Path | None:
        """Write the best checkpoint (the last one without validation) as ``<out_dir>/speech_lm``.

        Args:
            model: the trained (wrapped) model.
            contract: the unit contract to save with it.
            host_copy: ``(checkpoint, shards) -> model``: an unsharded copy for FSDP2 or sharded
                checkpoints (twist.train.parallelize.unsharded_copy).
            step_of: the step each checkpoint name holds (written to ``SOURCE``).
        """
        out = None
        if self.info.is_main:
            from twist.lm import save_speech_lm

            src = self.dir / ("best" if is_checkpoint(self.dir / "best") else "last")
            state = load_checkpoint(src)
            shards = shards_dir(src)
            if shards is not None or self.strategy == "fsdp":
                plain = host_copy(state, shards)
            else:
                plain = unwrap(model)
                plain.load_state_dict(state["model"])
            del state
            out = self.out_dir / "speech_lm"
            save_speech_lm(plain.cpu() if plain is not unwrap(model) else plain, out, contract)
            atomic_write_text(out / "SOURCE", f"{src.name} checkpoint, step {step_of[src.name]}\n")
        D.barrier()
        return out


# ---------------------------------------------------------------------------------------
# state dicts, the same layout for every strategy
# ---------------------------------------------------------------------------------------
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
        raise InputError(
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


# ---------------------------------------------------------------------------------------
# sharded format (torch.distributed.checkpoint)
# ---------------------------------------------------------------------------------------
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
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    try:
        with _single_process_quiet():
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(directory),
                     no_dist=not dist.is_initialized())
    except CheckpointException as e:  # name the directory and the first rank's real error
        rank, (cause, *_rest) = next(iter(e.failures.items()))
        full = disk_full_cause(cause)
        if full is not None:
            raise disk_full_error(f"the sharded checkpoint {directory} (rank {rank})", full,
                                  "the previous checkpoint is unchanged") from cause
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
