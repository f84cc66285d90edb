"""Spoken StoryCloze (sSC) and topic StoryCloze (tSC): story + true vs. story + false ending.

Introduced with TWIST (Hassid et al., 2023, §3.3; https://github.com/slp-rl/SpokenStoryCloze).
Each item is a spoken four-sentence story followed by its true fifth sentence (positive) or
by a wrong one (negative): the original StoryCloze distractor for sSC, a random ending from
another story for tSC. The model wins an item when it gives the positive file a higher
likelihood.

Two layouts are read.

**The released layout** (the ``sSC``/``tSC`` archives linked from the SpokenStoryCloze
README). The README does not spell it out; what follows is what the tools that read the
release rely on: SlamKit's ``ModellingMetricDataset`` sorts a flat directory of wavs by the
integer before the first ``_`` and pairs files ``2k`` (positive) and ``2k+1`` (negative),
and other evaluation scripts pair ``<n>_<story>_correct`` with ``<n+1>_<story>_incorrect``.
So a directory of::

    <n>_<story-id>_correct.wav     <n+1>_<story-id>_incorrect.wav

(optionally in sub-directories). Files are paired by ``(directory, story-id)``; the
shorter form ``<n>_correct.wav`` / ``<n>_incorrect.wav`` is paired by ``(directory, n)``.
A file that does not fit, or an unpaired one, is an error naming it.

**A generic pairs manifest** (what ``twist-bench`` writes): ``pairs.jsonl`` with rows
``{"id": str, "positive": "rel/path.wav", "negative": "rel/path.wav"}``, paths relative
to the manifest's directory (``../wav/x.wav`` is fine: twist-bench's sSC and tSC share one
``wav/`` folder); ``positive_units`` / ``negative_units`` (lists of ints) may
replace a path with pre-tokenized units.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twist.atomic import read_jsonl_objects
from twist.audio import is_input_entry
from twist.errors import InputError, MissingInputError
from twist.eval.pairs import Pair

MANIFEST = "pairs.jsonl"
AUDIO_EXTENSIONS = (".wav", ".flac")
_RELEASED = re.compile(r"^(?P<idx>\d+)_(?:(?P<story>.+)_)?(?P<kind>correct|incorrect)$")


@dataclass
class PairSet:
    """A pairs benchmark: its pairs and, for each item key, an audio path or inline units."""

    name: str
    root: Path
    pairs: list[Pair]
    paths: dict[str, Path] = field(default_factory=dict)
    inline: dict[str, np.ndarray] = field(default_factory=dict)
    layout: str = ""
    units_final: bool = False
    """The inline units are already in the contract's final form (a pair dataset's, each segment
    deduplicated on its own): range-checked, not deduplicated again."""


def load_pairs(path: str | Path, name: str = "pairs") -> PairSet:
    """Read a StoryCloze-style benchmark from a manifest file, a dir holding ``pairs.jsonl``,
    or a dir in the released spoken StoryCloze layout."""
    p = Path(path)
    if p.is_file():
        return read_manifest(p, name)
    if not p.is_dir():
        raise MissingInputError(f"{name} benchmark not found: {p}")
    if (p / MANIFEST).is_file():
        return read_manifest(p / MANIFEST, name)
    return read_released(p, name)


def read_released(root: str | Path, name: str = "storycloze") -> PairSet:
    """Pair ``<n>_<story>_correct.wav`` with ``<n+1>_<story>_incorrect.wav`` under ``root``."""
    root = Path(root)
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and is_input_entry(f))
    if not files:
        raise InputError(
            f"{name} benchmark dir {root} is empty: no audio files and no {MANIFEST} "
            "(expected <n>_<story>_correct.wav / <n+1>_<story>_incorrect.wav or a pairs manifest)"
        )
    groups: dict[tuple[str, str], dict[str, list[Path]]] = defaultdict(lambda: {"correct": [], "incorrect": []})
    for f in files:
        m = _RELEASED.match(f.stem)
        if m is None:
            raise InputError(
                f"{name}: {f} does not follow the spoken StoryCloze naming "
                "<n>_<story-id>_correct.wav / <n>_<story-id>_incorrect.wav"
            )
        key = m.group("story") if m.group("story") is not None else m.group("idx")
        groups[(str(f.parent.relative_to(root)), key)][m.group("kind")].append(f)
    pairs, paths = [], {}
    for (sub, key), g in sorted(groups.items()):
        if len(g["correct"]) != 1 or len(g["incorrect"]) != 1:
            listed = ", ".join(str(x) for x in g["correct"] + g["incorrect"])
            raise InputError(
                f"{name}: story {key!r} in {root / sub} has {len(g['correct'])} correct and "
                f"{len(g['incorrect'])} incorrect file(s) ({listed}); expected one of each"
            )
        pos, neg = g["correct"][0], g["incorrect"][0]
        pid = key if sub == "." else f"{sub}/{key}"
        paths[str(pos)] = pos
        paths[str(neg)] = neg
        pairs.append(Pair(id=pid, positive=str(pos), negative=str(neg), meta={"positive_file": pos.name, "negative_file": neg.name}))
    return PairSet(name=name, root=root, pairs=pairs, paths=paths, layout="released")


def read_manifest(path: str | Path, name: str = "pairs") -> PairSet:
    """Read a ``pairs.jsonl`` manifest; every path must exist (checked now, not mid-run)."""
    path = Path(path)
    root = path.parent
    pairs: list[Pair] = []
    paths: dict[str, Path] = {}
    inline: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for where, row in read_jsonl_objects(path, what="pairs row", require=("id",)):
        pid = str(row["id"])
        if pid in seen:
            raise InputError(f"{where}: pair id {pid!r} is listed twice")
        seen.add(pid)
        keys = {}
        for side in ("positive", "negative"):
            if f"{side}_units" in row:
                u = row[f"{side}_units"]
                if not isinstance(u, list) or not all(isinstance(x, int) for x in u):
                    raise InputError(f"{where}: pair {pid!r}: {side}_units must be a list of ints")
                key = f"{pid}#{side}"
                inline[key] = np.asarray(u, dtype=np.int64)
            elif side in row:
                p = Path(row[side])
                # normpath: twist-bench's sSC and tSC name a shared recording as ../wav/<name>;
                # one spelling per file makes it one item for the tokenizer and its cache
                p = Path(os.path.normpath(p if p.is_absolute() else root / p))
                if not p.is_file():
                    raise MissingInputError(f"{where}: pair {pid!r}: {side} file {p} does not exist")
                key = str(p)
                paths[key] = p
            else:
                raise InputError(f"{where}: pair {pid!r} has neither '{side}' nor '{side}_units'")
            keys[side] = key
        meta = {k: v for k, v in row.items() if k not in ("positive", "negative", "positive_units", "negative_units")}
        pairs.append(Pair(id=pid, positive=keys["positive"], negative=keys["negative"], meta=meta))
    if not pairs:
        raise InputError(f"{name}: pairs manifest {path} lists no pairs")
    return PairSet(name=name, root=root, pairs=pairs, paths=paths, inline=inline, layout="manifest")


# ---------------------------------------------------------------------------------------
# the sSC and tSC benchmarks (rows of twist.eval.registry)
# ---------------------------------------------------------------------------------------
def plan_ssc(settings: Any, ctx: Any) -> list[Any]:
    """sStoryCloze: ``benchmarks.ssc.path``, or ``sSC/`` under bench_root."""
    return _plan(settings, ctx)


def plan_tsc(settings: Any, ctx: Any) -> list[Any]:
    """tStoryCloze: ``benchmarks.tsc.path``, or ``tSC/`` under bench_root."""
    return _plan(settings, ctx)


def plan_ssc_ms(settings: Any, ctx: Any) -> list[Any]:
    """Multi-speaker sStoryCloze: ``benchmarks.ssc_ms.path``, or ``sSC_ms/`` under bench_root."""
    return _plan(settings, ctx)


def plan_tsc_ms(settings: Any, ctx: Any) -> list[Any]:
    """Multi-speaker tStoryCloze: ``benchmarks.tsc_ms.path``, or ``tSC_ms/`` under bench_root."""
    return _plan(settings, ctx)


def _plan(settings: Any, ctx: Any) -> list[Any]:
    from twist.eval.registry import Task

    label = ctx.benchmark.label
    path, from_root = settings.path, False
    if not path and ctx.bench_root is not None:
        # twist-bench writes <root>/storycloze/{sSC,tSC,sSC_ms,tSC_ms}; a hand-made root may hold them directly
        for cand in (ctx.bench_root / label, ctx.bench_root / "storycloze" / label):
            if cand.is_dir():
                path, from_root = str(cand), True
                break
    if not path:
        return []
    return [Task(label, label, ctx.benchmark, pairs=load_pairs(path, name=label), units=settings.units,
                 from_root=from_root)]
