"""sWUGGY and sBLIMP in the official ZeroSpeech 2021 layout, aggregated as the toolkit does.

Layout (the ZR2021 download, Nguyen et al., 2020, "The Zero Resource Speech Benchmark 2021")::

    lexical/{dev,test}/<filename>.wav   + gold.csv: id,filename,voice,frequency,word,phones,length,correct
    syntactic/{dev,test}/<filename>.wav + gold.csv: id,filename,voice,type,subtype,correct,transcription

``correct`` is 1 for the real word / grammatical sentence and 0 for its pair; ``filename`` is
the wav stem. Aggregation follows ``zerospeech2021/lexical.py`` and ``syntactic.py``:

* sWUGGY: a word and its non-word are paired by ``(id, voice)``; each pair scores 1, 0.5
  (tie) or 0; the pairs of an id are averaged over voices; **all** is the mean over ids.
  Ids fall into frequency bands ``oov, 1-5, 6-20, 21-100, >100`` (right-open bins
  ``[0,1) [1,5) [5,20) [20,100) [100,inf)`` of the word's ``frequency``, as the toolkit's
  ``pandas.cut(..., right=False)``); **in-vocab** is the mean of the band means weighted by
  each band's count, the ``oov`` band left out (the number the TWIST paper reports).
* sBLIMP: a sentence and its non-sentence are paired by ``(type, subtype, id, voice)``;
  pairs are averaged over voices per ``(type, subtype, id)``; the score is the mean over
  those groups, with a by-type table.

The toolkit pairs rows by their order in gold.csv; here pairs are matched by key, which
gives the same pairs on the official files and a clear error on a malformed one.
:func:`write_submission` writes ``<filename> <score>`` files, so the official scorer
(``zerospeech2021-evaluate`` / ``zrc benchmarks:run sLM21``) can be run on our scores too.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twist.atomic import atomic_open
from twist.audio import is_input_entry
from twist.errors import ConfigError, InputError, MissingInputError
from twist.eval.pairs import Pair, decide

TASKS = ("lexical", "syntactic")
SPLITS = ("dev", "test")
COLUMNS = {  # as the released files lay them out (columns are read by name here, in any order)
    "lexical": ("id", "filename", "voice", "frequency", "word", "phones", "length", "correct"),
    "syntactic": ("id", "filename", "voice", "type", "subtype", "correct", "transcription"),
}
FREQUENCY_BANDS = (("oov", 0.0, 1.0), ("1-5", 1.0, 5.0), ("6-20", 5.0, 20.0), ("21-100", 20.0, 100.0), (">100", 100.0, math.inf))
AUDIO_EXTENSIONS = (".wav", ".flac")


@dataclass
class GoldSplit:
    """One ``<task>/<split>`` directory: its gold rows and the audio file of each row."""

    task: str
    split: str
    dir: Path
    gold_path: Path
    rows: list[dict[str, str]]
    audio: dict[str, Path]  # filename (stem) -> audio path
    extra: list[str] = dataclasses.field(default_factory=list)  # audio files in the dir that gold.csv does not list


def load_split(task_dir: str | Path, split: str, task: str) -> GoldSplit:
    """Read and validate ``<task_dir>/<split>/gold.csv`` and check every listed file exists.

    Args:
        task_dir: the ZR2021 ``lexical/`` or ``syntactic/`` directory.
        split: ``"dev"`` or ``"test"``.
        task: ``"lexical"`` or ``"syntactic"`` (fixes the required columns).
    """
    if task not in TASKS:
        raise ConfigError(f"unknown ZR2021 task {task!r}; choose one of {TASKS}")
    if split not in SPLITS:
        raise ConfigError(f"unknown ZR2021 split {split!r}; choose one of {SPLITS}")
    d = Path(task_dir) / split
    if not d.is_dir():
        raise MissingInputError(f"{task} benchmark dir not found: {d} (expected the ZR2021 layout {task}/{split}/)")
    if not any(d.iterdir()):
        raise InputError(f"{task} benchmark dir {d} is empty (expected *.wav files and gold.csv)")
    gold = d / "gold.csv"
    if not gold.is_file():
        raise MissingInputError(f"{task} benchmark dir {d} has no gold.csv")
    rows: list[dict[str, str]] = []
    linenos: list[int] = []
    with open(gold, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in COLUMNS[task] if c not in header]
        if missing:
            raise InputError(f"{gold} lacks column(s) {missing}; a {task} gold.csv needs {list(COLUMNS[task])}")
        for fields in reader:
            if not fields:
                continue  # a blank line
            if len(fields) != len(header):  # a stray comma shifts every later column
                raise InputError(f"{gold}:{reader.line_num}: {len(fields)} fields, the header has {len(header)} columns")
            rows.append({k: v.strip() for k, v in zip(header, fields)})
            linenos.append(reader.line_num)
    if not rows:
        raise InputError(f"{gold} lists no items")
    audio: dict[str, Path] = {}
    for lineno, r in zip(linenos, rows):
        if task == "lexical":
            _frequency(r["frequency"], f"{gold}:{lineno}")
        name = r["filename"]
        if not name:
            raise InputError(f"{gold}:{lineno}: empty filename")
        if name in audio:
            raise InputError(f"{gold}:{lineno}: filename {name!r} is listed twice")
        if r["correct"] not in ("0", "1"):
            raise InputError(f"{gold}:{lineno}: correct must be 1 or 0, got {r['correct']!r} (filename {name!r})")
        # a listed FIFO or broken link is found here and refused by the reader with its reason
        path = next((d / f"{name}{ext}" for ext in AUDIO_EXTENSIONS if is_input_entry(d / f"{name}{ext}")), None)
        if path is None:
            raise MissingInputError(f"{gold}:{lineno}: file {name!r} is listed but {d / (name + '.wav')} does not exist")
        audio[name] = path
    listed = set(audio.values())
    extra = sorted(p.name for p in d.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p not in listed)
    return GoldSplit(task, split, d, gold, rows, audio, extra)


def _frequency(value: str, where: str) -> float | None:
    """A word's corpus frequency: a count, so finite and >= 0; empty or nan = unknown."""
    if value == "" or value.lower() in ("nan", "na", "none"):
        return None
    try:
        freq = float(value)
    except ValueError:
        freq = math.nan
    if not (math.isfinite(freq) and freq >= 0):
        raise InputError(f"{where}: frequency must be a count (a finite number >= 0), got {value!r}")
    return freq


def make_pairs(gold: GoldSplit) -> list[Pair]:
    """Pair each correct row with its incorrect twin; positive/negative keys are filenames.

    sWUGGY pairs share ``(id, voice)``; sBLIMP pairs share ``(type, subtype, id, voice)``.
    """
    keys = ("id", "voice") if gold.task == "lexical" else ("type", "subtype", "id", "voice")
    groups: dict[tuple[str, ...], dict[str, list[dict[str, str]]]] = defaultdict(lambda: {"1": [], "0": []})
    for r in gold.rows:
        groups[tuple(r[k] for k in keys)][r["correct"]].append(r)
    pairs = []
    for key, g in groups.items():
        if len(g["1"]) != 1 or len(g["0"]) != 1:
            what = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key))
            raise InputError(
                f"{gold.gold_path}: the pair {what} has {len(g['1'])} correct and {len(g['0'])} incorrect "
                "row(s); expected exactly one of each"
            )
        pos, neg = g["1"][0], g["0"][0]
        meta: dict[str, Any] = {k: pos[k] for k in keys}
        if gold.task == "lexical":
            meta.update(word=pos["word"], non_word=neg["word"], length=pos["length"],
                        frequency=_frequency(pos["frequency"], f"{gold.gold_path} ({pos['filename']})"))
        else:
            meta.update(sentence=pos["transcription"], non_sentence=neg["transcription"])
        pairs.append(Pair(id="/".join(key), positive=pos["filename"], negative=neg["filename"], meta=meta))
    return pairs


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    mean = float(a.mean()) if a.size else float("nan")
    std = float(a.std(ddof=1)) if a.size > 1 else float("nan")  # pandas' std (ddof=1)
    return mean, std


def _band(freq: float | None) -> str | None:
    if freq is None:
        return None
    for name, lo, hi in FREQUENCY_BANDS:
        if lo <= freq < hi:
            return name
    return None  # negative frequency: outside every bin, as pandas.cut leaves it NaN


def aggregate_lexical(pairs: Sequence[Pair], decisions: Sequence[float]) -> dict[str, Any]:
    """sWUGGY numbers from per-pair decisions (pairs as made by :func:`make_pairs`)."""
    by_id: dict[str, list[float]] = defaultdict(list)
    first: dict[str, Pair] = {}
    for p, s in zip(pairs, decisions):
        wid = p.meta["id"]
        by_id[wid].append(float(s))
        first.setdefault(wid, p)
    id_scores = {wid: float(np.mean(v)) for wid, v in by_id.items()}
    bands: dict[str, list[float]] = {name: [] for name, _, _ in FREQUENCY_BANDS}
    lengths: dict[str, list[float]] = defaultdict(list)
    for wid, s in id_scores.items():
        b = _band(first[wid].meta.get("frequency"))
        if b is not None:
            bands[b].append(s)
        lengths[str(first[wid].meta.get("length", ""))].append(s)
    by_frequency = []
    for name, _, _ in FREQUENCY_BANDS:
        m, sd = _mean_std(bands[name])
        by_frequency.append({"frequency": name, "n": len(bands[name]), "score": m, "std": sd})
    inv = [b for b in by_frequency if b["frequency"] != "oov" and b["n"] > 0]
    n_inv = sum(b["n"] for b in inv)
    in_vocab = sum(b["n"] * b["score"] for b in inv) / n_inv if n_inv else float("nan")

    def _len_key(x: str) -> tuple[int, float, str]:
        try:
            return (0, float(x), x)
        except ValueError:
            return (1, 0.0, x)

    by_length = []
    for length in sorted(lengths, key=_len_key):
        m, sd = _mean_std(lengths[length])
        by_length.append({"length": length, "n": len(lengths[length]), "score": m, "std": sd})
    all_score = float(np.mean(list(id_scores.values()))) if id_scores else float("nan")
    return {
        "accuracy": all_score,
        "all": all_score,
        "in_vocab": in_vocab,
        "n_pairs": len(decisions),
        "n_ids": len(id_scores),
        "n_in_vocab_ids": n_inv,
        "n_voices": len({p.meta["voice"] for p in pairs}),
        "by_frequency": by_frequency,
        "by_length": by_length,
    }


def aggregate_syntactic(pairs: Sequence[Pair], decisions: Sequence[float]) -> dict[str, Any]:
    """sBLIMP numbers from per-pair decisions (pairs as made by :func:`make_pairs`)."""
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for p, s in zip(pairs, decisions):
        groups[(p.meta["type"], p.meta["subtype"], p.meta["id"])].append(float(s))
    group_scores = {k: float(np.mean(v)) for k, v in groups.items()}
    by_type_vals: dict[str, list[float]] = defaultdict(list)
    by_subtype_vals: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (t, st, _), s in group_scores.items():
        by_type_vals[t].append(s)
        by_subtype_vals[(t, st)].append(s)
    by_type = []
    for t in sorted(by_type_vals):
        m, sd = _mean_std(by_type_vals[t])
        by_type.append({"type": t, "n": len(by_type_vals[t]), "score": m, "std": sd})
    by_subtype = []
    for t, st in sorted(by_subtype_vals):
        m, sd = _mean_std(by_subtype_vals[(t, st)])
        by_subtype.append({"type": t, "subtype": st, "n": len(by_subtype_vals[(t, st)]), "score": m, "std": sd})
    overall = float(np.mean(list(group_scores.values()))) if group_scores else float("nan")
    return {
        "accuracy": overall,
        "n_pairs": len(decisions),
        "n_groups": len(group_scores),
        "n_voices": len({p.meta["voice"] for p in pairs}),
        "by_type": by_type,
        "by_subtype": by_subtype,
    }


def evaluate_split(gold: GoldSplit, file_scores: Mapping[str, float]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Aggregate per-file scores (higher = more likely) for one split.

    Pairs with a file missing from ``file_scores`` (e.g. an unreadable wav that was
    rejected) are left out and counted in ``n_pairs_skipped``.

    Returns:
        (summary, per-pair rows)
    """
    pairs = make_pairs(gold)
    kept = [p for p in pairs if p.positive in file_scores and p.negative in file_scores]
    pos = np.asarray([file_scores[p.positive] for p in kept], dtype=np.float64)
    neg = np.asarray([file_scores[p.negative] for p in kept], dtype=np.float64)
    dec = decide(pos, neg)
    agg = aggregate_lexical if gold.task == "lexical" else aggregate_syntactic
    summary = agg(kept, dec)
    summary["n_pairs_skipped"] = len(pairs) - len(kept)
    # what the official validate checks: every listed file scored, no file that is not listed
    summary["missing_files"] = sorted(r["filename"] for r in gold.rows if r["filename"] not in file_scores)
    summary["extra_files"] = list(gold.extra)
    summary["complete"] = not summary["missing_files"] and not summary["extra_files"]
    rows = [
        {**p.meta, "positive": p.positive, "negative": p.negative, "positive_score": float(a),
         "negative_score": float(b), "score": float(s)}
        for p, a, b, s in zip(kept, pos, neg, dec)
    ]
    return summary, rows


def write_submission(path: str | Path, gold: GoldSplit, file_scores: Mapping[str, float]) -> bool:
    """Write ``<filename> <score>`` lines (gold.csv order), the ZR2021 submission format.

    Scores are written with ``repr`` so that they read back to the same float: the official
    scorer then makes exactly our decisions, ties included.

    Returns:
        whether every file in gold.csv has a score (the official validator requires it).
    """
    complete = True
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in gold.rows:
            name = r["filename"]
            if name not in file_scores:
                complete = False
                continue
            f.write(f"{name} {float(file_scores[name])!r}\n")
    return complete


def require_complete(results: Mapping[str, Any], *, allow: bool = False, prog: str = "twist-eval") -> None:
    """Warn about every ZR2021 split that was not scored whole, then fail unless ``allow``.

    A split is incomplete when a file gold.csv lists got no score (unreadable, empty,
    truncated) or when its directory holds audio gold.csv does not list; the official
    ``validate`` rejects both submissions. ``results.json`` records completeness either way.
    """
    problems = []
    for name, b in (results.get("benchmarks") or {}).items():
        if b.get("complete", True):
            continue
        parts = []
        if b.get("missing_files"):
            parts.append(f"{len(b['missing_files'])} listed file(s) not scored: {_names(b['missing_files'])}")
        if b.get("extra_files"):
            parts.append(f"{len(b['extra_files'])} file(s) not in gold.csv: {_names(b['extra_files'])}")
        problems.append(f"{name}: {'; '.join(parts)}")
    for p in problems:
        print(f"{prog}: warning: incomplete ZR2021 split {p} (the official validate rejects this)", file=sys.stderr)
    if problems and not allow:
        raise InputError(f"incomplete ZR2021 split(s): {' | '.join(problems)}; the metrics cover part of the set "
                         "(recorded in results.json); fix the files, or set allow_incomplete=true to accept them")


def _names(files: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(files) - limit} more" if len(files) > limit else ""
    return ", ".join(files[:limit]) + more


# ---------------------------------------------------------------------------------------
# the sWUGGY and sBLIMP benchmarks (rows of twist.eval.registry)
# ---------------------------------------------------------------------------------------
def plan_lexical(settings: Any, ctx: Any) -> list[Any]:
    """sWUGGY: each configured split of the lexical task, read and checked."""
    return _plan(settings, ctx, "lexical")


def plan_syntactic(settings: Any, ctx: Any) -> list[Any]:
    """sBLIMP: each configured split of the syntactic task, read and checked."""
    return _plan(settings, ctx, "syntactic")


def _plan(settings: Any, ctx: Any, task: str) -> list[Any]:
    from twist.eval.registry import Task
    from twist.eval.storycloze import PairSet

    label = ctx.benchmark.label
    d = settings.dir or (str(Path(ctx.zr2021_root) / task) if ctx.zr2021_root else None)
    discovered = False
    if not d and ctx.bench_root is not None and (ctx.bench_root / task).is_dir():
        d, discovered = str(ctx.bench_root / task), True
    if not d:
        return []
    tasks = []
    for split in settings.splits:
        if discovered and not (Path(d) / split).is_dir():
            continue  # a twist-bench dir may hold only some splits
        gold = load_split(d, split, task)
        ps = PairSet(name=f"{label}/{split}", root=gold.dir, pairs=make_pairs(gold), paths=dict(gold.audio),
                     layout="zr2021")
        tasks.append(Task(f"{label}/{split}", f"{label} ({split})", ctx.benchmark, pairs=ps, gold=gold,
                          units=settings.units, from_root=discovered))
    return tasks
