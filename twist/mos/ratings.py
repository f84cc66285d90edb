"""Reading the ratings files the listening-test page downloads (JSON or CSV), strictly.

A file is one rater's session. Every row is checked against the test's key: the item must be
an item of this test and of this rater's running order (:func:`twist.mos.plan.rater_plan`),
the score must be on the scale (1 to 5 in steps of 0.5), listening time a number >= 0, and
no item may be rated twice except for the one planned repeat. A file that breaks a rule is
rejected whole, with its path and the row in the message (a file with one impossible row
cannot be trusted for the others), and the other files are still scored. The same rater id
in two files is a duplicate: the later file is rejected.

JSON (what the page saves)::

    {"format": "twist-mos-ratings", "version": 1, "test_id": "...", "rater": "r01",
     "ratings": [{"position": 0, "item": "3fa2c1d0e9", "score": 4.5, "listen_seconds": 7.1,
                  "duration": 7.0, "repeat": false}, ...]}

CSV: a header with at least ``test_id,rater,item,score,listen_seconds,repeat`` (``position``,
``duration`` and ``seconds_on_item`` are optional), one rating per line.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twist.errors import InputError, MissingInputError
from twist.mos.plan import rater_plan

RATINGS_FORMAT = "twist-mos-ratings"
CSV_REQUIRED = ("test_id", "rater", "item", "score", "listen_seconds", "repeat")


@dataclass
class Rating:
    """One score given by one rater to one item."""

    item: str
    score: float
    listen_seconds: float
    repeat: bool = False
    where: str = ""  # "row 5" / "ratings[3]", for messages


@dataclass
class RaterSession:
    """One ratings file: a rater and their ratings."""

    path: Path
    rater: str
    ratings: list[Rating] = field(default_factory=list)

    @property
    def first(self) -> dict[str, Rating]:
        """Each item's first hearing (the repeat is for the attention check only)."""
        return {r.item: r for r in self.ratings if not r.repeat}

    @property
    def repeated(self) -> Rating | None:
        return next((r for r in self.ratings if r.repeat), None)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories contribute their ``*.json`` and ``*.csv``, sorted."""
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (".json", ".csv")))
        elif p.is_file():
            out.append(p)
        else:
            raise MissingInputError(f"ratings file not found: {p}")
    return out


def _bad(path: Path, where: str, msg: str) -> InputError:
    return InputError(f"{path} {where}: {msg}" if where else f"{path}: {msg}")


def _number(path: Path, where: str, name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _bad(path, where, f"{name} {value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _bad(path, where, f"{name} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise _bad(path, where, f"{name} {value!r} is not a finite number")
    return x


def _flag(path: Path, where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no", ""):
        return False
    raise _bad(path, where, f"repeat {value!r} is not true or false")


def _raw_rows(path: Path) -> tuple[str | None, str | None, list[tuple[str, Mapping[str, Any]]]]:
    """``(test id, rater, [(where, row)])`` from a JSON or CSV file, before any checking."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(path, "", f"unreadable ({e})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in CSV_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise _bad(path, "row 1", f"CSV header lacks column(s) {missing}")
        rows = [(f"row {i}", r) for i, r in enumerate(reader, start=2)]
        first = rows[0][1] if rows else {}
        for where, r in rows:
            for col, why in (("rater", "one file holds one rater's session"), ("test_id", "one file holds one test")):
                if str(r.get(col) or "").strip() != str(first.get(col) or "").strip():
                    raise _bad(path, where, f"{col} {r.get(col)!r} differs from the first row's {first.get(col)!r}: {why}")
        return (str(first.get("test_id") or "").strip() or None, str(first.get("rater") or "").strip() or None, rows)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(path, f"line {e.lineno}", f"not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or data.get("format") != RATINGS_FORMAT:
        raise _bad(path, "", f"not a twist-mos ratings file (expected \"format\": \"{RATINGS_FORMAT}\")")
    if data.get("version") != 1:
        raise _bad(path, "", f"ratings version {data.get('version')!r} is not supported (this twist reads 1)")
    ratings = data.get("ratings")
    if not isinstance(ratings, list):
        raise _bad(path, "", "\"ratings\" must be a list")
    rows = []
    for i, r in enumerate(ratings):
        if not isinstance(r, dict):
            raise _bad(path, f"ratings[{i}]", "each rating must be an object")
        rows.append((f"ratings[{i}]", r))
    return (str(data.get("test_id") or "") or None, str(data.get("rater") or "").strip() or None, rows)


def read_session(path: str | Path, key: Mapping[str, Any]) -> RaterSession:
    """Read and check one ratings file against the test's key.

    Raises:
        InputError: naming the file and the row that breaks a rule.
    """
    path = Path(path)
    test_id, rater, rows = _raw_rows(path)
    if test_id != key["test_id"]:
        raise _bad(path, "", f"ratings for test {test_id!r}, but the key is for test {key['test_id']!r}")
    if not rater:
        raise _bad(path, "", "no rater id")
    if not rows:
        raise _bad(path, "", "no ratings")
    settings = key["settings"]
    prompt_of = {it["id"]: int(it["prompt_index"]) for it in key["items"]}
    plan = rater_plan(int(settings["seed"]), [(it["id"], int(it["prompt_index"])) for it in key["items"]], rater,
                      prompts_per_rater=settings.get("prompts_per_rater"), repeat=bool(settings.get("repeat", True)))
    planned = {s.item for s in plan}
    planned_repeat = next((s.item for s in plan if s.repeat), None)
    lo, hi, step = 1.0, 5.0, 0.5
    session = RaterSession(path=path, rater=rater)
    seen: dict[tuple[str, bool], str] = {}
    for where, r in rows:
        item = str(r.get("item", "")).strip()
        if item not in prompt_of:
            raise _bad(path, where, f"item {item!r} is not an item of test {key['test_id']}")
        if item not in planned:
            raise _bad(path, where, f"item {item!r} was not in the running order of rater {rater!r} "
                                    "(an edited file, or the rater id was changed)")
        score = _number(path, where, "score", r.get("score"))
        if not lo <= score <= hi or abs(score / step - round(score / step)) > 1e-9:
            raise _bad(path, where, f"score {r.get('score')!r} is off the scale ({lo:g} to {hi:g} in steps of {step:g})")
        listen = _number(path, where, "listen_seconds", r.get("listen_seconds"))
        if listen < 0:
            raise _bad(path, where, f"listen_seconds {listen:g} is negative")
        repeat = _flag(path, where, r.get("repeat", False))
        if repeat and item != planned_repeat:
            raise _bad(path, where, f"item {item!r} is marked as the repeat, but the repeat of rater {rater!r} is {planned_repeat!r}")
        if (item, repeat) in seen:
            raise _bad(path, where, f"item {item!r} rated twice (also at {seen[(item, repeat)]})")
        seen[(item, repeat)] = where
        session.ratings.append(Rating(item=item, score=score, listen_seconds=listen, repeat=repeat, where=where))
    rep = session.repeated
    if rep is not None and rep.item not in session.first:
        raise _bad(path, rep.where, f"the repeat of item {rep.item!r} has no first rating")
    return session


def read_sessions(
    paths: Sequence[str | Path], key: Mapping[str, Any], *, rejects: Any = None
) -> list[RaterSession]:
    """Read every ratings file; a bad file, or a second file of the same rater, goes to ``rejects``.

    Args:
        paths: files, or directories of ``*.json`` / ``*.csv``.
        key: the test's key (:func:`twist.mos.build.load_key`).
        rejects: a :class:`twist.rejects.RejectsLog`; without one the first bad file raises.
    """
    sessions: list[RaterSession] = []
    by_rater: dict[str, Path] = {}
    for p in expand_paths(paths):
        try:
            s = read_session(p, key)
            if s.rater in by_rater:
                raise _bad(p, "", f"rater {s.rater!r} already has a ratings file ({by_rater[s.rater]}); "
                                  "remove one of the two")
        except InputError as e:
            if rejects is None:
                raise
            rejects.add(str(p), str(e))
            continue
        by_rater[s.rater] = p
        sessions.append(s)
    return sessions
