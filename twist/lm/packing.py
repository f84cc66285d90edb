"""Utterances -> model batches: packed windows with document masks, or padded rows.

TWIST (Hassid et al. 2023, §3.2 and appendix A.1) trains on unit sequences of up to 25 s
(704 tokens at 25 Hz after dedup plus bos/eos). Each utterance becomes one *document*::

    <bos> u_1 ... u_n <eos>          (ids from twist.contract.VocabLayout)

(``<bos> <speech> u_1 ... u_n <eos>``, units at their offset, in the text+units layout.)

A document longer than ``max_tokens`` is cut into ``max_tokens`` pieces, like the paper's
25 s chunks; each piece is its own document.

Packing: documents are laid greedily, in the order given, into windows of ``max_tokens``;
a document that does not fit in what is left of a window starts the next one, and the
rest of the window is padding. Nothing may attend across a document boundary, so a packed
batch carries

* ``position_ids`` that restart at 0 for every document, and
* its ``segments`` (document number per token, 0 = padding), from which the attention plan builds
  the mask in the form its attention kernel takes (twist.lm.attention): a flex-attention
  ``BlockMask`` on GPU, or the dense block-diagonal causal ``[B, 1, T, T]`` mask of
  :func:`document_mask` (True = may attend), the reference.

Targets are next-token ids inside the same document; the last token of a document, and
padding, predict nothing. With these three pieces a packed batch computes exactly what the
same utterances would compute one per row (tested: packed == padded within 1e-5).

Training and scoring (twist.eval.likelihood) both build their batches here. Which families
pack is the family table's ``packable`` column (twist.lm.families): BLOOM packs through a
document-aware ALiBi (twist.lm.attention.install_document_alibi); ImageGPT cannot take a 4D
mask (it reshapes the mask to 2D) and uses the padded path: one document per row, right
padding, 2D mask. It is slower (padding) but equally exact; see docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twist.contract import VocabLayout
from twist.errors import ConfigError
from twist.lm.families import family, packable_types

IGNORE_INDEX = -100

@dataclass(frozen=True)
class SettingNames:
    """The config keys a refusal names: training's (the default) or evaluation's."""

    attention: str = "train.attn_implementation"
    packed: str = "data.packing=packed"  # how a request for packed rows is spelled


EVAL_SETTINGS = SettingNames("attn_implementation", "pack_tokens")


def packing_mode(model_type: str, requested: str = "auto", attn_implementation: str | None = None,
                 names: SettingNames = SettingNames()) -> str:
    """Resolve ``data.packing`` (``auto|packed|padded``) for a model family and attention kernel.

    A family packs when its row in the family table (twist.lm.families) says so. HF's
    flash-attention paths take no 4D document mask, so packing under them would let tokens
    attend across utterances: ``auto`` uses padded rows there and ``packed`` is refused.
    """
    if requested not in ("auto", "packed", "padded"):
        raise ConfigError(f"data.packing must be one of auto, packed, padded; got {requested!r}")
    flash = str(attn_implementation or "").startswith("flash_attention")
    packable = family(model_type).packable
    if requested == "auto":
        return "packed" if packable and not flash else "padded"
    if requested == "packed" and flash:
        raise ConfigError(
            f"{names.packed} cannot be used with {names.attention}={attn_implementation}: it takes "
            f"no 4D document mask, so tokens would attend across utterances. Use {names.attention}=sdpa "
            f"(flash kernels on GPU) or padded rows"
        )
    if requested == "packed" and not packable:
        raise ConfigError(
            f"{names.packed} is not supported for model type {model_type!r} (its decoder cannot take a "
            f"4D document mask; twist.lm.families); use padded rows. Packable types: {packable_types()}"
        )
    return requested


# ---------------------------------------------------------------------------------------
# documents
# ---------------------------------------------------------------------------------------
def document_lengths(n_units: int, max_tokens: int, framing: int = 2) -> list[int]:
    """Token lengths of the documents one utterance of ``n_units`` units becomes.

    ``framing``: the tokens the layout adds around the units (``VocabLayout.framing_tokens``:
    bos + eos, and ``<speech>`` in the text+units layout).
    """
    total = n_units + framing
    return [min(max_tokens, total - s) for s in range(0, total, max_tokens)]


def utterance_documents(units: np.ndarray, layout: VocabLayout, max_tokens: int) -> list[np.ndarray]:
    """``<bos> units <eos>`` (as ``layout`` encodes them) cut into pieces of at most ``max_tokens`` ids."""
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
    ids = layout.encode(np.asarray(units, dtype=np.int64))
    return [ids[s : s + max_tokens] for s in range(0, ids.size, max_tokens)]


@dataclass(frozen=True)
class Piece:
    """One document inside a window: utterance ``index``, token slice ``[start, stop)``."""

    index: int
    start: int
    stop: int


def plan_windows(lengths: Iterable[tuple[int, int]], max_tokens: int, framing: int = 2) -> Iterator[list[Piece]]:
    """Greedy packing plan from ``(utterance index, n_units)`` pairs, without reading units.

    The plan depends only on the lengths and their order, so a resumed run rebuilds the
    same windows from the manifest and skips to where it stopped. ``framing``: as for
    :func:`document_lengths` (the layout's ``framing_tokens``).
    """
    window: list[Piece] = []
    used = 0
    for index, n_units in lengths:
        start = 0
        for n in document_lengths(int(n_units), max_tokens, framing):
            if used + n > max_tokens:
                yield window
                window, used = [], 0
            window.append(Piece(int(index), start, start + n))
            used += n
            start += n
    if window:
        yield window


# ---------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Model inputs plus next-token targets (``IGNORE_INDEX`` where nothing is predicted).

    A packed batch carries ``segments`` (document number per token, 0 = padding) and builds
    its 4D mask on the device it is on, so only ``[B, T]`` tensors travel to the GPU. A
    padded batch carries a 2D ``attention_mask``. ``single_documents``: every row of a
    packed batch is one whole document with no padding (plain causal attention suffices);
    known on the host, so choosing a kernel from it needs no device read.
    """

    input_ids: torch.Tensor
    targets: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    segments: torch.Tensor | None = None
    n_tokens: int = 0  # non-padding input tokens (what tokens/s counts)
    single_documents: bool = False
    branches: torch.Tensor | None = None  # with segments: 0 = a document's shared prefix, b > 0 = its branch b

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.input_ids), move(self.targets), move(self.position_ids), move(self.attention_mask),
                     move(self.segments), self.n_tokens, self.single_documents, move(self.branches))

    def model_inputs(self, *, mask_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask``, ``position_ids`` for the model's forward.

        ``mask_dtype``: for attention implementations that *add* a 4D mask to the scores
        (``eager``), the document mask as an additive float mask in that dtype; a bool mask
        would be added as 0/1 there and leak attention across documents. SDPA takes the bool
        mask as it is (``None``, the default).
        """
        if self.segments is not None:
            mask = document_mask(self.segments, dtype=mask_dtype, branches=self.branches)
        else:
            mask = self.attention_mask
        return {"input_ids": self.input_ids, "attention_mask": mask, "position_ids": self.position_ids}


def pack_sequences(
    windows: Sequence[Sequence[np.ndarray]], layout: VocabLayout, max_tokens: int = 704
) -> Batch:
    """Build a packed batch: one row per window, each window a list of documents.

    Args:
        windows: for each row, its documents (token-id arrays, already with bos/eos; see
            :func:`utterance_documents`); their lengths must sum to at most ``max_tokens``.
        layout: the token-id layout (pad id).
        max_tokens: the row length.
    """
    b = len(windows)
    ids = np.full((b, max_tokens), layout.pad_id, dtype=np.int64)
    tgt = np.full((b, max_tokens), IGNORE_INDEX, dtype=np.int64)
    pos = np.zeros((b, max_tokens), dtype=np.int64)
    seg = np.zeros((b, max_tokens), dtype=np.int64)  # 0 = padding, 1.. = document number
    n_tok = 0
    single = True
    for r, docs in enumerate(windows):
        at = 0
        for d, doc in enumerate(docs, 1):
            n = len(doc)
            if at + n > max_tokens:
                raise ValueError(f"window {r} holds {at + n} tokens, more than max_tokens={max_tokens}")
            ids[r, at : at + n] = doc
            tgt[r, at : at + n - 1] = doc[1:]
            pos[r, at : at + n] = np.arange(n)
            seg[r, at : at + n] = d
            at += n
        n_tok += at
        pos[r, at:] = np.arange(max_tokens - at)
        single = single and len(docs) == 1 and at == max_tokens
    return Batch(
        torch.from_numpy(ids), torch.from_numpy(tgt), torch.from_numpy(pos), segments=torch.from_numpy(seg), n_tokens=n_tok,
        single_documents=single and b > 0,
    )


def document_mask(segments: torch.Tensor, dtype: torch.dtype | None = None, *,
                  branches: torch.Tensor | None = None) -> torch.Tensor:
    """Block-diagonal causal mask ``[B, 1, T, T]`` (bool, True = may attend).

    Padding (segment 0) forms one block of its own, so no row is fully masked: SDPA would
    return NaN for such a row, and a NaN value vector poisons real tokens even at weight 0.

    ``branches`` (``[B, T]``) makes each document a tree: its branch-0 tokens are a prefix
    every branch sees, and a token of branch ``b > 0`` sees the prefix and earlier tokens of
    branch ``b`` only. A preference pair laid out as prompt, chosen, rejected in one row is
    scored this way, the prompt computed once for both continuations.

    With ``dtype`` the mask is additive instead: 0 where attention is allowed, the dtype's
    minimum elsewhere (what eager attention implementations add to the scores).
    """
    t = segments.shape[1]
    same = segments[:, :, None] == segments[:, None, :]
    if branches is not None:
        same = same & ((branches[:, None, :] == 0) | (branches[:, :, None] == branches[:, None, :]))
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    mask = (same & causal)[:, None, :, :]
    if dtype is None:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def pad_documents(docs: Sequence[np.ndarray], layout: VocabLayout, length: int | None = None) -> Batch:
    """The unpacked path: one document per row, right padding, 2D mask, positions from 0."""
    length = length or max(len(d) for d in docs)
    b = len(docs)
    ids = np.full((b, length), layout.pad_id, dtype=np.int64)
    tgt = np.full((b, length), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((b, length), dtype=np.int64)
    for r, doc in enumerate(docs):
        n = len(doc)
        ids[r, :n] = doc
        tgt[r, : n - 1] = doc[1:]
        mask[r, :n] = 1
    pos = np.broadcast_to(np.arange(length), (b, length)).copy()
    return Batch(
        torch.from_numpy(ids), torch.from_numpy(tgt), torch.from_numpy(pos), attention_mask=torch.from_numpy(mask),
        n_tokens=int(mask.sum()),
    )


def token_loss_sum(logits: torch.Tensor, targets: torch.Tensor, layout: VocabLayout) -> torch.Tensor:
    """Summed next-token cross-entropy over targets, in fp32, with padding-vocab rows masked.

    ``logits[b, t]`` predicts ``targets[b, t]``. Alignment-padding rows of the vocabulary
    never receive probability mass: they are the last columns, so they are sliced off rather
    than set to ``-inf`` (the same softmax, without a masked copy of the logits).
    """
    if logits.shape[-1] != layout.vocab_size:
        raise ValueError(f"logits have {logits.shape[-1]} columns, the layout for K={layout.n_units} has {layout.vocab_size}")
    logits = logits[..., : layout.n_real].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
