"""Sequence log-likelihoods under a speech LM: batched, length-sorted, masked.

Every zero-shot benchmark in the TWIST paper (Hassid et al., 2023, §3.3) reduces to the
log-probability a speech LM assigns to a unit sequence. This module computes it, per
sequence, two ways:

* ``sum``: the total log-probability of the sequence, the convention of the paper and of
  the ZeroSpeech 2021 baseline (Nguyen et al., 2020);
* ``mean``: the same divided by the number of scored tokens, SlamKit's convention, which
  does not favour shorter sequences.

A sequence is laid out as the model's unit contract says (:class:`twist.contract.VocabLayout`):
``<bos> u1 .. un <eos>``. Every token after ``<bos>`` is a target; ``<eos>`` can be left out
of the score (``score_eos=False``). Logits of the alignment-padding rows of the vocabulary
are set to ``-inf`` before the softmax, so they never take probability mass, exactly as in
training.

A model whose contract is in the text+units layout (speech-text interleaving) is scored on
speech alone, as Slam (Maimon et al. 2025) scores its interleaved models: a sequence is
``<bos> <speech> u1 .. un <eos>`` (the marker opens it, and is context, not a target), and the
softmax runs over the units and ``<eos>`` only (``VocabLayout.speech_support``): the text
logits are masked, and a unit's log-probability is renormalised over what speech can continue
with. The support does not change with ``score_eos``, as for a unit-only model. Nothing is
set: the layout comes from the contract.

Cross-modal StoryCloze (twist.eval.cross_modal) scores an ending given a context in the other
modality: :meth:`LikelihoodScorer.score_token_ids` takes, per sequence, the position its score
starts from (the tokens before it are context), and the support the softmax runs over:
``speech`` (the units and eos, as above) or ``text`` (the text ids, eos among them;
:meth:`twist.contract.VocabLayout.text_support`).

Sequences are sorted by length before batching (little padding) and right-padded; with a
causal model and explicit ``position_ids`` a real token never sees a pad, so a sequence's
score does not depend on the batch it lands in (up to float rounding; tests pin this to
1e-4 between batch sizes 1 and 32). Log-softmax runs in float32 whatever the model dtype.

Batches are built by the same code as training's (twist.lm.packing: ``pad_documents``, or
``pack_sequences`` with ``pack_tokens``), and the attention kernel is chosen by the same plan
(twist.lm.attention.plan_attention, setting ``attn_implementation``, default ``auto``). With
``pack_tokens`` the sorted sequences are packed into rows of that many tokens (the longest
left with the shortest that still fit), each row carrying a document mask in the form the
chosen kernel takes (a flex ``BlockMask`` under ``twist_flex``, the dense mask otherwise), so
short items (sWUGGY words, sBLIMP sentences) fill the device without padding. Packed scores
equal one-at-a-time scores within float rounding (tested). Scores stay on the device until
the end: no host wait per batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from twist.contract import UnitContract, VocabLayout, check_unit_range
from twist.errors import ConfigError, InputError
from twist.lm.attention import AttentionPlan, plan_attention
from twist.lm.packing import EVAL_SETTINGS, IGNORE_INDEX, Batch, pack_sequences, pad_documents

SCORE_KINDS = ("sum", "mean")
SUPPORTS = ("speech", "text")


@dataclass
class Scores:
    """Per-sequence scores, in the order the sequences were given."""

    sum: np.ndarray  # float64, total log-prob of the scored tokens
    mean: np.ndarray  # float64, sum / n_tokens
    n_tokens: np.ndarray  # int64, scored tokens (units, plus eos when scored)
    n_truncated: int = 0
    seconds: float = 0.0

    def pick(self, kind: str) -> np.ndarray:
        """The scores that decide a pair: ``"sum"`` or ``"mean"``."""
        if kind not in SCORE_KINDS:
            raise ConfigError(f"decide_by must be one of {SCORE_KINDS}, got {kind!r}")
        return self.sum if kind == "sum" else self.mean


def _model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_max_positions(model: torch.nn.Module) -> int | None:
    """The longest sequence the model's position scheme accepts, if the config says."""
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
    return int(n) if n else None


class LikelihoodScorer:
    """Score unit sequences with a causal speech LM.

    Args:
        model: an HF causal LM (or any module whose ``forward(input_ids=, attention_mask=,
            position_ids=)`` returns an object with ``.logits`` or a tuple whose first item
            is the logits), already on its device and in its dtype.
        contract: the model's unit contract; fixes bos/eos/pad ids and the valid vocabulary
            (text+units: the text logits are masked, module doc).
        batch_size: sequences per forward pass.
        max_batch_tokens: optional cap on ``batch * padded length`` per pass.
        score_eos: include ``log p(<eos> | ...)`` in each score.
        max_length: longest token sequence (bos + units + eos) to feed; ``None`` means the
            model's ``max_position_embeddings`` when its config has one.
        too_long: ``"error"`` (default) or ``"truncate"`` (keep the first ``max_length``
            tokens; the count is reported in :attr:`Scores.n_truncated`).
        progress: show a tqdm bar.
        pack_tokens: pack sequences into rows of this many tokens (``None``: padded buckets).
            Needs a family that takes 4D document masks (the family table's ``packable``,
            twist.lm.families) and an attention kernel that does (not ``flash_attention_2``).
        attn_implementation: ``auto | flex | sdpa | eager | flash_attention_2``, chosen as for
            training (twist.lm.attention.plan_attention); the model is switched to it.
        announce: log the attention choice.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        contract: UnitContract,
        *,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        score_eos: bool = True,
        max_length: int | None = None,
        too_long: str = "error",
        progress: bool = False,
        pack_tokens: int | None = None,
        attn_implementation: str = "auto",
        announce: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if too_long not in ("error", "truncate"):
            raise ConfigError(f"too_long must be 'error' or 'truncate', got {too_long!r}")
        self.model = model
        self.contract = contract
        self.layout: VocabLayout = contract.layout
        self._allowed_on: dict[tuple[int, str, str], torch.Tensor] = {}
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens) if max_batch_tokens else None
        self.score_eos = bool(score_eos)
        self.max_length = int(max_length) if max_length else model_max_positions(model)
        self.too_long = too_long
        self.progress = progress
        self.pack_tokens = int(pack_tokens) if pack_tokens else None
        if self.pack_tokens is not None and (self.max_length is None or self.max_length > self.pack_tokens):
            self.max_length = self.pack_tokens  # a sequence must fit in one row
        self.attention: AttentionPlan = plan_attention(
            model, attn_implementation, "packed" if self.pack_tokens else "padded", device=_model_device(model),
            announce=announce, training=False, names=EVAL_SETTINGS)

    # ---- inputs ----------------------------------------------------------------------------
    def token_ids(self, units: np.ndarray) -> np.ndarray:
        """Final-form units -> ``<bos> units <eos>`` token ids (``<bos> <speech> units <eos>``
        in the text+units layout)."""
        return self.layout.encode(np.asarray(units, dtype=np.int64), bos=True, eos=True)

    def score_units(self, units: Sequence[np.ndarray], names: Sequence[str] | None = None,
                    desc: str = "scoring") -> Scores:
        """Score unit sequences (already deduplicated when the contract says so)."""
        seqs = []
        for i, u in enumerate(units):
            check_unit_range(u, self.layout.n_units, where=names[i] if names is not None else f"sequence {i}")
            seqs.append(self.token_ids(u))
        return self.score_token_ids(seqs, names=names, desc=desc)

    # ---- scoring ---------------------------------------------------------------------------
    def _batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        # Longest first: a too-large batch fails at once, not after an hour; the sort is
        # stable so the batching is a pure function of the lengths.
        order = np.argsort(-lengths, kind="stable")
        batches: list[np.ndarray] = []
        cur: list[int] = []
        cur_max = 0
        for i in order:
            n = int(lengths[i])
            new_max = max(cur_max, n)
            too_many = len(cur) >= self.batch_size
            too_big = self.max_batch_tokens is not None and cur and new_max * (len(cur) + 1) > self.max_batch_tokens
            if cur and (too_many or too_big):
                batches.append(np.asarray(cur))
                cur, new_max = [], n
            cur.append(int(i))
            cur_max = new_max
        if cur:
            batches.append(np.asarray(cur))
        return batches

    def _packed_rows(self, lengths: np.ndarray) -> list[list[np.ndarray]]:
        """Rows of sequence indices, each summing to at most ``pack_tokens``; grouped into
        batches of rows (``batch_size`` rows, or ``max_batch_tokens // pack_tokens``)."""
        order = list(np.argsort(-lengths, kind="stable"))
        rows: list[np.ndarray] = []
        lo, hi = 0, len(order) - 1
        while lo <= hi:  # the longest left, then the shortest ones while they fit
            row, used = [order[lo]], int(lengths[order[lo]])
            lo += 1
            while lo <= hi and used + int(lengths[order[hi]]) <= self.pack_tokens:
                row.append(order[hi])
                used += int(lengths[order[hi]])
                hi -= 1
            rows.append(np.asarray(row))
        per = self.batch_size
        if self.max_batch_tokens is not None:
            per = max(1, min(per, self.max_batch_tokens // self.pack_tokens))
        return [rows[i : i + per] for i in range(0, len(rows), per)]

    @torch.inference_mode()
    def score_token_ids(self, seqs: Sequence[np.ndarray], names: Sequence[str] | None = None,
                        desc: str = "scoring", *, score_from: Sequence[int] | None = None,
                        support: str = "speech") -> Scores:
        """Score token-id sequences, each starting with ``<bos>`` (modality markers are context,
        never scored).

        Args:
            score_from: per sequence, the index of its first scored token; the tokens before it
                are context (cross-modal StoryCloze scores an ending given its story). Default:
                every token after ``<bos>``.
            support: the ids the softmax runs over: ``speech`` (the units and eos of a text+units
                model; every real id of a units-first one) or ``text`` (the text ids, eos among
                them: :meth:`~twist.contract.VocabLayout.text_support`; text+units only).
        """
        if support not in SUPPORTS:
            raise ConfigError(f"support must be one of {SUPPORTS}, got {support!r}")
        if support == "text" and not self.layout.has_text:
            raise ConfigError(f"support=text: the model's {self.layout.name} layout has no text ids")
        n = len(seqs)
        out_sum = np.zeros(n, dtype=np.float64)
        out_n = np.zeros(n, dtype=np.int64)
        if n == 0:
            return Scores(out_sum, out_sum.copy(), out_n)
        seqs = [np.asarray(s, dtype=np.int64) for s in seqs]
        starts = None
        if score_from is not None:
            starts = np.asarray(score_from, dtype=np.int64).reshape(-1)
            if starts.size != n or (starts < 1).any():
                raise ValueError(f"score_from: one position >= 1 per sequence, got {starts.tolist()} for {n} sequences")
        n_truncated = 0
        for i, s in enumerate(seqs):
            if s.size < 2:
                name = names[i] if names is not None else f"sequence {i}"
                raise InputError(f"{name}: needs at least <bos> and one target token, got {s.size} token(s)")
            if self.max_length is not None and s.size > self.max_length:
                if self.too_long == "error":
                    name = names[i] if names is not None else f"sequence {i}"
                    raise InputError(
                        f"{name}: {s.size} tokens is longer than max_length={self.max_length} "
                        "(set too_long=truncate to score its first max_length tokens)"
                    )
                seqs[i] = s[: self.max_length]
                n_truncated += 1
        lengths = np.asarray([s.size for s in seqs])
        device = _model_device(self.model)
        layout = self.layout
        # scored tokens per sequence, known on the host: every target, less the modality markers
        # (text+units), less eos when not scored
        for i, s in enumerate(seqs):
            scored = ~np.isin(s[1:], layout.marker_ids)
            if not self.score_eos:
                scored &= s[1:] != layout.eos_id
            if starts is not None:
                scored[: starts[i] - 1] = False  # target t is token t + 1
            out_n[i] = int(scored.sum())
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=n, desc=desc, unit="seq", leave=False)
        t0 = time.perf_counter()
        done: list[tuple[np.ndarray, torch.Tensor]] = []  # (sequence indices, their sums on the device)
        if self.pack_tokens is not None:
            batches = [[row.tolist() for row in rows] for rows in self._packed_rows(lengths)]
        else:
            batches = [[[int(j)] for j in idx] for idx in self._batches(lengths)]
        for rows in batches:
            idx = np.asarray([j for row in rows for j in row])
            done.append((idx, self._forward(rows, seqs, device, starts, support)))
            if bar is not None:
                bar.update(len(idx))
        if done:  # one device-to-host copy for the whole run
            sums = torch.cat([s for _, s in done]).double().cpu().numpy()
            out_sum[np.concatenate([i for i, _ in done])] = sums
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        if (out_n == 0).any():
            i = int(np.flatnonzero(out_n == 0)[0])
            name = names[i] if names is not None else f"sequence {i}"
            raise InputError(f"{name}: no token left to score (empty unit sequence with score_eos=false)")
        return Scores(out_sum, out_sum / out_n, out_n, n_truncated=n_truncated, seconds=seconds)

    def _check_vocab(self, v: int) -> None:
        if v < self.layout.n_real:
            lay = self.layout
            what = (f"V_text={lay.text_vocab} text ids + K={lay.n_units} units + <speech>/<text>" if lay.has_text
                    else f"K={lay.n_units} units + bos/eos/pad")
            raise InputError(f"model has {v} output rows but its contract needs {lay.n_real} ({what})")

    def _allowed(self, width: int, device: torch.device, support: str = "speech") -> torch.Tensor:
        """The support as a mask over ``width`` logit columns, made once per device (a copy to the
        device per batch could wait on it)."""
        key = (width, str(device), support)
        if key not in self._allowed_on:
            ids = self.layout.text_support() if support == "text" else self.layout.speech_support()
            allowed = torch.zeros(width, dtype=torch.bool)
            n = min(width, ids.shape[0])
            allowed[:n] = ids[:n]
            self._allowed_on[key] = allowed.to(device)
        return self._allowed_on[key]

    def _token_logprobs(self, logits: torch.Tensor, targets: torch.Tensor, support: str = "speech") -> torch.Tensor:
        """``log p(target)`` per position, fp32, over the support (the other rows masked)."""
        logits = logits.float()
        V = logits.shape[-1]
        self._check_vocab(V)
        # Alignment-padding rows (and any extra rows an HF model carries) never hold mass; in
        # the text+units layout neither do the text ids and markers (speech) or the units and
        # markers (text).
        logits = logits.masked_fill(~self._allowed(V, logits.device, support), float("-inf"))
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    def _batch(self, rows: list[list[int]], seqs: list[np.ndarray]) -> Batch:
        """Rows of sequences as training builds them: packed windows, or one sequence per
        padded row (twist.lm.packing)."""
        if self.pack_tokens is not None:
            return pack_sequences([[seqs[j] for j in row] for row in rows], self.layout, max_tokens=self.pack_tokens)
        return pad_documents([seqs[row[0]] for row in rows], self.layout)

    def _forward(self, rows: list[list[int]], seqs: list[np.ndarray], device: torch.device,
                 starts: np.ndarray | None = None, support: str = "speech") -> torch.Tensor:
        """Sums for the sequences of ``rows``, in row order (a row: one padded sequence, or a
        packed window of several); ``starts``: each sequence's first scored token."""
        batch = self._batch(rows, seqs)
        owner = None
        from_token = None  # per token: the position its sequence is scored from
        if batch.segments is not None:
            # which sequence of this batch each target belongs to (k: none): the row's document
            # d (1, 2, ...; 0 = padding) is the row's d-th sequence
            first = np.cumsum([0] + [len(row) for row in rows[:-1]])
            k = int(first[-1]) + len(rows[-1])
            seg = batch.segments.numpy()
            local = np.where(seg > 0, first[:, None] + seg - 1, k)
            owner = torch.from_numpy(local).to(device)
            if starts is not None:
                from_token = torch.from_numpy(np.append(starts[[j for row in rows for j in row]], 0)[local])
        elif starts is not None:
            from_token = torch.from_numpy(starts[[row[0] for row in rows]])[:, None]
        batch = batch.to(device)
        out = self.model(**self.attention.model_inputs(batch), use_cache=False)
        logits = out.logits if hasattr(out, "logits") else out[0]
        targets = batch.targets
        keep = targets != IGNORE_INDEX  # a target inside its own sequence
        for marker in self.layout.marker_ids:  # text+units: <speech> opens a sequence; context, not a target
            keep &= targets != marker
        if not self.score_eos:
            keep &= targets != self.layout.eos_id
        if from_token is not None:  # the context before a sequence's start is not scored
            keep &= batch.position_ids + 1 >= from_token.to(device)
        lp = self._token_logprobs(logits, targets.masked_fill(~keep, 0), support).masked_fill(~keep, 0.0)
        if owner is None:
            return lp.sum(1)  # one sequence per row
        sums = torch.zeros(k + 1, dtype=torch.float32, device=device)
        sums.index_add_(0, owner.reshape(-1), lp.reshape(-1))
        return sums[:k]
