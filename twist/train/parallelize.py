"""Build the speech LM for a run and lay it out for its strategy (one process, DDP or FSDP2).

The trainer asks for one thing, :func:`build_model`, and gets the model ready to train: built
from the ``model/`` and ``init/`` configs (warm or cold start, twist.lm), moved to its device,
with activation checkpointing and ``torch.compile`` applied when asked, and wrapped for
data-parallel training. The strategies (torchtitan keeps the same split in its per-model
``parallelize.py``):

* ``none``: one process, the model as it is;
* ``ddp``: DistributedDataParallel, for models that fit on one device (TWIST-125M to 1.3B);
* ``fsdp``: FSDP2 (``fully_shard``) per transformer block, then the root, for models that do
  not fit (the LLaMA-7B recipe). Only rank 0 reads full weights (the text LM, or a full
  checkpoint); every rank lays the model out on the meta device and receives its shards by
  broadcast, so a node holds one full host copy, not one per GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from twist.contract import UnitContract, VocabLayout
from twist.dist import DistInfo
from twist.errors import ConfigError, ContractMismatch
from twist.train.attention import AttentionPlan, plan_attention
from twist.train.config import TrainLoopConfig, TrainRunConfig
from twist.train.loggers import flops_per_token

log = logging.getLogger("twist.train")

Weights = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]  # (state dict, every buffer)


@dataclass
class BuiltModel:
    """The model ready to train, and what the trainer needs to know about it."""

    model: torch.nn.Module
    """Wrapped for the strategy (DDP module, FSDP2-sharded module, or the model itself)."""
    weights_loaded: bool
    """FSDP2 started from rank 0's full checkpoint: the weights are in already (only the optimiser is left)."""
    attention: AttentionPlan
    """The attention kernel, the packing (data.packing resolved for this family) and the mask form."""
    flops_per_token: float
    autocast_dtype: torch.dtype | None


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    """``train.strategy`` for this run: ``auto`` is ``ddp`` under several processes, ``none`` alone."""
    if strategy not in ("auto", "none", "ddp", "fsdp"):
        raise ConfigError(f"train.strategy must be auto, none, ddp or fsdp; got {strategy!r}")
    if strategy == "auto":
        return "ddp" if info.enabled else "none"
    if strategy in ("ddp", "fsdp") and not info.enabled:
        return "none"
    return strategy


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return model.module if hasattr(model, "module") and not hasattr(model, "config") else model


def build_model(
    cfg: TrainRunConfig,
    contract: UnitContract,
    info: DistInfo,
    strategy: str,
    *,
    resuming: bool = False,
    checkpoint: dict[str, Any] | None = None,
    sharded_checkpoint: bool = False,
    model: torch.nn.Module | None = None,
) -> BuiltModel:
    """Build (or take) the speech LM and lay it out for ``strategy``.

    Args:
        cfg: the run's config.
        contract: the training data's unit contract (the model must match it).
        info: this process's rank, world size and device.
        strategy: ``none``, ``ddp`` or ``fsdp`` (resolved).
        resuming: the run continues from a checkpoint.
        checkpoint: that checkpoint's contents: on every rank, except at an FSDP2 start from a
            full-format checkpoint, where only rank 0 reads it (``None`` elsewhere).
        sharded_checkpoint: the checkpoint's weights are in per-rank shards (every rank reads its own).
        model: an already built speech LM to use instead of building one (tests, benchmarks).
    """
    t = cfg.train
    sharded_init = strategy == "fsdp" and model is None
    full: Weights | None = None
    if sharded_init:
        if info.is_main and not sharded_checkpoint:
            full = _full_weights_on_rank0(cfg, contract, checkpoint)
        model = meta_skeleton(cfg, contract)
    elif model is None:
        model = speech_lm_for_run(cfg, contract, resuming=resuming)
    check_model_fits(model, contract, cfg)
    autocast = precision_dtype(t.precision, info.device)
    # attention kernel, packing and mask form (twist.train.attention); logged once
    attention = plan_attention(model, t.attn_implementation, cfg.data.packing, device=info.device,
                               compute_dtype=autocast, announce=info.is_main)
    flops = flops_per_token(model, cfg.data.max_tokens)
    if not sharded_init:
        model.to(info.device)
    apply_activation_checkpointing(model, t)
    if t.compile and strategy == "fsdp":
        model.compile()  # FSDP2: in place, per module; elsewhere forward + loss compile as one (twist.train.step)
    wrapped = wrap_model(model, strategy, info, fsdp_param_dtype=fsdp_param_dtype(t.fsdp_param_dtype, autocast))
    if sharded_init and sharded_checkpoint:
        materialize_with_buffers(wrapped, checkpoint["buffers"], info.device)  # weights: the checkpointer
    elif sharded_init:
        materialize_from_rank0(wrapped, full, info)
    return BuiltModel(wrapped, sharded_init and resuming and not sharded_checkpoint, attention, flops, autocast)


def speech_lm_for_run(cfg: TrainRunConfig, contract: UnitContract, *, resuming: bool,
                      verbose: bool = True) -> torch.nn.Module:
    """The run's speech LM. On resume every weight comes from the checkpoint, so the text LM
    is not read (a cold build of the same architecture), but the provenance recorded in the
    model config, hence in the export, stays the run's own (warm or cold)."""
    from twist.lm import build_speech_lm
    from twist.lm.surgery import META_KEY

    init = "cold" if resuming else cfg.init.name
    model = build_speech_lm(cfg.model, init, contract, embed_init=cfg.init.embed_init, seed=cfg.seed,
                            verbose=verbose)
    if resuming and cfg.init.name != init:
        meta = dict(getattr(model.config, META_KEY))
        meta.update(init=cfg.init.name, embed_init=cfg.init.embed_init if cfg.init.name == "warm" else None)
        setattr(model.config, META_KEY, meta)
    return model


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
    """The model's unit contract (when it carries one) and vocabulary must fit the data's."""
    from twist.lm import contract_of

    try:
        mine = contract_of(model)
    except (ValueError, AttributeError, KeyError):  # a plain HF model without twist metadata
        mine = None
    if mine is not None:
        mine.check_compatible(contract, mine=f"model {cfg.model.name}", theirs=f"dataset {cfg.data.path}")
    vocab = model.get_input_embeddings().weight.shape[0]
    need = VocabLayout(contract.n_units).n_real
    if vocab < need:
        raise ContractMismatch(f"model {cfg.model.name}: vocabulary ({vocab}) is smaller than the unit layout "
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


def unsharded_copy(cfg: TrainRunConfig, contract: UnitContract, checkpoint: dict[str, Any],
                   shards: Path | None) -> torch.nn.Module:
    """A host copy of the model holding a checkpoint's weights, without random-initialising a
    full model first: laid out on the meta device and given the checkpoint's tensors (the
    export of an FSDP2 run). Checkpoints from before buffers were saved are built on the host."""
    from twist.lm.surgery import set_module_tensor
    from twist.train.checkpointer import load_sharded_model_alone

    model = meta_skeleton(cfg, contract)
    if shards is not None:
        materialize_with_buffers(model, checkpoint["buffers"], torch.device("cpu"))
        load_sharded_model_alone(model, shards)
        return model
    model.load_state_dict(checkpoint["model"], assign=True)
    for name, b in checkpoint.get("buffers", {}).items():
        set_module_tensor(model, name, b, buffer=True)
    model.tie_weights()
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = speech_lm_for_run(cfg, contract, resuming=True, verbose=False)
        model.load_state_dict(checkpoint["model"])
    return model
