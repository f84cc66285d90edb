"""Preference pairs as model batches, and their completion log-probabilities.

A pair (prompt, chosen, rejected; unit ids from a pair dataset, twist.pairs) is laid out as
TRL lays a pair out: the prompt gets ``<bos>``, each continuation ends with ``<eos>``, and
a pair's score is the summed log-probability of a continuation's tokens given the prompt.
The ids are the policy's layout's (twist.contract.VocabLayout): in the text+units layout the
prompt opens ``<bos> <speech>`` and units sit at their offset.

Two layouts give the same numbers (tested):

* ``shared``: one row ``<bos> prompt | chosen <eos> | rejected <eos>`` under a tree mask
  (twist.lm.packing.document_mask with ``branches``): both continuations see the prompt,
  neither sees the other, and both continue the prompt's positions. The prompt is computed
  once for both, and chosen and rejected are scored in one forward. The first token of each
  continuation is predicted by the prompt's last position, read once for both;
* ``separate``: two rows, ``<bos> prompt chosen <eos>`` and ``<bos> prompt rejected <eos>``;
  what families that take no 4D mask (ImageGPT) or keep their own attention (BLOOM's ALiBi,
  which reads positions from the mask) use.

Sequences longer than ``max_tokens`` (prompt plus the longer continuation) keep the end of
the prompt (after ``<bos>``) and the start of the continuations, as TRL does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from twist.contract import VocabLayout
from twist.lm.packing import IGNORE_INDEX, Batch
from twist.train.dpo_loss import PairLogps


@dataclass
class PairRows:
    """One micro-batch of pairs as model inputs, and where each scored token's logits are.

    ``score_at[i]`` is the flat ``row * T + position`` whose logits predict token
    ``score_token[i]``; ``score_slot[i]`` is ``2 * pair + (0 chosen | 1 rejected)``.
    """

    batch: Batch
    score_at: torch.Tensor
    score_token: torch.Tensor
    score_slot: torch.Tensor
    n_pairs: int
    truncated: int = 0
    ids: tuple[str, ...] = ()

    @property
    def n_tokens(self) -> int:
        return self.batch.n_tokens

    def to(self, device: torch.device | str) -> PairRows:
        return PairRows(self.batch.to(device), self.score_at.to(device), self.score_token.to(device),
                        self.score_slot.to(device), self.n_pairs, self.truncated, self.ids)


def pair_sequences(prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, layout: VocabLayout,
                   max_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """``(<bos> prompt, chosen <eos>, rejected <eos>)`` cut to fit ``max_tokens``; and whether cut.

    ``<bos>`` is the layout's opening (``<bos> <speech>`` in the text+units layout), kept by a cut.
    """
    p = layout.encode(prompt, bos=True, eos=False)
    c = layout.encode(chosen, bos=False, eos=True)
    r = layout.encode(rejected, bos=False, eos=True)
    head = layout.framing_tokens - 1  # <bos> (and <speech>)
    cut = False
    room = max(1, max_tokens - head)  # at least the opening and one continuation token
    if len(c) > room or len(r) > room:
        c, r, cut = c[:room], r[:room], True
    keep = max_tokens - max(len(c), len(r))  # prompt tokens that fit, the opening included
    if len(p) > keep:
        p, cut = np.concatenate([p[:head], p[len(p) - keep + head:]]) if keep > head else p[:head], True
    return p, c, r, cut


def pair_rows(pairs: Sequence[Any], layout: VocabLayout, *, max_tokens: int, shared: bool,
              padded: bool = False) -> PairRows:
    """Lay out ``pairs`` (objects with ``prompt``, ``chosen``, ``rejected`` unit arrays).

    Args:
        shared: one row per pair under a tree mask; else two rows per pair.
        padded: two rows per pair with a 2D padding mask (families that take no 4D mask).
    """
    seqs = [pair_sequences(p.prompt, p.chosen, p.rejected, layout, max_tokens) for p in pairs]
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # ids, positions, branches
    at: list[int] = []
    token: list[int] = []
    slot: list[int] = []
    for i, (p, c, r, _) in enumerate(seqs):
        n = len(p)
        if shared:

            ids = np.concatenate([p, c, r])
            pos = np.concatenate([np.arange(n), n + np.arange(len(c)), n + np.arange(len(r))])
            br = np.concatenate([np.zeros(n, np.int64), np.ones(len(c), np.int64), np.full(len(r), 2, np.int64)])
            row = len(rows)
            rows.append((ids, pos, br))
            for side, (seq, start) in enumerate(((c, n), (r, n + len(c)))):
                # token j of a continuation is predicted at the position before it; the first,
                # by the prompt's last position, shared by both continuations
                before = [n - 1] + [start + j - 1 for j in range(1, len(seq))]
                at += [(row, b) for b in before]
                token += seq.tolist()
                slot += [2 * i + side] * len(seq)
        else:
            for side, seq in enumerate((c, r)):
                ids = np.concatenate([p, seq])
                row = len(rows)
                rows.append((ids, np.arange(len(ids)), np.zeros(len(ids), np.int64)))
                at += [(row, n - 1 + j) for j in range(len(seq))]
                token += seq.tolist()
                slot += [2 * i + side] * len(seq)
    width = max(len(r[0]) for r in rows)
    b = len(rows)
    ids = np.full((b, width), layout.pad_id, dtype=np.int64)
    pos = np.zeros((b, width), dtype=np.int64)
    seg = np.zeros((b, width), dtype=np.int64)
    br = np.zeros((b, width), dtype=np.int64)
    for k, (i_, p_, b_) in enumerate(rows):
        n = len(i_)
        ids[k, :n], pos[k, :n], seg[k, :n], br[k, :n] = i_, p_, 1, b_
        pos[k, n:] = np.arange(width - n)
    targets = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)  # unused: pairs are scored by index
    n_tok = int((seg > 0).sum())
    if padded:
        batch = Batch(torch.from_numpy(ids), targets, torch.from_numpy(pos),
                      attention_mask=torch.from_numpy((seg > 0).astype(np.int64)), n_tokens=n_tok)
    else:
        batch = Batch(torch.from_numpy(ids), targets, torch.from_numpy(pos), segments=torch.from_numpy(seg),
                      n_tokens=n_tok, branches=torch.from_numpy(br) if shared else None)
    flat = torch.tensor([r * width + t for r, t in at], dtype=torch.long)
    return PairRows(batch, flat, torch.tensor(token, dtype=torch.long), torch.tensor(slot, dtype=torch.long),
                    len(pairs), sum(s[3] for s in seqs), tuple(str(getattr(p, "id", i)) for i, p in enumerate(pairs)))


def pair_logps(model: torch.nn.Module, rows: PairRows, plan: Any, layout: VocabLayout, *,
               autocast: torch.dtype | None = None) -> PairLogps:
    """Summed log-probabilities of every pair's chosen and rejected continuation (fp32).

    The softmax runs over the ids that exist (units and specials), not the alignment
    padding of the embedding table: the distribution an exported model gives.
    """
    device = rows.batch.input_ids.device
    ctx = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with ctx:
        logits = model(**plan.model_inputs(rows.batch), use_cache=False).logits
    flat = logits.reshape(-1, logits.shape[-1])[rows.score_at, : layout.n_real].float()
    lp = flat.log_softmax(-1).gather(1, rows.score_token[:, None]).squeeze(1)
    n = 2 * rows.n_pairs
    sums = torch.zeros(n, dtype=lp.dtype, device=device).index_add(0, rows.score_slot, lp)
    counts = torch.bincount(rows.score_slot, minlength=n).to(lp.dtype)
    return PairLogps(sums[0::2], sums[1::2], counts[0::2], counts[1::2])
