"""The spoken preference-pair dataset on disk: what preference optimisation (DPO) trains on.

Slam (Maimon et al. 2025, "Slamming") aligns a speech LM with DPO on spoken pairs: a spoken
prompt, a continuation to prefer (``chosen``) and one to avoid (``rejected``), all spoken by
one voice. ``twist-bench task=prefs`` builds such a set (:mod:`twist.bench.prefs`); this
module is its format, which the DPO trainer reads. Layout of a pair dataset directory::

    meta.json     format ("twist-pairs"), version, the unit contract, counts per split,
                  the split rule, and what made it (source file and format, TTS engine and
                  voices, seed, repetition filter, tokenizer)
    pairs.jsonl   one row per pair, in the order of the input:
                  {"id", "split", "voice", "prompt", "chosen", "rejected",
                   "prompt_text", "chosen_text", "rejected_text"}

``prompt``, ``chosen`` and ``rejected`` are lists of unit ids in ``[0, K)`` in the contract's
final form, without ``<bos>``/``<eos>`` (a consumer lays them out as the contract's
:class:`twist.contract.VocabLayout` says). Each of the three is its own recording, encoded and,
when the contract says ``dedup``, deduplicated on its own: a run of one unit that spans the
prompt and the continuation is not collapsed across the boundary, and the chosen and rejected
continuations of a pair follow the very same prompt units. ``split`` is ``train`` or
``valid``, a seeded hash of the id (:func:`assign_pair_split`), so it is reproducible and stable
when pairs are added. ``voice`` is the TTS voice of all three recordings.

``pairs.jsonl`` is written first and ``meta.json`` last, each atomically, so ``meta.json``
commits the dataset: its counts must match the pairs file, and :class:`PairDataset` refuses a
directory where they do not (an interrupted rewrite).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twist.atomic import atomic_write_json, atomic_write_text, read_json_object, read_jsonl_objects
from twist.contract import UnitContract, check_unit_range
from twist.errors import InputError, MissingInputError
from twist.units import assign_split

FORMAT = "twist-pairs"
FORMAT_VERSION = 1
META = "meta.json"
PAIRS = "pairs.jsonl"
SPLITS = ("train", "valid")
UNIT_KEYS = ("prompt", "chosen", "rejected")
TEXT_KEYS = ("prompt_text", "chosen_text", "rejected_text")
ROW_KEYS = ("id", "split", "voice", *UNIT_KEYS, *TEXT_KEYS)


@dataclass(frozen=True)
class PreferencePair:
    """One spoken preference pair: a prompt and two continuations, as units and as text."""

    id: str
    split: str
    """``train`` or ``valid``."""
    voice: str
    """The TTS voice of the prompt and of both continuations."""
    prompt: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    prompt_text: str
    chosen_text: str
    rejected_text: str

    def to_row(self) -> dict[str, Any]:
        """The ``pairs.jsonl`` row (keys in :data:`ROW_KEYS` order)."""
        row: dict[str, Any] = {"id": self.id, "split": self.split, "voice": self.voice}
        for k in UNIT_KEYS:
            row[k] = [int(x) for x in np.asarray(getattr(self, k)).reshape(-1)]
        for k in TEXT_KEYS:
            row[k] = getattr(self, k)
        return row


def assign_pair_split(pair_id: str, *, seed: int = 0, valid: float = 0.05) -> str:
    """``train`` or ``valid`` for one pair id: the unit dataset's seeded hash split, without test."""
    return assign_split(pair_id, seed=seed, valid=valid, test=0.0)


def write_pair_dataset(
    root: str | Path,
    pairs: Iterable[PreferencePair],
    contract: UnitContract,
    *,
    made_by: Mapping[str, Any],
    split: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``pairs.jsonl`` then ``meta.json`` under ``root``; returns the meta.

    Args:
        pairs: in the order they are to be stored; ids must be unique.
        contract: the units' contract (the tokenizer's).
        made_by: what made the set (source, tts, seed, filter, ...), stored as is.
        split: the split rule, e.g. ``{"seed": 0, "valid": 0.05}``.

    Raises:
        InputError: a unit id outside the contract, an unknown split or a repeated id
            (nothing is written).
    """
    root = Path(root)
    lines, counts, seen = [], dict.fromkeys(SPLITS, 0), set()
    for p in pairs:
        if p.id in seen:
            raise InputError(f"pair {p.id!r} is listed twice")
        seen.add(p.id)
        if p.split not in SPLITS:
            raise InputError(f"pair {p.id!r}: split must be train or valid, got {p.split!r}")
        for k in UNIT_KEYS:
            check_unit_range(np.asarray(getattr(p, k)), contract.n_units, where=f"pair {p.id!r} {k}")
        counts[p.split] += 1
        lines.append(json.dumps(p.to_row()))
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "contract": contract.to_dict(), "counts": counts,
            "n_pairs": len(lines), "split": dict(split), **dict(made_by)}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / PAIRS, "".join(line + "\n" for line in lines))
    atomic_write_json(root / META, meta)
    return meta


class PairDataset:
    """A pair dataset read back and checked: its format, its contract and every unit id.

    Args:
        root: the directory (``meta.json`` + ``pairs.jsonl``).
        expected: the contract of whatever will use the pairs (the policy model); a different
            one is refused with an error naming both sides.
        expected_name: a human name for that side, e.g. ``"speech LM runs/lm"``.

    Raises:
        MissingInputError: no ``meta.json`` (not a pair dataset) or no ``pairs.jsonl``.
        ContractMismatchError: ``expected`` differs from the dataset's contract.
        InputError: anything else wrong, in one line naming the file and row.
    """

    def __init__(self, root: str | Path, *, expected: UnitContract | None = None,
                 expected_name: str = "model") -> None:
        self.root = Path(root)
        meta_path = self.root / META
        if not meta_path.is_file():
            raise MissingInputError(f"not a pair dataset: {meta_path} is missing (build one with twist-bench task=prefs)")
        self.meta = read_json_object(meta_path, what="pair dataset meta")
        if self.meta.get("format") != FORMAT:
            raise InputError(f"{meta_path}: format is {self.meta.get('format')!r}, expected {FORMAT!r}")
        version = self.meta.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(f"{meta_path}: {FORMAT} version {version!r}; this twist reads version "
                             f"{FORMAT_VERSION} and older")
        self.contract = UnitContract.from_dict(self.meta.get("contract") or {}, source=str(meta_path))
        if expected is not None:
            expected.check_same_units(self.contract, mine=expected_name, theirs=f"pair dataset {self.root}")
        self.pairs = self._read_pairs()
        counts = {s: sum(p.split == s for p in self.pairs) for s in SPLITS}
        if self.meta.get("counts") != counts:
            raise InputError(f"{meta_path}: meta.json counts {self.meta.get('counts')} but {PAIRS} holds {counts} "
                             "(an interrupted rewrite? build it again)")

    def _read_pairs(self) -> list[PreferencePair]:
        path = self.root / PAIRS
        if not path.is_file():
            raise MissingInputError(f"pair dataset {self.root}: {PAIRS} is missing")
        out: list[PreferencePair] = []
        seen: set[str] = set()
        for where, row in read_jsonl_objects(path, what="pair row"):
            for k in ROW_KEYS:
                if k not in row:
                    raise InputError(f"{where}: missing key {k!r} (a row has {', '.join(ROW_KEYS)})")
            pid = str(row["id"])
            where = f"{where} (pair {pid!r})"
            if pid in seen:
                raise InputError(f"{where}: pair id {pid!r} is listed twice")
            seen.add(pid)
            if row["split"] not in SPLITS:
                raise InputError(f"{where}: split must be train or valid, got {row['split']!r}")
            units = {}
            for k in UNIT_KEYS:
                u = row[k]
                if not isinstance(u, list) or not u or not all(type(x) is int for x in u):
                    raise InputError(f"{where}: {k} must be a list of unit ids (non-empty, integers)")
                units[k] = np.asarray(u, dtype=np.int64)
                check_unit_range(units[k], self.contract.n_units, where=f"{where} {k}")
            for k in (*TEXT_KEYS, "voice"):
                if not isinstance(row[k], str):
                    raise InputError(f"{where}: {k} must be a string")
            out.append(PreferencePair(id=pid, split=row["split"], voice=row["voice"], **units,
                                      **{k: row[k] for k in TEXT_KEYS}))
        return out

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PreferencePair]:
        return iter(self.pairs)

    def __getitem__(self, i: int) -> PreferencePair:
        return self.pairs[i]

    def split(self, name: str) -> list[PreferencePair]:
        """The pairs of one split (``train`` or ``valid``), in file order."""
        if name not in SPLITS:
            raise InputError(f"unknown pair split {name!r}; choose one of {', '.join(SPLITS)}")
        return [p for p in self.pairs if p.split == name]

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.meta["counts"])
