"""The documents a training epoch is made of: a unit dataset's utterances, or a mixture of text,
interleaved and speech documents for a text+units LM (``data.interleave``; docs/interleave.md).

A *document source* tells the training stream (twist.train.data.TrainStream) two things, both
pure functions of the run's seed and the epoch, so a resumed run and every rank rebuild exactly
the same epoch:

* ``lengths(epoch)``: each document's length in tokens, framing included, from which the stream
  plans its packed windows (twist.lm.packing.plan_windows); computed without reading units (the
  manifest's unit counts, the alignments' unit spans, the text's ids);
* ``document(index, epoch)``: the document's token ids.

``loss_units``: only unit targets (and an eos after a unit) count in the loss
(:func:`unit_targets`).

:class:`UnitDocuments` is TWIST's stream: each utterance as the layout frames it, every epoch.
:class:`MixedDocuments` is the interleaving recipe (SIMS, Maimon et al. 2025). Each epoch holds
every train utterance once, as an interleaved sequence (twist.interleave) or as speech only, drawn
in the ratio ``interleaved : speech``, plus ``text : (interleaved + speech)`` text documents per
utterance, taken in a seeded order from the text corpus (one document per non-empty line) and
continued across epochs. The ratios count documents, not tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.contract import VocabLayout
from twist.errors import ConfigError, InputError, MissingInputError
from twist.lm.packing import IGNORE_INDEX, Batch
from twist.train.loggers import progress_items
from twist.units import UnitDataset

log = logging.getLogger("twist.train")

TEXT, INTERLEAVED, SPEECH = 0, 1, 2
KINDS = ("text", "interleaved", "speech")


class UnitDocuments:
    """Each utterance of a unit dataset as ``layout`` frames it: ``<bos> [<speech>] units <eos>``."""

    loss_units = False

    def __init__(self, dataset: UnitDataset, layout: VocabLayout) -> None:
        self.ds, self.layout = dataset, layout
        self._lengths = np.asarray([r["n_units"] for r in dataset.rows], dtype=np.int64) + layout.framing_tokens

    def lengths(self, epoch: int) -> np.ndarray:
        return self._lengths

    def document(self, index: int, epoch: int) -> np.ndarray:
        return self.layout.encode(np.asarray(self.ds[index], dtype=np.int64))


def read_text_documents(paths: Sequence[str | Path]) -> list[tuple[str, str]]:
    """``(where, line)`` for each non-empty line of the text files (dirs: their ``*.txt``, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.txt"))
            if not found:
                raise InputError(f"data.interleave.text: {p} holds no *.txt file")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise MissingInputError(f"data.interleave.text: {p} does not exist")
    docs = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"data.interleave.text: {f} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        lines = [(f"{f}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            log.warning("data.interleave.text: %s holds no text; skipped", f)
        docs += lines
    if not docs:
        raise InputError(f"data.interleave.text: {', '.join(map(str, paths))} hold no text (one document per line)")
    return docs


class MixedDocuments:
    """Text, interleaved and speech documents in the ratios of ``data.interleave`` (module doc).

    Args:
        dataset: the training view; it must carry word alignments when ``ratios.interleaved > 0``.
        layout: the model's text+units layout.
        settings: ``data.interleave`` (twist.train.config.InterleaveConfig).
        tokenizer: the model's tokenizer (the text LM's, extended).
        seed: the run's seed.
    """

    def __init__(self, dataset: UnitDataset, layout: VocabLayout, settings: Any, tokenizer: Any, *, seed: int,
                 progress: bool = False) -> None:
        from twist.interleave import aligned_words
        from twist.lm.text_units import text_span_ids

        r = settings.ratios
        if not layout.has_text:
            what = ("ratios.text / ratios.interleaved: text and interleaved documents" if r.text or r.interleaved
                    else "loss=units: telling units from text")
            raise ConfigError(f"data.interleave.{what} need a text+units LM (+init=warm_interleaved or "
                              "init.vocab=text+units); this model's ids are all units")
        self.ds, self.layout, self.settings, self.seed = dataset, layout, settings, seed
        self.loss_units = settings.loss == "units"
        total = r.interleaved + r.speech
        self.p_interleaved = r.interleaved / total
        self.units = UnitDocuments(dataset, layout)
        self.words: list[Any] = []
        if r.interleaved > 0:
            if not dataset.has_alignments:
                raise InputError(f"data.interleave.ratios.interleaved: unit dataset {dataset.root} has no word "
                                 "alignments; run twist-tokenize on its audio with align set to tts or whisper "
                                 "(docs/tokenize.md#word-alignments)")
            c = dataset.contract
            for i in progress_items(range(len(dataset)), progress, desc="aligned words", unit="utt",
                                    leave=False):
                self.words.append(aligned_words(
                    dataset.alignment(i), durations=dataset.durations(i) if dataset.has_durations else None,
                    n_units=int(dataset.rows[i]["n_units"]), frame_rate=c.frame_rate, tokenizer=tokenizer, layout=layout,
                    where=f"unit dataset {dataset.root}: utterance {dataset.rows[i]['id']!r}"))
            empty = sum(len(w) == 0 for w in self.words)
            if empty:
                log.warning("%d of %d utterances have no aligned words: they are always speech-only", empty,
                            len(self.words))
        self.text: list[np.ndarray] = []
        self.n_text = 0
        if r.text > 0:
            lines = read_text_documents(settings.text)
            for where, line in progress_items(lines, progress, desc="text documents", unit="line",
                                              leave=False):
                ids = text_span_ids(tokenizer, line, layout, where=where)
                self.text.append(np.asarray([layout.bos_id, layout.text_id, *ids, layout.eos_id], dtype=np.int64))
            self.n_text = int(round(len(dataset) * r.text / total))
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # -- one epoch --------------------------------------------------------------------------
    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The epoch's documents, ``(kinds, indices, lengths)``, from the lengths the manifest and the
        alignments give (no unit is read); the last two epochs are kept, as a step may span both."""
        if epoch in self._epochs:
            return self._epochs[epoch]
        from twist.interleave import sequence_length

        n = len(self.ds)
        draw = np.random.default_rng([self.seed, epoch, 1]).random(n)
        kinds = np.where(draw < self.p_interleaved, INTERLEAVED, SPEECH)
        if self.words:
            kinds[[i for i, w in enumerate(self.words) if len(w) == 0]] = SPEECH
        index = np.arange(n)
        if self.n_text:
            # the text corpus in seeded passes, continued across epochs
            start, m, t = epoch * self.n_text, self.n_text, len(self.text)
            passes: dict[int, np.ndarray] = {}
            taken = []
            for j in range(start, start + m):
                p, k = divmod(j, t)
                if p not in passes:
                    passes[p] = np.random.default_rng([self.seed, p, 2]).permutation(t)
                taken.append(passes[p][k])
            kinds = np.concatenate([kinds, np.full(m, TEXT)])
            index = np.concatenate([index, np.asarray(taken, dtype=np.int64)])
        unit_lengths = self.units.lengths(epoch)
        lengths = np.empty(len(kinds), dtype=np.int64)
        for j, (kind, i) in enumerate(zip(kinds.tolist(), index.tolist())):
            if kind == TEXT:
                lengths[j] = len(self.text[i])
            elif kind == SPEECH:
                lengths[j] = unit_lengths[i]
            else:
                lengths[j] = sequence_length(self.words[i], self._spoken(i, epoch))
        self._epochs = {e: v for e, v in self._epochs.items() if e == epoch - 1}
        self._epochs[epoch] = (kinds, index, lengths)
        return self._epochs[epoch]

    def _spoken(self, i: int, epoch: int) -> np.ndarray:
        from twist.interleave import spoken_words

        s = self.settings
        rng = np.random.default_rng([self.seed, epoch, 3, i])
        return spoken_words(len(self.words[i]), s.mode, span=s.span, fraction=s.fraction, rng=rng)

    def _build(self, j: int, epoch: int) -> np.ndarray:
        from twist.interleave import sequence

        kinds, index, _ = self._plan(epoch)
        kind, i = int(kinds[j]), int(index[j])
        if kind == TEXT:
            return self.text[i]
        if kind == SPEECH:
            return self.units.document(i, epoch)
        return sequence(self.words[i], np.asarray(self.ds[i], dtype=np.int64), self._spoken(i, epoch), self.layout)

    def lengths(self, epoch: int) -> np.ndarray:
        return self._plan(epoch)[2]

    def document(self, index: int, epoch: int) -> np.ndarray:
        return self._build(index, epoch)

    def kinds(self, epoch: int) -> np.ndarray:
        """Each document's kind (``TEXT``, ``INTERLEAVED``, ``SPEECH``) in the epoch."""
        return self._plan(epoch)[0]

    def indices(self, epoch: int) -> np.ndarray:
        """Each document's utterance (or text line) index in the epoch."""
        return self._plan(epoch)[1]

    def kinds_of(self, epoch: int) -> dict[str, int]:
        """How many documents of each kind the epoch holds."""
        kinds = self.kinds(epoch)
        return {k: int((kinds == n).sum()) for n, k in enumerate(KINDS)}


def unit_targets(batch: Batch, layout: VocabLayout) -> Batch:
    """``batch`` with only unit targets kept, and an eos target right after a unit: what
    ``data.interleave.loss=units`` trains on (text ids and markers are context only)."""
    t, x = batch.targets, batch.input_ids
    lo, hi = layout.unit_offset, layout.unit_offset + layout.n_units
    is_unit = (t >= lo) & (t < hi)
    eos_after_unit = (t == layout.eos_id) & (x >= lo) & (x < hi)
    batch.targets = torch.where(is_unit | eos_after_unit, t, torch.full_like(t, IGNORE_INDEX))
    return batch
