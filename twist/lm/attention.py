"""Attention for packed batches: document masks without a dense ``[B, 1, T, T]`` tensor.

A packed window holds several documents (twist.lm.packing); a token may attend only to
earlier tokens of its own document. This module decides, once per run, how a model sees
that rule, and builds the per-batch mask in the chosen form:

* **flex** (``twist_flex``): a :class:`torch.nn.attention.flex_attention.BlockMask` built
  from the batch's segment ids, run by ``flex_attention`` (Dong et al. 2024, "Flex
  Attention: A Programming Model for Generating Optimized Attention Kernels"). The block
  mask lists, per 128 x 128 tile, whether the tile is empty (skipped), full (no mask
  evaluated) or partial (the element rule is evaluated), so the work grows with the sum of
  squared document lengths rather than with ``T**2``, and no ``T x T`` tensor exists.
  A micro-batch whose rows are each one whole document and no padding gets a plain causal
  marker instead, which runs SDPA with ``is_causal=True`` (flash kernels on GPU).
* **sdpa**: the dense boolean mask (twist.lm.packing.document_mask), the reference.
* **eager**: the same mask, additive (0 / dtype minimum), for kernels that add it to scores.

``twist_flex`` is a small function registered with transformers' ``AttentionInterface``, so
any family whose attention layers dispatch through that registry can use it. It is used in
place of transformers' own ``flex_attention`` entry because (1) that entry compiles the
flex kernel on every device, which on CPU costs tens of seconds per shape and still has no
backward; (2) it recompiles when a module switches between train and eval; (3) it does not
fall back to SDPA for the plain-causal case. On CUDA both end in the same Triton kernel.

What a family allows is its row in the family table (twist.lm.families). BLOOM
(``own_attention="alibi"``) computes attention inside its own module (ALiBi added to the
scores, then the mask), not through the registry, so it cannot use flex without patching
transformers. It packs with the dense additive mask instead: the model's public
``build_alibi_tensor`` hook is given a document-aware version that restarts the ALiBi key
positions at each document (:func:`install_document_alibi`). ImageGPT (``packable=False``)
flattens any mask it is given to 2D, so it cannot take a document mask and runs on padded rows.

Choice (``train.attn_implementation``, and eval's ``attn_implementation``): ``auto`` picks
flex on CUDA for the families whose row says ``flex_tested`` (the equivalence tests cover
them) when their attention dropout is 0, eager for ALiBi families, and SDPA otherwise. On CPU
it picks SDPA: PyTorch (2.11 to 2.13) has no flex-attention backward on CPU, so flex cannot
train there (it can score, forward only, when asked for). The choice and its reason are
logged once.
"""

from __future__ import annotations

import logging
import math
import types
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from twist.errors import ConfigError
from twist.lm.families import ATTN_IMPLEMENTATIONS, Family, family
from twist.lm.packing import Batch, SettingNames, packing_mode

log = logging.getLogger("twist.lm")

FLEX = "twist_flex"  # the name registered with transformers' AttentionInterface
BLOCK_SIZE = 128  # flex-attention tile (its default sparse block size)


# ---------------------------------------------------------------------------------------
# block masks
# ---------------------------------------------------------------------------------------
def _causal(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    return q >= kv


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, nq, nk]`` bool tiles -> per query tile: how many kv tiles, and which (first)."""
    as_int = blocks.to(torch.int32)
    return as_int.sum(-1, dtype=torch.int32)[:, None], torch.argsort(
        as_int, dim=-1, descending=True, stable=True
    ).to(torch.int32)[:, None]


def _block_mask(partial: torch.Tensor, full: torch.Tensor, block_size: int, mask_mod: Any, length: int) -> Any:
    """A ``BlockMask`` from ``[B, nq, nk]`` partial and full tile maps.

    The backward pass also needs the maps by key tile; ``from_kv_blocks`` would rebuild them
    from the ordered lists with ``vmap`` (most of the host time of a mask). They are the
    transposed tile maps, so they are ordered here directly (tested equal)."""
    from torch.nn.attention.flex_attention import BlockMask

    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    bm = BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size, mask_mod=mask_mod,
                                  seq_lengths=(length, length), compute_q_blocks=False)
    bm.q_num_blocks, bm.q_indices = _ordered(partial.transpose(-2, -1))
    bm.full_q_num_blocks, bm.full_q_indices = _ordered(full.transpose(-2, -1))
    return bm


def document_block_mask(segments: torch.Tensor, block_size: int = BLOCK_SIZE, *,
                        branches: torch.Tensor | None = None) -> Any:
    """The document mask of a packed batch as a flex-attention ``BlockMask``.

    Token ``q`` may attend token ``k`` when both carry the same segment id and ``k <= q``.
    Padding (segment 0) attends only to earlier padding, exactly like
    :func:`twist.lm.packing.document_mask`, so no row is empty.

    Tiles are classified from per-tile minimum and maximum segment ids, with no ``T x T``
    tensor and no host synchronisation. This is exact because a packed row's ids do not
    decrease (documents 1, 2, ... then padding): every id between a tile's minimum and
    maximum occurs in the tile.

    Args:
        segments: ``[B, T]`` integer segment ids (twist.lm.packing.Batch.segments), on the
            device the attention runs on.
        block_size: tile size.
        branches: ``[B, T]`` branch ids (twist.lm.packing.document_mask): a document's branch-0
            prefix is seen by every branch, a branch ``b > 0`` token sees only its own branch
            besides; tiles where branches meet are left to the element rule.
    """
    b, t = segments.shape
    nb = -(-t // block_size)
    pad = nb * block_size - t
    # ids past the row end: never equal to a real id or to padding
    seg = torch.nn.functional.pad(segments, (0, pad), value=-1) if pad else segments
    # padding is the last "document" of a row: map it (and the tail) above every real id
    mono = torch.where(seg <= 0, torch.iinfo(seg.dtype).max, seg).view(b, nb, block_size)
    lo, hi = mono.amin(-1), mono.amax(-1)
    q_lo, q_hi, k_lo, k_hi = lo[:, :, None], hi[:, :, None], lo[:, None, :], hi[:, None, :]
    tile = torch.arange(nb, device=segments.device)
    below = tile[None, :] <= tile[:, None]  # kv tile not after the query tile
    touching = (q_lo <= k_hi) & (k_lo <= q_hi) & below
    full = (q_lo == q_hi) & (k_lo == k_hi) & (q_lo == k_lo) & (tile[None, :] < tile[:, None])
    if pad:  # a tile that runs past the row end is never full: the element rule must run
        full[:, -1, :] = False
        full[:, :, -1] = False
    if branches is not None:
        full = torch.zeros_like(full)  # a tile can span two branches: let the element rule decide
    partial = touching & ~full

    def same_document(bi: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return (seg[bi, q] == seg[bi, kv]) & (q >= kv)

    if branches is None:
        return _block_mask(partial, full, block_size, same_document, t)
    br = torch.nn.functional.pad(branches, (0, pad), value=0) if pad else branches

    def same_branch(bi: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return same_document(bi, h, q, kv) & ((br[bi, kv] == 0) | (br[bi, kv] == br[bi, q]))

    return _block_mask(partial, full, block_size, same_branch, t)


_causal_cache: dict[tuple[int, int, str, int], Any] = {}


def causal_block_mask(batch: int, length: int, device: torch.device | str, block_size: int = BLOCK_SIZE) -> Any:
    """A plain causal ``BlockMask`` (cached per shape). ``twist_flex`` recognises it and runs
    SDPA with ``is_causal=True`` instead: flash kernels, no mask at all."""
    key = (batch, length, str(device), block_size)
    if key not in _causal_cache:
        nb = -(-length // block_size)
        tile = torch.arange(nb, device=device)
        before = (tile[None, :] < tile[:, None]).expand(batch, nb, nb)
        full = before.clone()
        if length % block_size:  # a tile that runs past the row end is never full
            full[:, -1, :] = False
            full[:, :, -1] = False
        partial = ((tile[None, :] == tile[:, None]) | before) & ~full
        _causal_cache[key] = _block_mask(partial, full, block_size, _causal, length)
    return _causal_cache[key]


# ---------------------------------------------------------------------------------------
# the registered attention function
# ---------------------------------------------------------------------------------------
_compiled_flex: Any = None


def _flex_kernel(device: torch.device) -> Any:
    """``flex_attention`` compiled once per process on GPU (a fused Triton kernel); plain
    inside an already-compiled region (the outer compile fuses it); eager on CPU, where only
    the forward exists."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling() or device.type == "cpu":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def flex_document_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention with a document ``BlockMask`` (the ``twist_flex`` implementation).

    Follows transformers' attention-function contract: ``query`` ``[B, H, T, D]``, ``key`` and
    ``value`` ``[B, H_kv, T, D]``; returns ``([B, T, H, D], None)``. A plain causal block mask
    (:func:`causal_block_mask`), a dense mask or no mask go to transformers' SDPA function,
    so the model also works for padded batches and generation under this implementation.
    """
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not isinstance(attention_mask, BlockMask) or attention_mask.mask_mod is _causal:
        mask = None if isinstance(attention_mask, BlockMask) else attention_mask
        return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling,
                                      softcap=softcap, **kwargs)
    if dropout and module.training:
        raise ConfigError("twist_flex attention has no attention dropout; set the model's attention dropout to 0 "
                          "or use train.attn_implementation=sdpa")
    score_mod = None
    if softcap is not None:
        def score_mod(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q: torch.Tensor,
                      kv: torch.Tensor) -> torch.Tensor:
            return softcap * torch.tanh(score / softcap)

    if query.device.type == "cpu" and torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
        raise ConfigError(f"flex attention cannot train on CPU (torch {torch.__version__} has no CPU backward for "
                          "it); use train.attn_implementation=auto or sdpa")
    kernel = _flex_kernel(query.device)
    args = {"score_mod": score_mod, "block_mask": attention_mask, "scale": scaling,
            "enable_gqa": query.shape[1] != key.shape[1]}
    if torch.compiler.is_compiling() or query.device.type != "cpu":
        out = kernel(query, key, value, **args)
    else:
        with warnings.catch_warnings():
            # on CPU the unfused kernel is deliberate (a compiled CPU kernel takes tens of seconds to build)
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            out = kernel(query, key, value, **args)
    return out.transpose(1, 2).contiguous(), None


def register_flex() -> None:
    """Register ``twist_flex`` with transformers (idempotent). Its mask function for 2D
    padding masks is SDPA's, so padded batches work under it too."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(FLEX, flex_document_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(FLEX, sdpa_mask)


# ---------------------------------------------------------------------------------------
# BLOOM: ALiBi positions that restart at every document
# ---------------------------------------------------------------------------------------
def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al. 2022, "Train Short, Test Long", §3): a geometric
    sequence ``2**(-8 i / n)`` for the largest power of two ``n <= num_heads``, and for the
    remaining heads every other slope of the sequence for ``2 n``."""
    n = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(n) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, n + 1, dtype=torch.int32))
    if n != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * n) - 3))), dtype=torch.float32)
        rest = min(n, num_heads - n)
        odd = torch.arange(1, 1 + 2 * rest, 2, dtype=torch.int32)
        slopes = torch.cat([slopes, torch.pow(extra_base, odd)])
    return slopes


def document_alibi(attention_mask: torch.Tensor, num_heads: int, dtype: torch.dtype) -> torch.Tensor:
    """ALiBi biases ``[B * heads, 1, T]`` for a 4D document mask (bool, or additive with 0 =
    allowed). A key's position is its index inside its document: row ``k`` of a
    block-diagonal causal mask allows keys ``start..k``, so the count of allowed keys in row
    ``k``, minus one, is that index. With one document per row this equals BLOOM's own
    biases from a 2D mask (tested)."""
    allowed = attention_mask[:, 0] if attention_mask.dtype == torch.bool else attention_mask[:, 0] == 0
    pos = allowed.sum(-1, dtype=torch.float32) - 1  # [B, T]
    slopes = alibi_slopes(num_heads).to(attention_mask.device)
    b, t = pos.shape
    return (slopes[None, :, None] * pos[:, None, :]).reshape(b * num_heads, 1, t).to(dtype)


def install_document_alibi(model: torch.nn.Module) -> None:
    """Give a BLOOM model's public ``build_alibi_tensor`` hook document-aware positions for
    4D masks; 2D masks keep transformers' own computation."""
    base = getattr(model, "transformer", model)
    if getattr(base, "_twist_document_alibi", False):
        return
    original = base.build_alibi_tensor

    def build_alibi_tensor(self: torch.nn.Module, attention_mask: torch.Tensor, num_heads: int,
                           dtype: torch.dtype) -> torch.Tensor:
        if attention_mask.dim() == 4:
            return document_alibi(attention_mask, num_heads, dtype)
        return original(attention_mask, num_heads, dtype)

    base.build_alibi_tensor = types.MethodType(build_alibi_tensor, base)
    base._twist_document_alibi = True


# ---------------------------------------------------------------------------------------
# the plan: which implementation, which batches, which mask form
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionPlan:
    """How a run's model attends: implementation, packing, and the mask form per batch.

    ``mask``: ``block`` (flex BlockMask), ``bool`` (dense, SDPA), ``additive`` (dense, added
    to scores) or ``none`` (padded batches carry their own 2D mask).
    """

    implementation: str
    packing: str
    mask: str
    mask_dtype: torch.dtype | None
    reason: str

    def batch_kind(self, batch: Batch) -> str:
        """``causal`` for a batch of whole single documents (flex or SDPA: no document mask
        needed), ``document`` for other packed batches, ``padded`` for padded ones. Decided
        from host-side data only."""
        if batch.segments is None:
            return "padded"
        if self.mask in ("block", "bool") and batch.single_documents:
            return "causal"
        return "document"

    def model_inputs(self, batch: Batch) -> dict[str, Any]:
        """``input_ids``, ``attention_mask``, ``position_ids`` for the model's forward."""
        if batch.segments is None:
            return batch.model_inputs()
        if self.mask == "block":
            b, t = batch.segments.shape
            mask = (causal_block_mask(b, t, batch.segments.device) if batch.single_documents
                    else document_block_mask(batch.segments, branches=batch.branches))
        elif self.mask == "bool" and batch.single_documents:
            mask = None  # full rows of one document: the model's own causal mask, SDPA's causal kernel
        else:
            return batch.model_inputs(mask_dtype=self.mask_dtype)  # None unless the mask is additive
        return {"input_ids": batch.input_ids, "attention_mask": mask, "position_ids": batch.position_ids}


def _attention_dropout(config: Any) -> float:
    for name in ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob"):
        v = getattr(config, name, None)
        if isinstance(v, (int, float)):
            return float(v)
    return 0.0


def _set(model: torch.nn.Module, name: str) -> bool:
    if not hasattr(model, "set_attn_implementation"):
        return False
    if family(getattr(model.config, "model_type", None)).own_attention:
        return getattr(model.config, "_attn_implementation", None) == name
    try:
        model.set_attn_implementation(name)
    except (ValueError, ImportError):
        return False
    return getattr(model.config, "_attn_implementation", None) == name


def _choose_implementation(requested: str, row: Family, device: torch.device, dropout: float,
                           training: bool, key: str) -> tuple[str, str]:
    """The attention implementation for ``requested`` and why; refuses an impossible ``flex``."""
    if requested == "flex":
        why_not = None
        if not row.packable or row.own_attention:
            why_not = f"model type {row.model_type!r} does not dispatch attention through transformers' AttentionInterface"
        elif device.type == "cpu" and training:
            why_not = f"torch {torch.__version__} has no flex-attention backward on CPU"
        elif dropout > 0 and training:
            why_not = f"the model's attention dropout is {dropout} (flex attention has none)"
        if why_not:
            raise ConfigError(f"{key}=flex cannot be used: {why_not}; use auto or sdpa")
        return "flex", "requested"
    if requested != "auto":
        return requested, "requested"
    if row.own_attention == "alibi":
        return "eager", f"{row.model_type} adds ALiBi inside its own attention: dense additive document mask"
    if device.type != "cuda" and training:
        return "sdpa", f"on {device.type}: torch {torch.__version__} has no flex-attention backward there; dense document mask"
    if device.type != "cuda":
        return "sdpa", f"on {device.type}: flex attention runs uncompiled there (slow); dense document mask"
    if not row.flex_tested:
        return "sdpa", f"flex is not covered by tests for model type {row.model_type!r}"
    if dropout > 0 and training:
        return "sdpa", f"attention dropout {dropout} (flex attention has none)"
    return "flex", "CUDA: block-sparse document masks"


def _apply_implementation(model: torch.nn.Module, choice: str, reason: str, key: str) -> tuple[str, str]:
    """Set ``choice`` on ``model``; families with one built-in kernel keep it (the reason says so)."""
    if choice == "flex":
        register_flex()
        if not _set(model, FLEX):
            raise ConfigError(f"{key}=flex: {type(model).__name__} refused the twist_flex attention implementation")
        return FLEX, reason
    if _set(model, choice):
        return choice, reason
    # families with a single built-in kernel (BLOOM, ImageGPT) keep it
    implementation = str(getattr(model.config, "_attn_implementation", None) or "eager")
    return implementation, reason + f"; {type(model).__name__} keeps its {implementation} attention"


def plan_attention(
    model: torch.nn.Module,
    requested: str = "auto",
    packing: str = "auto",
    *,
    device: torch.device,
    compute_dtype: torch.dtype | None = None,
    announce: bool = True,
    training: bool = True,
    names: SettingNames = SettingNames(),
) -> AttentionPlan:
    """Choose and apply the attention implementation and the packing mode for ``model``.

    Sets the model's attention implementation (and, for a family whose row says
    ``own_attention="alibi"``, the document ALiBi hook) and returns the plan batches' masks
    are built with. Training (``train.attn_implementation``, ``data.packing``) and scoring
    (eval's ``attn_implementation``, ``pack_tokens``) both call it. Logs the choice once.

    Args:
        model: a transformers causal LM (not yet wrapped for DDP/FSDP).
        requested: ``auto | flex | sdpa | eager | flash_attention_2`` (``flex_attention`` is
            read as ``flex``).
        packing: ``auto | packed | padded``.
        device: where the model runs.
        compute_dtype: the dtype scores are computed in (the autocast dtype; ``None``: the
            weights' dtype). Additive masks are built in it.
        announce: log the choice (rank 0).
        training: ``False`` for forward-only use (scoring): flex is then allowed on CPU, and
            attention dropout (inactive in eval mode) does not rule flex out.
        names: the config keys refusals name (twist.lm.packing.EVAL_SETTINGS for eval).
    """
    requested = {"flex_attention": "flex", FLEX: "flex"}.get(str(requested), str(requested))
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"{names.attention} must be one of {', '.join(ATTN_IMPLEMENTATIONS)}; got {requested!r}")
    config = getattr(model, "config", None)
    row = family(getattr(config, "model_type", None))
    choice, reason = _choose_implementation(requested, row, device, _attention_dropout(config), training,
                                            names.attention)
    packing_mode(row.model_type, packing, choice, names)  # refuse what is asked for before the model changes
    if config is None:  # not a transformers model (test stand-ins): it takes what it is given
        implementation = choice
    else:
        implementation, reason = _apply_implementation(model, choice, reason, names.attention)

    mode = packing_mode(row.model_type, packing, implementation, names)
    if implementation == FLEX:
        mask = "block"
    elif implementation == "sdpa":
        mask = "bool"
    else:
        mask = "additive"
    if mode == "padded":
        mask = "none"
    if mode == "packed" and row.own_attention == "alibi":
        install_document_alibi(model)
    if mask == "additive" and compute_dtype is None:
        compute_dtype = next(model.parameters()).dtype
    plan = AttentionPlan(implementation, mode, mask, compute_dtype if mask == "additive" else None, reason)
    if announce:
        log.info("attention: %s, %s batches (%s mask) for model type %s: %s", implementation, mode,
                 {"block": "flex block", "bool": "dense bool", "additive": "dense additive", "none": "2D padding"}[mask],
                 row.model_type or "?", reason)
    return plan
