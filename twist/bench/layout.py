"""The on-disk layouts the benchmark builders write, as ``twist-eval`` reads them.

* ZeroSpeech 2021 (Nguyen et al. 2020, "The Zero Resource Speech Benchmark 2021"):
  ``lexical/{dev,test}/<filename>.wav`` + ``gold.csv`` (sWUGGY) and
  ``syntactic/{dev,test}/<filename>.wav`` + ``gold.csv`` (sBLIMP); ``filename`` is the
  wav stem, ``correct`` is 1 for the real word / grammatical sentence and 0 otherwise.
* Spoken StoryCloze (TWIST, Hassid et al. 2023, §3.3): ``pairs.jsonl`` with rows
  ``{"id", "positive", "negative"}``, wav paths relative to the manifest's directory.

Every file is written atomically, and rows are sorted so a rebuild is byte-identical.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from twist.atomic import atomic_write_text
from twist.errors import ConfigError, InputError

# The column order of the released ZR2021 gold files: the official scorer reads some columns
# by position (its sBLIMP by-type table takes the third column after the index as the type).
LEXICAL_COLUMNS = ("id", "filename", "voice", "frequency", "word", "phones", "length", "correct")
SYNTACTIC_COLUMNS = ("id", "filename", "voice", "type", "subtype", "correct", "transcription")
PAIRS_KEYS = ("id", "positive", "negative")
SPLITS = ("dev", "test")


def slug(text: str) -> str:
    """A file-name-safe form of an id or a voice name (``en-us+f3`` -> ``en-us-f3``)."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.")
    return s or "x"


def write_gold_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> None:
    """Write ``gold.csv`` with exactly ``columns`` (in order), sorted by (id, filename)."""
    rows = sorted(rows, key=lambda r: (str(r["id"]), str(r["filename"])))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="raise")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    atomic_write_text(path, buf.getvalue())


def read_gold_csv(path: str | Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Read a ``gold.csv`` and check it has ``columns``; errors name the missing one."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        header = r.fieldnames or []
        for c in columns:
            if c not in header:
                raise InputError(f"{path}: missing column {c!r} (header: {', '.join(header)})")
        return list(r)


def write_pairs_jsonl(path: str | Path, pairs: Iterable[Mapping[str, str]]) -> None:
    """Write a StoryCloze ``pairs.jsonl`` (rows sorted by id, keys exactly ``PAIRS_KEYS``)."""
    lines = [json.dumps({k: p[k] for k in PAIRS_KEYS}) for p in sorted(pairs, key=lambda p: p["id"])]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_pairs_jsonl(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            for k in PAIRS_KEYS:
                if k not in row:
                    raise InputError(f"{path}:{n}: missing key {k!r}")
            out.append(row)
    return out


def split_by_group(keys: Sequence[str], groups: Sequence[str], dev_fraction: float, seed: int) -> dict[str, str]:
    """Assign each key to ``dev`` or ``test``, stratified by group, reproducibly.

    Keys are ordered by group (groups sorted, keys shuffled within a group by a seeded
    RNG) and then sampled systematically: key ``i`` goes to dev when
    ``floor((i + 1) * f + u) > floor(i * f + u)`` for a seeded offset ``u``. Every group
    (and the whole set) gets its share of dev items to within one, and small groups of
    one item alternate between the splits instead of all landing in test. With two or
    more keys and ``0 < dev_fraction < 1`` neither split is empty.
    """
    import math
    import random

    if not 0.0 <= dev_fraction <= 1.0:
        raise ConfigError(f"dev_fraction must be in [0, 1], got {dev_fraction}")
    by_group: dict[str, list[str]] = {}
    for k, g in zip(keys, groups):
        by_group.setdefault(g, []).append(k)
    ordered: list[str] = []
    for g in sorted(by_group):
        ks = sorted(by_group[g])
        random.Random(f"{seed}:{g}").shuffle(ks)
        ordered += ks
    u = random.Random(f"{seed}:offset").random()
    f = dev_fraction
    out = {k: ("dev" if math.floor((i + 1) * f + u) > math.floor(i * f + u) else "test") for i, k in enumerate(ordered)}
    if 0.0 < f < 1.0 and len(ordered) >= 2:
        if "dev" not in out.values():
            out[ordered[0]] = "dev"
        if "test" not in out.values():
            out[ordered[-1]] = "test"
    return out


def write_zr2021_splits(
    root: Path, rows: list[dict], columns: Sequence[str], splits: Sequence[str]
) -> tuple[dict[str, int], int]:
    """Write ``root/<split>/gold.csv`` for each split from rows carrying ``_split``/``_pid``/``_path``.

    ZR2021 ids name the pair and are shared across voices; a (pair, voice) whose file failed
    to synthesise is dropped whole (both rows), and the voices that did synthesise still count.

    Returns:
        pairs per split, and the number of dropped (pair, voice) items.
    """
    failed = {r["_pid"] for r in rows if not r["_path"].exists()}
    counts = {}
    for s in splits:
        kept = [r for r in rows if r["_split"] == s and r["_pid"] not in failed]
        (root / s).mkdir(parents=True, exist_ok=True)
        write_gold_csv(root / s / "gold.csv", columns, kept)
        counts[s] = len({r["id"] for r in kept})
    return counts, len(failed)
