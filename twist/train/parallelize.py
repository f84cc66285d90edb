"""How the speech LM is laid out over the processes: one :class:`Strategy` object per run.

The trainer asks two things and never branches on the layout itself:

* :func:`build_strategy` turns ``train.strategy`` into the run's strategy;
* :func:`build_model` builds the model from the ``model/`` and ``init/`` configs (warm or cold
  start, twist.lm), moves it to its device, applies activation checkpointing, and hands it to
  the strategy to compile and wrap.

A strategy owns everything that differs between the layouts (torchtitan keeps the same split
in its per-model ``parallelize.py``): wrapping and ``torch.compile``, gradient sync across
micro-batches, and reading and writing the model's and optimiser's state (whole, or in shards
for torch.distributed.checkpoint; the files themselves are twist.train.checkpointer's). The
strategies:

* :class:`Strategy` (``none``): one process, the model as it is;
* :class:`DDP`: DistributedDataParallel, for models that fit on one device (TWIST-125M to 1.3B);
* :class:`FSDP2`: ``fully_shard`` per transformer block, then the root, for models that do not
  fit (the LLaMA-7B recipe). Only rank 0 reads full weights (the text LM, or a full
  checkpoint); every rank lays the model out on the meta device and receives its shards by
  broadcast, so a node holds one full host copy, not one per GPU.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from twist.contract import UnitContract
from twist.dist import DistInfo
from twist.errors import ConfigError, ContractMismatch, InputError
from twist.lm.attention import AttentionPlan, plan_attention
from twist.train.config import TrainLoopConfig, TrainRunConfig
from twist.train.loggers import flops_per_token

if TYPE_CHECKING:
    from twist.train.checkpointer import Resume

log = logging.getLogger("twist.train")

Weights = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]  # (state dict, every buffer)


# ---------------------------------------------------------------------------------------
# the strategies
# ---------------------------------------------------------------------------------------
class Strategy:
    """One process, the model as it is; the interface DDP and FSDP2 override where they differ.

    Args:
        info: this process's rank, world size and device.
        compile: ``train.compile``.
        compile_backend: ``train.compile_backend``.
    """

    name = "none"

    def __init__(self, info: DistInfo, *, compile: bool = False, compile_backend: str = "inductor") -> None:
        self.info = info
        self.compile = compile
        self.compile_backend = compile_backend

    # layout -------------------------------------------------------------------------------
    def builds_on_meta(self, model: torch.nn.Module | None) -> bool:
        """Whether the run's model is laid out on the meta device and filled from rank 0, which
        alone reads full weights (FSDP2 building its own model; ``model`` is one given instead)."""
        return False

    @property
    def compile_step(self) -> bool:
        """Whether forward + loss are compiled as one graph (twist.train.step); FSDP2 compiles
        the model's modules in place instead."""
        return self.compile

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Lay ``model`` (on this process's device, or on the meta device) out for training."""
        return model

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> AbstractContextManager:
        """A context for one micro-batch's backward; ``sync=False`` keeps its gradients local, so
        that they are reduced across ranks once, after the last micro-batch of the step."""
        return contextlib.nullcontext()

    def whole_model(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The whole model on this process, unwrapped; ``None`` when every rank holds a slice."""
        return unwrap(model)

    # state dicts --------------------------------------------------------------------------
    def full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        """Model and optimiser state, gathered whole on CPU, in one layout for every strategy.

        The optimiser state is keyed by parameter name (not by position, as
        ``Optimizer.state_dict`` does), so a checkpoint written by one process, by DDP or by
        FSDP2 resumes under any of them, with any number of processes. Collective.
        """
        from torch.distributed.checkpoint.state_dict import get_state_dict

        _, optim_state = get_state_dict(unwrap(model), optimizer, options=_gathered_on_cpu())
        return unwrap(model).state_dict(), optim_state

    def load_full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        model_state: dict[str, Any], optim_state: dict[str, Any]) -> None:
        """Load what :meth:`full_state` wrote, whatever strategy and world size wrote it."""
        unwrap(model).load_state_dict(model_state)
        _set_full_state(unwrap(model), optimizer, {}, keyed_by_name(optim_state, model, optimizer))

    def load_optimizer_from_rank0(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                  optim_state: dict[str, Any] | None) -> None:
        """Load rank 0's full optimiser state (``None`` on the other ranks) into every rank: for
        a run whose weights came from rank 0 (:meth:`builds_on_meta`)."""
        raise NotImplementedError(f"strategy {self.name} reads checkpoints on every rank")

    def sharded_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """This rank's part of the model and optimiser state, for torch.distributed.checkpoint:
        its shards under FSDP2, the whole tensors otherwise. Also the template a load fills."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(model, optimizer)
        return {"model": model_state, "optim": optim_state}

    def load_sharded_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           state: dict[str, Any]) -> None:
        """Load a filled :meth:`sharded_state` template."""
        from torch.distributed.checkpoint.state_dict import set_state_dict

        with _own_step_flags(optimizer):
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


class DDP(Strategy):
    """DistributedDataParallel: every rank holds the whole model; gradients are all-reduced."""

    name = "ddp"

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.info.device.index] if self.info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> AbstractContextManager:
        return contextlib.nullcontext() if sync else model.no_sync()


class FSDP2(Strategy):
    """FSDP2 (``fully_shard``): parameters, gradients and optimiser state sharded over ranks.

    Args:
        param_dtype: all-gather parameters and compute in this dtype (bf16 halves the
            all-gather traffic of the 7B recipe) while gradients are reduced and the sharded
            master weights and optimiser state stay fp32. ``None``: fp32 throughout.
    """

    name = "fsdp"

    def __init__(self, info: DistInfo, *, param_dtype: torch.dtype | None = None, **kw: Any) -> None:
        super().__init__(info, **kw)
        self.param_dtype = param_dtype

    def builds_on_meta(self, model: torch.nn.Module | None) -> bool:
        return model is None

    @property
    def compile_step(self) -> bool:
        return False

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if self.compile:  # the model in place, before sharding; forward + loss are then left as they are
            model.compile(backend=self.compile_backend)
        mp = MixedPrecisionPolicy(param_dtype=self.param_dtype,
                                  reduce_dtype=torch.float32 if self.param_dtype else None)
        blocks = set(getattr(model, "_no_split_modules", None) or [])
        for m in model.modules():
            if type(m).__name__ in blocks:
                fully_shard(m, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> AbstractContextManager:
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    def whole_model(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return None

    def full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        return get_state_dict(model, optimizer, options=_gathered_on_cpu())

    def load_full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        model_state: dict[str, Any], optim_state: dict[str, Any]) -> None:
        _set_full_state(model, optimizer, model_state, keyed_by_name(optim_state, model, optimizer))

    def load_optimizer_from_rank0(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                  optim_state: dict[str, Any] | None) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        with _own_step_flags(optimizer):
            set_optimizer_state_dict(
                model, optimizer,
                keyed_by_name(optim_state, model, optimizer) if optim_state is not None else {},
                options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
            )


STRATEGIES: dict[str, type[Strategy]] = {"none": Strategy, "ddp": DDP, "fsdp": FSDP2}


def build_strategy(t: TrainLoopConfig, info: DistInfo) -> Strategy:
    """The run's strategy from ``train.strategy``: ``auto`` is DDP under several processes and
    one process alone; DDP or FSDP2 asked for in one process is one process."""
    name = t.strategy
    if name not in ("auto", *STRATEGIES):
        raise ConfigError(f"train.strategy must be auto, none, ddp or fsdp; got {name!r}")
    if name == "auto":
        name = "ddp" if info.enabled else "none"
    if not info.enabled:
        name = "none"
    kw: dict[str, Any] = {"compile": t.compile, "compile_backend": t.compile_backend}
    if name == "fsdp":
        kw["param_dtype"] = fsdp_param_dtype(t.fsdp_param_dtype, precision_dtype(t.precision, info.device))
    return STRATEGIES[name](info, **kw)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return model.module if hasattr(model, "module") and not hasattr(model, "config") else model


def _gathered_on_cpu() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _set_full_state(target: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                    optim_state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    with _own_step_flags(optimizer):
        set_state_dict(target, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                       options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))


@contextlib.contextmanager
def _own_step_flags(optimizer: torch.optim.Optimizer):
    """Loading a state dict replaces the param groups' settings; how this run steps (fused
    kernels, foreach, capturable) is its own choice, not the checkpoint's: keep it."""
    own = [{k: g[k] for k in ("fused", "foreach", "capturable") if k in g} for g in optimizer.param_groups]
    yield
    for g, flags in zip(optimizer.param_groups, own):
        g.update(flags)


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


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------
@dataclass
class BuiltModel:
    """The model ready to train, and what the trainer needs to know about it."""

    model: torch.nn.Module
    """Laid out by the strategy (DDP module, FSDP2-sharded module, or the model itself)."""
    attention: AttentionPlan
    """The attention kernel, the packing (data.packing resolved for this family) and the mask form."""
    flops_per_token: float
    autocast_dtype: torch.dtype | None


def build_model(
    cfg: TrainRunConfig,
    contract: UnitContract,
    strategy: Strategy,
    resume: Resume | None = None,
    *,
    model: torch.nn.Module | None = None,
) -> BuiltModel:
    """Build (or take) the speech LM and lay it out for ``strategy``.

    Args:
        cfg: the run's config.
        contract: the run's unit contract: the training data's units in the model's layout
            (the model must match it).
        strategy: the run's strategy.
        resume: the checkpoint the run continues from (twist.train.checkpointer), if any. When
            the model is built on the meta device, rank 0 sends the others its weights (or, from
            a sharded checkpoint, its buffers; the checkpointer loads each rank's shards).
        model: an already built speech LM to use instead of building one (tests, benchmarks).
    """
    t, info = cfg.train, strategy.info
    on_meta = strategy.builds_on_meta(model)
    from_shards = resume is not None and resume.shards is not None
    full: Weights | None = None
    if on_meta:
        if info.is_main and not from_shards:
            full = _full_weights_on_rank0(cfg, contract, resume.state if resume is not None else None)
        model = meta_skeleton(cfg, contract)
    elif model is None:
        model = speech_lm_for_run(cfg, contract, resuming=resume is not None)
    check_model_fits(model, contract, cfg)
    autocast = precision_dtype(t.precision, info.device)
    # attention kernel, packing and mask form (twist.lm.attention); logged once
    attention = plan_attention(model, t.attn_implementation, cfg.data.packing, device=info.device,
                               compute_dtype=autocast, announce=info.is_main)
    flops = flops_per_token(model, cfg.data.max_tokens)
    if not on_meta:
        model.to(info.device)
    apply_activation_checkpointing(model, t)
    wrapped = strategy.wrap(model)
    if on_meta and from_shards:
        materialize_with_buffers(wrapped, resume.state["buffers"], info.device)  # weights: the checkpointer
    elif on_meta:
        materialize_from_rank0(wrapped, full, info)
    return BuiltModel(wrapped, attention, flops, autocast)


def speech_lm_for_run(cfg: TrainRunConfig, contract: UnitContract, *, resuming: bool,
                      verbose: bool = True) -> torch.nn.Module:
    """The run's speech LM. On resume every weight comes from the checkpoint, so the text LM
    is not read (a cold build of the same architecture), but the provenance recorded in the
    model config, hence in the export, stays the run's own (warm or cold)."""
    from twist.lm import build_speech_lm
    from twist.lm.surgery import META_KEY

    if cfg.objective == "dpo":
        return dpo_policy(cfg, contract)
    init = "cold" if resuming else cfg.init.name
    model = build_speech_lm(cfg.model, init, contract, embed_init=cfg.init.embed_init, vocab=cfg.init.vocab,
                            seed=cfg.seed, verbose=verbose)
    if resuming and cfg.init.name != init:
        meta = dict(getattr(model.config, META_KEY))
        meta.update(init=cfg.init.name, embed_init=cfg.init.embed_init if cfg.init.name == "warm" else None)
        setattr(model.config, META_KEY, meta)
    return model


def dpo_policy(cfg: TrainRunConfig, contract: UnitContract) -> torch.nn.Module:
    """The DPO policy: the speech LM in ``dpo.policy`` (a resume then loads the checkpoint over
    it). Its config records the preference stage, so the export says how it was made."""
    from twist.lm import load_speech_lm
    from twist.lm.surgery import META_KEY

    model, _ = load_speech_lm(cfg.dpo.policy, expected=contract, expected_name=f"pair dataset {cfg.data.path}")
    meta = dict(getattr(model.config, META_KEY, None) or {})
    meta["dpo"] = {"policy": str(cfg.dpo.policy), "pairs": str(cfg.data.path), "beta": cfg.dpo.beta,
                   "loss": cfg.dpo.loss}
    setattr(model.config, META_KEY, meta)
    return model.train()


def model_label(cfg: TrainRunConfig) -> str:
    """How errors name the run's model: the model/ file, or the DPO policy dir."""
    return f"model {cfg.model.name}" if cfg.model is not None else f"policy {cfg.dpo.policy}"


def meta_skeleton(cfg: TrainRunConfig, contract: UnitContract) -> torch.nn.Module:
    """The run's architecture on the meta device: no memory, no text LM read; provenance kept."""
    with torch.device("meta"):
        return speech_lm_for_run(cfg, contract, resuming=True, verbose=False)


def _full_weights_on_rank0(cfg: TrainRunConfig, contract: UnitContract,
                           checkpoint: dict[str, Any] | None) -> Weights:
    """What rank 0 broadcasts at an FSDP2 start: the checkpoint's weights when resuming, else
    those of the freshly warm- or cold-started model; with every buffer."""
    if checkpoint is not None and "buffers" in checkpoint:
        return checkpoint["model"], checkpoint["buffers"]
    real = speech_lm_for_run(cfg, contract, resuming=checkpoint is not None)
    weights = checkpoint["model"] if checkpoint is not None else real.state_dict()
    return weights, dict(real.named_buffers())


def check_model_fits(model: torch.nn.Module, contract: UnitContract, cfg: TrainRunConfig) -> None:
    """The model's unit contract (when it carries one) and vocabulary must fit the run's (the
    data's units in the model's layout: init.vocab, or the DPO policy's)."""
    from twist.lm import contract_of

    try:
        mine = contract_of(model)
    except (ValueError, AttributeError, KeyError):  # a plain HF model without twist metadata
        mine = None
    if mine is not None:
        mine.check_compatible(contract, mine=model_label(cfg), theirs=f"dataset {cfg.data.path}")
    vocab = model.get_input_embeddings().weight.shape[0]
    need = contract.layout.n_real
    if vocab < need:
        raise ContractMismatch(f"{model_label(cfg)}: vocabulary ({vocab}) is smaller than the unit layout "
                               f"of dataset {cfg.data.path} needs ({need})")


def apply_activation_checkpointing(model: torch.nn.Module, t: TrainLoopConfig) -> None:
    """Recompute each block's activations in backward: less memory, about 1/3 more compute."""
    if not t.activation_checkpointing:
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"train.activation_checkpointing: {type(model).__name__} does not support it")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def precision_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """``train.precision`` -> the autocast dtype (``None``: fp32, no autocast)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if name == "bf16" else None


def fsdp_param_dtype(name: str, autocast: torch.dtype | None) -> torch.dtype | None:
    """``train.fsdp_param_dtype``: ``auto`` follows the autocast dtype (bf16 on GPU), ``fp32``
    keeps full-precision all-gathers, ``bf16`` forces them."""
    if name == "auto":
        return autocast
    return torch.bfloat16 if name == "bf16" else None


@torch.no_grad()
def materialize_from_rank0(model: torch.nn.Module, full: Weights | None, info: DistInfo) -> None:
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
