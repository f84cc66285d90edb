"""Spoken preference pairs for DPO: prompt, chosen and rejected continuations, spoken and tokenized.

Slam (Maimon et al. 2025, "Slamming: Training a Speech Language Model on One GPU in a Day")
aligns its speech LM with DPO on SpokenSwag, SWAG (Zellers et al. 2018) read aloud by several
TTS voices. This module builds such a set from text, as a pair dataset (:mod:`twist.pairs`):

* **inputs** (``prefs.format``):
  - ``pairs``: a CSV with ``prompt, chosen, rejected`` columns (and an optional ``id``);
  - ``swag``: SWAG's own ``train.csv``/``val.csv``, as Slam builds SpokenSwag: prompt =
    ``sent1``; chosen = ``sent2`` + the gold ending (``ending{label}``); rejected = ``sent2`` +
    one of the three wrong endings, drawn under the seed; only rows whose ``gold-source`` is
    ``gold`` (the machine-generated ``gen`` rows are skipped and counted);
  - ``storycloze``: the StoryCloze test CSV: prompt = the four sentences, chosen / rejected =
    the right / wrong ending.
  - none: a built-in set from the packaged fortunes-min sentences (:func:`builtin_pair_texts`).
* **bad rows** (a missing field, a label out of range, two endings with the same words, a
  repeated id) are logged to ``rejects.jsonl`` in one line naming the file and row, and
  skipped; ``strict=true`` stops at the first. A missing column stops the build before
  anything is written.
* **repetition filter** (optional, on by default, as Slam's ``auto_bleu2 < 0.3``): a pair whose
  prompt + chosen text has a bigram auto-BLEU (:func:`twist.eval.generation.auto_bleu`, order 2
  alone) of at least the threshold is dropped and logged with its score in
  ``prefs/filtered.jsonl``. twist reads words as its ASR metrics do (normalised, no
  punctuation) and counts only repeats that do not overlap (GSLM); Slam tokenizes with NLTK and
  counts overlapping ones too, so a borderline pair can fall on the other side.
* **audio**: one voice per pair, drawn under the seed from its id, speaks the prompt, the
  chosen and the rejected text, so the voice carries no cue. Each distinct (text, voice) is a
  segment, synthesised once into ``prefs/_segments/`` and encoded once, in batches, by the
  tokenizer (:class:`twist.eval.inputs.AudioUnits`, cached in ``prefs/_units/`` by the
  recording's content). A rerun reuses both.
* **units**: each segment in the contract's final form on its own (deduplicated when the
  contract says so), as :mod:`twist.pairs` documents.

Ids, voices, splits and the wrong endings are functions of the seed and the pair id, never of
the file's order or of which rows a ``limit`` keeps, so a build is deterministic under a seed.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twist.atomic import atomic_write_text
from twist.bench.config import PrefsBuild
from twist.bench.storycloze import normalize_text, read_storycloze_csv, segment_path
from twist.bench.tts import TTSBackend, synthesize_many
from twist.contract import sha256_file
from twist.errors import ConfigError, InputError, MissingInputError
from twist.pairs import PreferencePair, assign_pair_split, write_pair_dataset
from twist.rejects import RejectsLog

PAIRS_COLUMNS = ("prompt", "chosen", "rejected")
SWAG_COLUMNS = ("sent1", "sent2", "gold-source", "ending0", "ending1", "ending2", "ending3", "label")
SEGMENTS = "_segments"
UNITS_CACHE = "_units"
FILTERED = "filtered.jsonl"
BUILTIN_CSV = "prefs_pairs.csv"


@dataclass(frozen=True)
class PairText:
    """One pair as text, and where in the input it came from (``file:row (id)``)."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    where: str = ""


# ---------------------------------------------------------------------------------------
# reading the three input formats
# ---------------------------------------------------------------------------------------
def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def _open_csv(path: Path, columns: Sequence[str], what: str) -> tuple[Any, csv.DictReader]:
    """An open file and its DictReader, after checking the header has ``columns``."""
    if not path.is_file():
        raise MissingInputError(f"{what} CSV not found: {path}")
    f = open(path, newline="", encoding="utf-8-sig")
    reader = csv.DictReader(f)
    header = [(h or "").strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    for col in columns:
        if col not in header:
            f.close()
            raise InputError(f"{path}: missing column {col!r} in the {what} CSV header "
                             f"(expected {', '.join(columns)}; got {', '.join(h for h in header if h) or 'nothing'})")
    return f, reader


def read_pair_texts(path: str | Path, fmt: str, *, seed: int = 0, rejects: RejectsLog | None = None,
                    counts: dict[str, int] | None = None) -> list[PairText]:
    """The pairs of an input CSV in ``fmt`` (pairs | swag | storycloze); bad rows go to ``rejects``.

    Args:
        seed: draws SWAG's wrong ending.
        counts: filled with ``read`` (data rows), ``rejected`` and, for SWAG, ``not_gold``.

    Raises:
        MissingInputError: no such file.
        InputError: a required column is missing (the message names it).
    """
    path = Path(path)
    counts = counts if counts is not None else {}
    counts.update(read=0, rejected=0, not_gold=0)

    class _Counted:
        def add(self, item: Any, reason: str) -> None:
            counts["rejected"] += 1
            if rejects is not None:
                rejects.add(item, reason)

    log = _Counted()
    if fmt == "storycloze":
        held = RejectsLog(None, stage="bench")
        stories = read_storycloze_csv(path, held)
        for item, reason, _ in held.held:
            log.add(item, reason)
        counts["read"] = len(stories) + counts["rejected"]
        row_of = _storycloze_rows(path)
        return [PairText(s.id, " ".join(s.context), s.right, s.wrong, f"{path.name}:{row_of.get(s.id, '?')} ({s.id})")
                for s in stories]
    if fmt == "swag":
        return _read_swag(path, seed, log, counts)
    if fmt == "pairs":
        return _read_pairs(path, log, counts)
    raise ConfigError(f"prefs.format must be one of pairs, swag, storycloze; got {fmt!r}")


def _storycloze_rows(path: Path) -> dict[str, int]:
    """Story id -> its row number (the header is row 1), as the StoryCloze reader names rows."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        reader.fieldnames = [(h or "").strip() for h in (reader.fieldnames or [])]
        out: dict[str, int] = {}
        for n, row in enumerate(reader, 2):
            out.setdefault(_clean(row.get("InputStoryid")), n)
    return out


def _read_pairs(path: Path, log: Any, counts: dict[str, int]) -> list[PairText]:
    out: list[PairText] = []
    seen: set[str] = set()
    f, reader = _open_csv(path, PAIRS_COLUMNS, "preference pairs")
    with f:
        for n, row in enumerate(reader, 2):
            counts["read"] += 1
            pid = _clean(row.get("id")) or f"row-{n}"
            where = f"{path.name}:{n} ({pid})"
            texts = {k: _clean(row.get(k)) for k in PAIRS_COLUMNS}
            empty = [k for k in PAIRS_COLUMNS if not texts[k]]
            if empty:
                log.add(where, f"empty {empty[0]}")
            elif pid in seen:
                log.add(where, f"duplicate id {pid!r}")
            elif normalize_text(texts["chosen"]) == normalize_text(texts["rejected"]):
                log.add(where, "chosen and rejected are the same words")
            else:
                seen.add(pid)
                out.append(PairText(pid, texts["prompt"], texts["chosen"], texts["rejected"], where))
    return out


def _read_swag(path: Path, seed: int, log: Any, counts: dict[str, int]) -> list[PairText]:
    out: list[PairText] = []
    seen: set[str] = set()
    f, reader = _open_csv(path, SWAG_COLUMNS, "SWAG")
    with f:
        for n, row in enumerate(reader, 2):
            counts["read"] += 1
            # SWAG's first column is an unnamed row index: the pair's id
            pid = _clean(row.get("")) or f"row-{n}"
            where = f"{path.name}:{n} ({pid})"
            if _clean(row["gold-source"]) != "gold":
                counts["not_gold"] += 1  # Slam keeps the human-written (gold) rows only
                continue
            label = _clean(row["label"])
            sent1, sent2 = _clean(row["sent1"]), _clean(row["sent2"])
            endings = [_clean(row[f"ending{i}"]) for i in range(4)]
            reason = None
            if pid in seen:
                reason = f"duplicate index {pid!r}"
            elif label not in ("0", "1", "2", "3"):
                reason = f"label must be 0, 1, 2 or 3, got {label!r}"
            elif not sent1:
                reason = "empty sent1"
            elif not endings[int(label)]:
                reason = f"empty gold ending ending{label}"
            if reason is not None:
                log.add(where, reason)
                continue
            gold = endings[int(label)]
            wrong = sorted({e for e in endings if e and normalize_text(e) != normalize_text(gold)})
            if not wrong:
                log.add(where, "no wrong ending differs from the gold one")
                continue
            seen.add(pid)
            # a private stream per pair: the draw does not depend on the other rows
            drawn = wrong[random.Random(f"swag-wrong:{seed}:{pid}").randrange(len(wrong))]
            out.append(PairText(pid, sent1, _clean(f"{sent2} {gold}"), _clean(f"{sent2} {drawn}"), where))
    return out


def check_prefs_input(csv_path: str | Path | None, fmt: str, tokenizer_dir: str | None) -> int | None:
    """Fail now, naming the problem, if a build could not make a single pair: no tokenizer, or
    an input CSV without its columns or without one usable row (``None``: the built-in set).
    Returns the number of pairs the CSV holds."""
    if not tokenizer_dir:
        raise ConfigError("task=prefs needs tokenizer_dir=<a UnitTokenizer dir> (twist-tokenize writes one in "
                          "<out_dir>/tokenizer): it turns the spoken pairs into units")
    from twist.tokenizer import UnitTokenizer

    UnitTokenizer.read_spec(tokenizer_dir)
    if csv_path is None:
        return None
    pairs = read_pair_texts(csv_path, fmt)
    if not pairs:
        raise InputError(f"{csv_path}: no usable {fmt} rows (see the columns in docs/bench.md, "
                         "'Spoken preference pairs')")
    return len(pairs)


# ---------------------------------------------------------------------------------------
# the built-in set
# ---------------------------------------------------------------------------------------
def builtin_pair_texts(n: int, seed: int = 0) -> list[PairText]:
    """``n`` pairs from the packaged fortunes-min sentences that share no text with the demo's stories.

    The rule: sentences of 6-16 words that share no word trigram with any sentence of the
    built-in StoryCloze stories (``twist/bench/data/stories.csv``, the demo's evaluation set)
    are shuffled under the seed and the first ``n`` taken. Each is cut after half its words
    (rounded down): the first half is the prompt, the rest is chosen, and rejected is the rest
    of another of the ``n`` sentences, drawn under the seed, whose words differ.

    Raises:
        MissingInputError: fortunes-min is not installed.
        ConfigError: fewer than ``n`` (or 2) sentences qualify.
    """
    from twist.bench.packaged_text import read_sentences, words_of
    from twist.bench.storycloze import BUILTIN_STORIES

    def trigrams(text: str) -> set[tuple[str, ...]]:
        w = words_of(text)
        return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}

    story_grams: set[tuple[str, ...]] = set()
    for s in read_storycloze_csv(BUILTIN_STORIES):
        for t in (*s.context, s.right, s.wrong):
            story_grams |= trigrams(t)
    eligible = [s for s in read_sentences(min_words=6) if not trigrams(s) & story_grams]
    if len(eligible) < max(2, n):
        raise ConfigError(f"prefs.builtin_pairs={n}: only {len(eligible)} packaged sentences qualify")
    random.Random(f"prefs-builtin:{seed}").shuffle(eligible)
    halves = []
    for s in eligible[:n]:
        words = s.split()
        k = len(words) // 2
        halves.append((" ".join(words[:k]), " ".join(words[k:])))
    out = []
    for i, (prompt, rest) in enumerate(halves):
        others = [j for j, (_, r) in enumerate(halves) if normalize_text(r) != normalize_text(rest)]
        j = others[random.Random(f"prefs-builtin-neg:{seed}:{i}").randrange(len(others))]
        out.append(PairText(f"fortune-{i:04d}", prompt, rest, halves[j][1]))
    return out


def write_builtin_pairs(path: str | Path, n: int, seed: int = 0) -> Path:
    """The built-in set as a ``pairs`` CSV (``id, prompt, chosen, rejected``), written atomically."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", *PAIRS_COLUMNS])
    for p in builtin_pair_texts(n, seed):
        w.writerow([p.id, p.prompt, p.chosen, p.rejected])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


# ---------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------
def repetition_score(pair: PairText) -> float:
    """Bigram auto-BLEU of the prompt + chosen text (Slam's ``auto_bleu2``)."""
    from twist.eval.generation import auto_bleu, words_of

    return auto_bleu(words_of(f"{pair.prompt} {pair.chosen}"), 2, min_n=2)


def pair_voice(pair_id: str, voices: Sequence[str], seed: int) -> str:
    """The voice of one pair: drawn under the seed from its id alone."""
    return voices[random.Random(f"prefs-voice:{seed}:{pair_id}").randrange(len(voices))]


def build_prefs(
    c: PrefsBuild,
    csv_path: str | Path,
    out_dir: str | Path,
    backend: TTSBackend,
    tokenizer: Any,
    *,
    seed: int = 0,
    workers: int | None = None,
    rejects: RejectsLog | None = None,
    progress: bool = True,
    tokenizer_dir: str | None = None,
    builtin: bool = False,
) -> dict[str, Any]:
    """Build a pair dataset in ``out_dir`` from ``csv_path`` (in ``c.format``); returns counts.

    Args:
        c: the settings (voices, split, filter, limit, batch size).
        tokenizer: a ``UnitTokenizer`` (``.contract``, ``.encode_batch``, ``.sample_rate``).
        tokenizer_dir: where the tokenizer came from, for ``meta.json``.
        builtin: the CSV is the built-in set (recorded in ``meta.json``).
    """
    from twist.eval.inputs import AudioUnits

    out_dir = Path(out_dir)
    csv_path = Path(csv_path)
    fmt = c.format if not builtin else "pairs"
    rows: dict[str, int] = {}
    texts = read_pair_texts(csv_path, fmt, seed=seed, rejects=rejects, counts=rows)
    voices = list(c.voices) if c.voices else backend.voices[: max(1, int(c.n_voices))]
    kept, filtered = [], []
    for p in texts:
        if c.limit is not None and len(kept) >= int(c.limit):
            break
        if c.repetition_filter:
            score = repetition_score(p)
            if score >= c.repetition_threshold:
                filtered.append({"item": p.where, "id": p.id, "auto_bleu2": round(score, 4),
                                 "reason": f"repetition: bigram auto-BLEU of prompt + chosen {score:.3f} >= "
                                           f"{c.repetition_threshold}"})
                continue
        kept.append((p, pair_voice(p.id, voices, seed)))
    segments: dict[tuple[str, str], Path] = {}
    for p, voice in kept:
        for text in (p.prompt, p.chosen, p.rejected):
            segments.setdefault((text, voice), segment_path(out_dir / SEGMENTS, text, voice))
    tts = synthesize_many(backend, [(t, v, path) for (t, v), path in segments.items()], workers=workers,
                          progress=progress)
    failed = dict(tts.failures)
    audio = AudioUnits(tokenizer, cache_dir=out_dir / UNITS_CACHE, batch_size=c.tokenize_batch_size,
                       progress=progress)
    unreadable = RejectsLog(None, stage="bench")  # why a recording has no units, told per pair below
    units = audio.units([p for p in segments.values() if str(p) not in failed], unreadable, desc="prefs: tokenizing")
    why = {**failed, **{str(item): reason for item, reason, _ in unreadable.held}}
    pairs: list[PreferencePair] = []
    for p, voice in kept:
        paths = [str(segments[(t, voice)]) for t in (p.prompt, p.chosen, p.rejected)]
        missing = [(k, path) for k, path in zip(("prompt", "chosen", "rejected"), paths) if path not in units]
        if missing:
            k, path = missing[0]
            if rejects is not None:
                rejects.add(p.where, f"{k} recording {path} ({voice}): {why.get(path, 'no units')}")
            continue
        pairs.append(PreferencePair(p.id, assign_pair_split(p.id, seed=seed, valid=c.valid), voice,
                                    *(units[path] for path in paths), p.prompt, p.chosen, p.rejected))
    made_by = {
        "source": {"format": fmt, "csv": str(csv_path), "sha256": sha256_file(csv_path), "builtin": builtin},
        "tts": {"engine": backend.name, "voices": voices},
        "seed": seed,
        "filter": {"repetition": bool(c.repetition_filter), "metric": "bigram auto-BLEU of prompt + chosen text",
                   "threshold": c.repetition_threshold, "dropped": len(filtered)},
        "limit": c.limit,
        "tokenizer_dir": tokenizer_dir,
        "rows": {**rows, "filtered": len(filtered), "kept": len(pairs)},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / FILTERED, "".join(json.dumps(r) + "\n" for r in filtered))
    meta = write_pair_dataset(out_dir, pairs, tokenizer.contract, made_by=made_by,
                              split={"seed": seed, "valid": c.valid})
    return {"pairs": meta["counts"], "rows": made_by["rows"], "voices": voices, "segments": len(segments),
            "encoded": audio.n_encoded, "tts": tts.summary(), "tts_items_per_s": round(tts.items_per_s, 2)}
