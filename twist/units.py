"""The unit dataset on disk: compact, memory-mapped, streamable, resumable to write.

Layout of a unit dataset directory::

    meta.json          format, unit contract, counts, split seed/fractions
    manifest.jsonl     one row per utterance, sorted by id:
                       {"id", "source", "duration", "n_frames", "n_units", "shard", "offset"}
    shards/            r{rank}-{seq}.units.u16   uint16 units, utterances back to back
                       r{rank}-{seq}.durs.u16    run lengths when dedup is on (same offsets)
                       r{rank}-{seq}.align.jsonl word alignments, one record per utterance (when aligned)
                       r{rank}-{seq}.jsonl       the shard's manifest rows: its commit marker
    alignment.json     which aligner made the alignments (when aligned)

A writer (:class:`UnitShardWriter`) buffers utterances and commits a shard at a time: the
binary files (and the alignments) are renamed into place first, the shard's ``.jsonl`` last. A
shard without its ``.jsonl`` is garbage from a killed run and is removed on restart; a shard
with one is complete. Resuming skips every id already committed, so a killed run loses at most one
shard's worth of work and never duplicates an utterance. Each rank writes its own shards
(the ``r{rank}`` prefix), so ranks never touch each other's files. :func:`merge_shards`
gathers the shard manifests into ``manifest.jsonl`` and ``meta.json``; running it twice
gives the same files.

Splits and data fractions are functions of ``(seed, utterance id)`` through a hash, so they
are reproducible, stable when data is added, and nested (the 1% subset lies inside the 10%
one), as the data-scaling ablations need (paper Table 6). The default split is 2% valid,
2% test, as in the paper.

Word alignments (``twist-tokenize align=tts|whisper``, :mod:`twist.tokenizer.aligners`) are kept
beside the units with the same guarantees: one JSON record per utterance in its shard's
``.align.jsonl``, committed with the shard; each manifest row then has ``align_offset``, the
record's byte offset in that file (:meth:`UnitDataset.alignment` seeks to it). A dataset is
aligned throughout or not at all.

Other toolkits' one-utterance-per-line formats are read and written by
:func:`import_lines` and :func:`export_lines`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twist.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
)
from twist.contract import UnitContract, check_unit_range
from twist.errors import ConfigError, InputError, MissingInputError

FORMAT = "twist-units"
FORMAT_VERSION = 1
META = "meta.json"
MANIFEST = "manifest.jsonl"
SHARDS = "shards"
ALIGNMENT = "alignment.json"
ALIGN_SUFFIX = ".align.jsonl"
SPLITS = ("train", "valid", "test")
DEFAULT_SPLIT = {"seed": 0, "valid": 0.02, "test": 0.02}
_SHARD_RE = re.compile(r"^r(\d{4,})-(\d{6,})\.jsonl$")


# ---------------------------------------------------------------------------------------
# dedup
# ---------------------------------------------------------------------------------------
def dedup(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse runs of repeated units; return ``(units, durations)`` (durations in frames)."""
    units = np.asarray(units)
    if units.size == 0:
        return units.astype(np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], units[1:] != units[:-1]]))
    durations = np.diff(np.concatenate([starts, [units.size]]))
    return units[starts].astype(np.int64), durations.astype(np.int64)


def expand(units: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dedup`."""
    return np.repeat(np.asarray(units), np.asarray(durations))


# ---------------------------------------------------------------------------------------
# splits and fractions
# ---------------------------------------------------------------------------------------
def _unit_interval(key: str) -> float:
    h = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_split(utt_id: str, *, seed: int = 0, valid: float = 0.02, test: float = 0.02) -> str:
    """Deterministic split of one utterance id."""
    if not (0 <= valid and 0 <= test and valid + test < 1):
        raise ConfigError(f"split fractions must satisfy 0 <= valid, test and valid + test < 1; got {valid}, {test}")
    u = _unit_interval(f"split:{seed}:{utt_id}")
    if u < valid:
        return "valid"
    if u < valid + test:
        return "test"
    return "train"


def in_fraction(utt_id: str, fraction: float, *, seed: int = 0) -> bool:
    """Whether an id belongs to the nested ``fraction`` subset (e.g. 0.01, 0.1, 1.0)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"data fraction must be in (0, 1], got {fraction}")
    return fraction >= 1 or _unit_interval(f"fraction:{seed}:{utt_id}") < fraction


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
class UnitShardWriter:
    """Write utterances into committed shards; resumable; one writer per rank.

    Args:
        root: the dataset directory.
        contract: the unit contract of the units being written.
        rank: this writer's rank; its shards are named ``r{rank}-*``.
        shard_units: commit a shard once it holds this many units ...
        shard_items: ... or this many utterances, whichever comes first.
        alignment: the aligner that makes this dataset's word alignments (a description with a
            ``fingerprint``, kept as ``alignment.json``); every utterance then comes with its
            alignment record. ``None``: no alignments.
    """

    def __init__(
        self,
        root: str | Path,
        contract: UnitContract,
        *,
        rank: int = 0,
        shard_units: int = 2_000_000,
        shard_items: int = 2000,
        alignment: dict[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.contract = contract
        self.rank = rank
        self.shard_units = shard_units
        self.shard_items = shard_items
        self.alignment = alignment
        self.shard_dir = self.root / SHARDS
        self._check_alignment()
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._check_or_write_contract()
        if alignment is not None and not (self.root / ALIGNMENT).exists():
            atomic_write_json(self.root / ALIGNMENT, alignment)
        self._buf_rows: list[dict[str, Any]] = []
        self._buf_units: list[np.ndarray] = []
        self._buf_durs: list[np.ndarray | None] = []
        self._buf_align: list[bytes] = []
        self._buf_n = 0
        self._done: set[str] = set()
        self._seq = 0
        self._recover()

    # -- resume ---------------------------------------------------------------------------
    def _check_or_write_contract(self) -> None:
        path = self.root / "contract.json"
        if path.exists():
            existing = UnitContract.load(path)
            existing.check_compatible(
                self.contract, mine=f"existing dataset {self.root}", theirs="this tokenizer run"
            )
        else:
            self.contract.save(path)

    def _check_alignment(self) -> None:
        """One aligner per dataset, and alignments for all of its utterances or for none."""
        path = self.root / ALIGNMENT
        if path.exists():
            old = read_json_object(path)
            if self.alignment is None:
                raise InputError(f"{self.root} holds word alignments (made by {old.get('aligner')!r}); this run "
                                 "makes none: tokenize with the same align= setting, or into a new out_dir")
            if old.get("fingerprint") != self.alignment.get("fingerprint"):
                raise InputError(
                    f"the alignments in {self.root} were made by {old.get('aligner')!r} (fingerprint "
                    f"{old.get('fingerprint')}); this run aligns with {self.alignment.get('aligner')!r} (fingerprint "
                    f"{self.alignment.get('fingerprint')}): tokenize into a new out_dir")
        elif self.alignment is not None and any(True for _ in committed_rows(self.root)):
            raise InputError(f"{self.root} holds utterances without word alignments; tokenize with "
                             f"align={self.alignment.get('aligner')} into a new out_dir")

    def _recover(self) -> None:
        prefix = f"r{self.rank:04d}-"
        committed = set()
        for p in sorted(self.shard_dir.glob(prefix + "*.jsonl")):
            m = _SHARD_RE.match(p.name)
            if not m:
                continue
            committed.add(p.name[: -len(".jsonl")])
            self._seq = max(self._seq, int(m.group(2)) + 1)
            for row in _read_jsonl(p):
                self._done.add(row["id"])
        for p in self.shard_dir.glob(prefix + "*"):
            stem = p.name.split(".")[0]
            if stem not in committed:
                p.unlink(missing_ok=True)  # binaries and alignments of a shard whose commit marker never landed
        for p in self.shard_dir.glob("." + prefix + "*.tmp"):
            p.unlink(missing_ok=True)  # half-written temporaries of a killed atomic write
        # all ranks' done ids count, so a rerun with a different world size still skips them
        for p in self.shard_dir.glob("*.jsonl"):
            if not p.name.startswith(prefix) and _SHARD_RE.match(p.name):
                for row in _read_jsonl(p):
                    self._done.add(row["id"])

    @property
    def done_ids(self) -> set[str]:
        """Ids committed by any earlier run (or this one)."""
        return self._done

    # -- append ---------------------------------------------------------------------------
    def add(
        self,
        utt_id: str,
        units: np.ndarray,
        *,
        source: str = "",
        duration: float | None = None,
        durations: np.ndarray | None = None,
        raw: bool = True,
        extra: dict[str, Any] | None = None,
        alignment: dict[str, Any] | None = None,
    ) -> None:
        """Add one utterance.

        Args:
            units: unit indices in ``[0, K)``.
            raw: ``True`` if ``units`` are frame-level (one per frame); they are then
                deduplicated here when the contract says so. ``False`` if they are
                already in their final form (``durations`` may accompany them).
            extra: more fields for the utterance's manifest row (e.g. what the source
                file was when it was read).
            alignment: its word-alignment record (``{"id": utt_id, ...}``), required when the
                writer has an aligner.
        """
        if utt_id in self._done:
            return
        if self.alignment is not None:
            if alignment is None:
                raise InputError(f"utterance {utt_id!r} has no alignment (the dataset is aligned by "
                                 f"{self.alignment.get('aligner')!r})")
            if alignment.get("id") != utt_id:
                raise InputError(f"utterance {utt_id!r} was given the alignment of {alignment.get('id')!r}")
        elif alignment is not None:
            raise InputError(f"utterance {utt_id!r} comes with an alignment, but the writer has no aligner")
        units = np.asarray(units)
        check_unit_range(units, self.contract.n_units, where=f"utterance {utt_id!r}")
        n_frames = int(units.size)
        if raw and self.contract.dedup:
            units, durations = dedup(units)
        elif raw:
            durations = None
        elif durations is not None:
            durations = np.asarray(durations)
            if durations.shape != units.shape:
                raise InputError(f"utterance {utt_id!r}: {units.size} units but {durations.size} durations")
            n_frames = int(durations.sum())
        if duration is None:
            duration = n_frames / self.contract.frame_rate
        self._buf_rows.append(
            {
                "id": utt_id,
                "source": str(source),
                "duration": round(float(duration), 4),
                "n_frames": n_frames,
                "n_units": int(units.size),
                **(extra or {}),
            }
        )
        self._buf_units.append(units.astype(np.uint16))
        self._buf_durs.append(None if durations is None else np.minimum(durations, 65535).astype(np.uint16))
        if alignment is not None:
            from twist.alignment import dumps_record

            self._buf_align.append((dumps_record(alignment) + "\n").encode("utf-8"))
        self._buf_n += int(units.size)
        self._done.add(utt_id)
        if self._buf_n >= self.shard_units or len(self._buf_rows) >= self.shard_items:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered utterances as one shard."""
        if not self._buf_rows:
            return
        name = f"r{self.rank:04d}-{self._seq:06d}"
        has_durs = all(d is not None for d in self._buf_durs)
        offset = 0
        for row, u in zip(self._buf_rows, self._buf_units):
            row["shard"] = name
            row["offset"] = offset
            offset += int(u.size)
        with atomic_path(self.shard_dir / f"{name}.units.u16") as tmp:
            _write_u16(tmp, np.concatenate(self._buf_units))
        if has_durs:
            with atomic_path(self.shard_dir / f"{name}.durs.u16") as tmp:
                _write_u16(tmp, np.concatenate(self._buf_durs))
        if self._buf_align:
            at = 0
            for row, line in zip(self._buf_rows, self._buf_align):
                row["align_offset"] = at
                at += len(line)
            atomic_write_bytes(self.shard_dir / f"{name}{ALIGN_SUFFIX}", b"".join(self._buf_align))
        # the shard's manifest is written last: it is the commit marker
        atomic_write_text(self.shard_dir / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in self._buf_rows))
        self._seq += 1
        self._buf_rows, self._buf_units, self._buf_durs, self._buf_align, self._buf_n = [], [], [], [], 0

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> UnitShardWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        # On error keep what was committed; drop the partial buffer (it is redone on resume).
        if exc_type is None:
            self.close()


def committed_rows(root: str | Path) -> Iterator[dict[str, Any]]:
    """The manifest rows of every committed shard under ``root``, of every rank."""
    for p in sorted((Path(root) / SHARDS).glob("*.jsonl")):
        if _SHARD_RE.match(p.name):
            yield from _read_jsonl(p)


def merge_shards(
    root: str | Path,
    *,
    split: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Gather every committed shard into ``manifest.jsonl`` and ``meta.json``.

    Idempotent: the output depends only on the committed shards. Duplicate ids (possible
    only if two ranks were given overlapping inputs) keep the first shard's copy.

    Returns:
        the meta dict that was written.
    """
    root = Path(root)
    contract_path = root / "contract.json"
    if not contract_path.exists():
        raise MissingInputError(f"{root} is not a unit dataset being written (no contract.json)")
    contract = UnitContract.load(contract_path)
    rows: dict[str, dict[str, Any]] = {}
    has_durs = True
    n_dupes = 0
    shard_files = sorted(p for p in (root / SHARDS).glob("*.jsonl") if _SHARD_RE.match(p.name))
    for p in shard_files:
        stem = p.name[: -len(".jsonl")]
        has_durs &= (root / SHARDS / f"{stem}.durs.u16").exists()
        for row in _read_jsonl(p):
            if row["id"] in rows:
                n_dupes += 1
                continue
            rows[row["id"]] = row
    ordered = [rows[k] for k in sorted(rows)]
    split_cfg = dict(DEFAULT_SPLIT)
    old_meta = root / META
    if old_meta.exists():  # keep the split chosen when the dataset was first made
        split_cfg.update(json.loads(old_meta.read_text()).get("split", {}))
    if split:
        split_cfg.update(split)
    atomic_write_text(root / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in ordered))
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "contract": contract.to_dict(),
        "n_utterances": len(ordered),
        "n_units_total": int(sum(r["n_units"] for r in ordered)),
        "hours": round(sum(r["duration"] for r in ordered) / 3600, 4),
        "has_durations": bool(has_durs and ordered),
        "n_shards": len(shard_files),
        "duplicates_dropped": n_dupes,
        "split": split_cfg,
        **(extra_meta or {}),
    }
    if (root / ALIGNMENT).exists():  # an aligned dataset says by what, and whether every utterance is
        n_aligned = sum("align_offset" in r for r in ordered)
        meta["alignment"] = {**read_json_object(root / ALIGNMENT), "n_aligned": n_aligned}
        meta["has_alignments"] = bool(ordered) and n_aligned == len(ordered)
    atomic_write_json(root / META, meta)
    return meta


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
@dataclass
class Utterance:
    id: str
    units: np.ndarray
    durations: np.ndarray | None
    source: str
    duration: float


class UnitDataset(Sequence):
    """Random access to a unit dataset (or a view of one: a split, a fraction, a subset).

    Shards are memory-mapped on first use, so opening a 10B-unit dataset reads only its
    manifest.
    """

    def __init__(self, root: str | Path, *, _rows: list[dict] | None = None, _meta: dict | None = None) -> None:
        self.root = Path(root)
        if _meta is None:
            meta_path = self.root / META
            if not meta_path.exists():
                hint = " (shards exist: run the merge step)" if (self.root / SHARDS).exists() else ""
                raise MissingInputError(f"not a unit dataset: {meta_path} is missing{hint}")
            _meta = read_json_object(meta_path)
            fmt = _meta.get("format")
            if fmt != FORMAT:
                raise InputError(f"{meta_path}: format is {fmt!r}, expected {FORMAT!r}")
        self.meta = _meta
        self.contract = UnitContract.from_dict(_meta.get("contract") or {}, source=str(self.root / META))
        self._rows = _rows if _rows is not None else _read_jsonl(self.root / MANIFEST)
        self._maps: dict[tuple[str, str], np.memmap] = {}

    # -- Sequence ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        """The units (uint16 view) of utterance ``i``."""
        row = self._rows[i]
        return self._slice(row, "units")

    def get(self, i: int) -> Utterance:
        row = self._rows[i]
        durs = self._slice(row, "durs") if self.has_durations else None
        return Utterance(row["id"], self._slice(row, "units"), durs, row.get("source", ""), row["duration"])

    def alignment(self, i: int) -> dict[str, Any]:
        """The word-alignment record of utterance ``i`` (docs/contracts.md#word-alignments)."""
        row = self._rows[i]
        off = row.get("align_offset")
        if off is None:
            raise InputError(f"unit dataset {self.root}: utterance {row['id']!r} has no word alignments "
                             "(tokenize with align=tts or align=whisper)")
        path = self.root / SHARDS / f"{row['shard']}{ALIGN_SUFFIX}"
        try:
            with open(path, "rb") as f:
                f.seek(int(off))
                line = f.readline()
        except FileNotFoundError:
            raise MissingInputError(f"unit dataset {self.root}: alignment file {path.name} is missing") from None
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: bad alignment record at byte {off}: {e}") from None
        if not isinstance(rec, dict) or rec.get("id") != row["id"]:
            raise InputError(f"{path}: the record at byte {off} is not utterance {row['id']!r}'s")
        return rec

    def durations(self, i: int) -> np.ndarray:
        if not self.has_durations:
            raise InputError(f"unit dataset {self.root} has no durations (it was made without dedup)")
        return self._slice(self._rows[i], "durs")

    def _slice(self, row: dict, kind: str) -> np.ndarray:
        key = (row["shard"], kind)
        mm = self._maps.get(key)
        if mm is None:
            path = self.root / SHARDS / f"{row['shard']}.{kind}.u16"
            if not path.exists():
                raise MissingInputError(f"unit dataset {self.root}: shard file {path.name} is missing")
            # a shard of empty utterances is a 0-byte file, which np.memmap cannot map
            mm = np.memmap(path, dtype="<u2", mode="r") if path.stat().st_size else np.zeros(0, dtype="<u2")
            self._maps[key] = mm
        off, n = row["offset"], row["n_units"]
        if off + n > mm.size:
            raise InputError(f"unit dataset {self.root}: utterance {row['id']!r} runs past the end of {row['shard']}")
        return mm[off : off + n]

    # -- facts ------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self._rows]

    @property
    def rows(self) -> list[dict]:
        return self._rows

    @property
    def has_durations(self) -> bool:
        return bool(self.meta.get("has_durations"))

    @property
    def has_alignments(self) -> bool:
        """Every utterance has its word alignments."""
        return bool(self.meta.get("has_alignments"))

    @property
    def n_units_total(self) -> int:
        return int(sum(r["n_units"] for r in self._rows))

    @property
    def hours(self) -> float:
        return sum(r["duration"] for r in self._rows) / 3600

    # -- views ------------------------------------------------------------------------------
    def _view(self, rows: list[dict]) -> UnitDataset:
        return UnitDataset(self.root, _rows=rows, _meta=self.meta)

    def split(self, name: str, *, seed: int | None = None, valid: float | None = None, test: float | None = None) -> UnitDataset:
        """The ``train``/``valid``/``test`` view. A row's explicit ``split`` field wins."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose one of {SPLITS}")
        cfg = {**DEFAULT_SPLIT, **self.meta.get("split", {})}
        seed = cfg["seed"] if seed is None else seed
        valid = cfg["valid"] if valid is None else valid
        test = cfg["test"] if test is None else test
        rows = [
            r
            for r in self._rows
            if (r.get("split") or assign_split(r["id"], seed=seed, valid=valid, test=test)) == name
        ]
        return self._view(rows)

    def fraction(self, fraction: float, *, seed: int = 0) -> UnitDataset:
        """The nested, reproducible ``fraction`` subset (1.0 returns everything)."""
        return self._view([r for r in self._rows if in_fraction(r["id"], fraction, seed=seed)])

    def subset(self, indices: Iterable[int]) -> UnitDataset:
        return self._view([self._rows[i] for i in indices])

    def validate(self) -> None:
        """Check every utterance's units are in ``[0, K)``; name the first bad one."""
        for i, row in enumerate(self._rows):
            check_unit_range(self[i], self.contract.n_units, where=f"unit dataset {self.root}: utterance {row['id']!r}")

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]


# ---------------------------------------------------------------------------------------
# line formats of other toolkits
# ---------------------------------------------------------------------------------------
LINE_FORMATS = ("plain", "ids", "jsonl")


def export_lines(ds: UnitDataset, path: str | Path, *, fmt: str = "ids", key: str = "units", expand_durations: bool = False) -> int:
    """Write one utterance per line.

    Formats:
        ``plain``: ``u1 u2 u3`` (GSLM / fairseq language-model text).
        ``ids``:   ``<id>\\t<u1 u2 u3>``.
        ``jsonl``: ``{"id": ..., "<key>": "u1 u2 u3", "duration": [...]}`` (speech-resynthesis style).
    """
    if fmt not in LINE_FORMATS:
        raise ConfigError(f"unknown line format {fmt!r}; choose one of {LINE_FORMATS}")
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i in range(len(ds)):
            utt = ds.get(i)
            units = utt.units
            if expand_durations and utt.durations is not None:
                units = expand(units, utt.durations)
            text = " ".join(map(str, units.tolist()))
            if fmt == "plain":
                f.write(text + "\n")
            elif fmt == "ids":
                f.write(f"{utt.id}\t{text}\n")
            else:
                rec: dict[str, Any] = {"id": utt.id, key: text}
                if utt.durations is not None and not expand_durations:
                    rec["duration"] = utt.durations.tolist()
                f.write(json.dumps(rec) + "\n")
            n += 1
    return n


def import_lines(
    path: str | Path,
    out_dir: str | Path,
    contract: UnitContract,
    *,
    fmt: str = "ids",
    key: str = "units",
    raw: bool = True,
) -> UnitDataset:
    """Read a one-utterance-per-line file into a unit dataset.

    Args:
        raw: the lines hold frame-level units (dedup is applied if the contract says so);
            with ``False`` they are stored as they are.
    """
    if fmt not in LINE_FORMATS:
        raise ConfigError(f"unknown line format {fmt!r}; choose one of {LINE_FORMATS}")
    path = Path(path)
    with UnitShardWriter(out_dir, contract) as w:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            durations = None
            try:
                if fmt == "plain":
                    utt_id, text = f"{path.stem}-{lineno:08d}", line
                elif fmt == "ids":
                    utt_id, _, text = line.partition("\t")
                    if not _:
                        utt_id, _, text = line.partition(" ")
                else:
                    rec = json.loads(line)
                    utt_id = str(rec.get("id") or rec.get("audio") or f"{path.stem}-{lineno:08d}")
                    text = rec[key]
                    if "duration" in rec and isinstance(rec["duration"], list):
                        durations = np.asarray(rec["duration"], dtype=np.int64)
                units = np.asarray([int(t) for t in str(text).split()], dtype=np.int64)
            except (ValueError, KeyError, json.JSONDecodeError) as e:
                raise InputError(f"{path}:{lineno}: cannot parse a {fmt!r} line: {e}") from None
            w.add(utt_id, units, raw=raw and durations is None, durations=durations, source=str(path))
    merge_shards(out_dir)
    return UnitDataset(out_dir)


def _write_u16(path: Path, values: np.ndarray) -> None:
    """Write little-endian uint16 through a Python file: ``ndarray.tofile`` ignores a failed
    final flush, so on a full disk it would leave a short shard and report success."""
    with open(path, "wb") as f:
        f.write(memoryview(np.ascontiguousarray(values, dtype="<u2")))


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: bad JSON line: {e}") from None
    return out
