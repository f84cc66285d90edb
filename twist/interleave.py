"""Speech-text interleaving: which words of an utterance are spoken, and the sequence they make.

SpiritLM and SIMS (Maimon et al. 2025, slp-rl/slamkit) train a text+units LM on sequences that
switch between text and speech at word boundaries. An utterance of a unit dataset with word
alignments (twist-tokenize ``align=``) becomes one such sequence:

1. **Words** (:func:`aligned_words`): each word of the alignment record gets its unit span,
   from its times through the cumulative durations of the deduplicated units
   (:func:`twist.alignment.word_unit_spans`), and its text ids: the word with the space before it
   (none before the utterance's first word), as the LM's own tokenizer encodes it.
2. **Spans** (:func:`speech_spans`): runs of consecutive words are chosen to be spoken. Run
   lengths are drawn from a Poisson distribution with mean ``span`` (at least one word) until
   ``fraction`` of the words are speech (the last run is cut to land on it); the runs are laid
   among the text words at random and never touch, so each one is a switch to speech and back.
   Slam's setting: ``span=10`` words, ``fraction=0.3``. ``mode``: ``poisson`` (these spans),
   ``speech`` (every word spoken) or ``text`` (none).
3. **Tokens** (:func:`sequence`): ``<bos>``, then the runs in order, a marker opening the first
   and every switch (``<speech>`` before units, ``<text>`` before text:
   :func:`twist.lm.text_units.interleave`), then ``<eos>``. A text run is its words' ids; a speech
   run is the units from its first word's first unit to its last word's end.

Every draw comes from a generator seeded by the caller (twist.train.mixture: the run's seed, the
epoch and the utterance), so a sequence is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twist.alignment import word_unit_spans
from twist.contract import VocabLayout
from twist.errors import InputError
from twist.lm.text_units import interleave, text_span_ids

MODES = ("poisson", "speech", "text")


def speech_spans(n_words: int, *, span: float, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A bool mask over ``n_words``: True for spoken words, in runs of Poisson(``span``) words.

    ``ceil(n_words * fraction)`` words are spoken, and the runs never touch, so each one is a
    switch to speech and back (when the text words are too few to keep the runs apart, the last
    two runs are merged until they are not).
    """
    mask = np.zeros(n_words, dtype=bool)
    lengths = span_lengths(n_words, span=span, fraction=fraction, rng=rng)
    if not lengths:
        return mask
    k, text = len(lengths), n_words - sum(lengths)
    free = text - (k - 1)  # text words left once every inner gap has its one
    cuts = np.sort(rng.integers(0, free + 1, size=k))
    gaps = np.diff(np.concatenate([[0], cuts, [free]]))
    gaps[1:-1] += 1
    at = 0
    for g, n in zip(gaps[:-1], lengths):
        at += int(g)
        mask[at : at + n] = True
        at += n
    return mask


def span_lengths(n_words: int, *, span: float, fraction: float, rng: np.random.Generator) -> list[int]:
    """The lengths of the spoken runs :func:`speech_spans` lays out, in order (its first draws):
    Poisson(``span``) words each, at least one, until ``ceil(n_words * fraction)`` words; the last
    run cut to land on it, and the last two merged while the text words are too few to keep every
    run apart."""
    target = int(np.ceil(n_words * fraction - 1e-9))
    if n_words == 0 or target == 0:
        return []
    lengths: list[int] = []
    while sum(lengths) < target:
        lengths.append(max(1, int(rng.poisson(span))))
    lengths[-1] -= sum(lengths) - target
    text = n_words - target
    while len(lengths) > 1 and text < len(lengths) - 1:
        lengths[-2] += lengths.pop()
    return lengths


def spoken_words(n_words: int, mode: str, *, span: float, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Which words are spoken under ``mode``: ``poisson`` (:func:`speech_spans`), ``speech`` (all)
    or ``text`` (none)."""
    if mode == "speech":
        return np.ones(n_words, dtype=bool)
    if mode == "text":
        return np.zeros(n_words, dtype=bool)
    return speech_spans(n_words, span=span, fraction=fraction, rng=rng)


@dataclass(frozen=True)
class AlignedWords:
    """An utterance's words: their text ids and ``[first unit, end unit)`` spans."""

    text_ids: tuple[tuple[int, ...], ...]
    spans: np.ndarray  # (n_words, 2) int64

    def __len__(self) -> int:
        return len(self.text_ids)


def aligned_words(record: Mapping[str, Any], *, durations: np.ndarray | None, n_units: int, frame_rate: float,
                  tokenizer: Any, layout: VocabLayout, where: str = "utterance") -> AlignedWords:
    """The words of one alignment record (twist.units ``UnitDataset.alignment``), ready to interleave.

    Args:
        durations: frames per unit (dedup on), or ``None`` when each unit is one frame.
        n_units: the utterance's unit count.
        frame_rate: the unit contract's frames per second before dedup.
        tokenizer: the text+units LM's tokenizer (its text ids are kept as they are).
    """
    words = record.get("words")
    if not isinstance(words, list):
        raise InputError(f"{where}: its alignment record has no word list")
    times = [(float(w["start"]), float(w["end"])) for w in words]
    spans = word_unit_spans(durations, frame_rate, times, n_units=n_units) if times else np.zeros((0, 2), np.int64)
    ids = tuple(tuple(text_span_ids(tokenizer, (" " if i else "") + str(w["word"]), layout, where=where))
                for i, w in enumerate(words))
    return AlignedWords(ids, np.asarray(spans, dtype=np.int64).reshape(-1, 2))


def runs(words: AlignedWords, units: np.ndarray, spoken: np.ndarray) -> list[tuple[str, Sequence[int]]]:
    """The utterance as ``("text", ids)`` / ``("speech", units)`` runs of like words, in order."""
    out: list[tuple[str, Sequence[int]]] = []
    i, n = 0, len(words)
    while i < n:
        j = i
        while j < n and spoken[j] == spoken[i]:
            j += 1
        if spoken[i]:
            lo, hi = int(words.spans[i, 0]), int(words.spans[j - 1, 1])
            out.append(("speech", np.asarray(units[lo : max(lo, hi)], dtype=np.int64)))
        else:
            out.append(("text", [t for w in words.text_ids[i:j] for t in w]))
        i = j
    return out


def sequence_length(words: AlignedWords, spoken: np.ndarray) -> int:
    """``len(sequence(words, units, spoken, layout))`` without reading the units: ``<bos>``,
    ``<eos>``, and per run its marker and its text ids or unit span."""
    n, i, total = len(words), 0, 2
    while i < n:
        j = i
        while j < n and spoken[j] == spoken[i]:
            j += 1
        if spoken[i]:
            total += 1 + max(0, int(words.spans[j - 1, 1]) - int(words.spans[i, 0]))
        else:
            total += 1 + sum(len(w) for w in words.text_ids[i:j])
        i = j
    return total


def sequence(words: AlignedWords, units: np.ndarray, spoken: np.ndarray, layout: VocabLayout) -> np.ndarray:
    """``<bos>`` the runs, each switch opened by its marker, ``<eos>``: one interleaved document."""
    return interleave(layout, runs(words, units, spoken), bos=True, eos=True)[0]


__all__ = ["MODES", "AlignedWords", "aligned_words", "runs", "sequence", "sequence_length", "span_lengths", "speech_spans",
           "spoken_words"]
