"""Benchmark inputs as units: audio tokenized on the fly (and cached), or pre-tokenized.

A benchmark names its items by audio path. :class:`AudioUnits` turns each file into units
with the model's tokenizer (``twist.tokenizer.UnitTokenizer``) and caches the frame-level
units on disk, keyed by the file's *content* (SHA-256 of its bytes) and a fingerprint of the
tokenizer's identity (encoder and k-means fingerprints, layer, frame rate, K, sample rate).
Identical audio is encoded once, whatever its path: the sSC and tSC positives of a story
are the same recording, and a copied or moved benchmark still hits the cache. A second run
of any benchmark, or of another model with the same tokenizer, reads the cache and skips
the encoder entirely; a killed run keeps every file it finished (each cache entry is
written atomically). :meth:`AudioUnits.clip_units` does the same for parts of files (a story's
spoken context, its spoken ending), keyed by the content and the clip's bounds.

:class:`PretokenizedUnits` reads units made elsewhere: a twist unit dataset directory (its
contract is checked against the model's) or a ``<id>\\t<u1 u2 ...>`` line file. An audio path
is looked up by its path relative to the benchmark root without extension, then with it,
then by its bare stem.

Both return units in the model's final form: runs collapsed when the contract says
``dedup`` (collapsing is idempotent, so units that are already deduplicated pass through).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from twist.atomic import atomic_path
from twist.contract import IDENTITY_FIELDS, UnitContract, check_unit_range, fingerprint_arrays, sha256_file
from twist.errors import InputError, MissingInputError
from twist.rejects import RejectsLog
from twist.units import dedup


class Tokenizer(Protocol):
    """What eval needs from ``twist.tokenizer.UnitTokenizer``."""

    contract: UnitContract

    def encode_file(self, path: str | Path) -> np.ndarray: ...

    # clips (AudioUnits.clip_units) also need ``sample_rate`` and ``encode(wav)`` or ``encode_batch(wavs)``


def final_units(units: np.ndarray, contract: UnitContract, *, name: str = "units") -> np.ndarray:
    """Check the range and apply the contract's dedup."""
    u = np.asarray(units, dtype=np.int64).reshape(-1)
    check_unit_range(u, contract.n_units, where=name)
    if contract.dedup:
        u = dedup(u)[0]
    return u


def tokenizer_fingerprint(contract: UnitContract) -> str:
    """Identity of a tokenizer's frame-level output (dedup excluded: the cache holds raw frames)."""
    d = contract.to_dict()
    return fingerprint_arrays(extra=json.dumps({k: d[k] for k in IDENTITY_FIELDS}, sort_keys=True, default=str))


def content_key(path: str | Path) -> str:
    """SHA-256 of a file's bytes: the cache key of its units."""
    return sha256_file(path)


def default_cache_dir() -> Path:
    root = os.environ.get("TWIST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "twist"
    )
    return Path(root) / "eval_units"


class AudioUnits:
    """Audio -> final-form units with the model's tokenizer, cached on disk.

    Args:
        tokenizer: an object with ``.contract`` and ``.encode_file(path)`` (frame-level
            units, no dedup); when it also has ``.encode_batch`` and ``.sample_rate``, files
            are read with :func:`twist.audio.load_audio` and encoded ``batch_size`` at a time.
        cache_dir: cache root; ``None`` disables caching.
        batch_size: files per tokenizer call.
    """

    def __init__(self, tokenizer: Tokenizer, *, cache_dir: str | Path | None = None, batch_size: int = 16,
                 progress: bool = False) -> None:
        self.tokenizer = tokenizer
        self.contract: UnitContract = tokenizer.contract
        self.fingerprint = tokenizer_fingerprint(self.contract)
        self.cache_dir = Path(cache_dir) / self.fingerprint if cache_dir is not None else None
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.n_cache_hits = 0
        self.n_encoded = 0
        self.n_same_content = 0  # files whose bytes another file of this run already had
        # content hash -> frame-level units, for every file this object has turned into units
        self._frames: dict[str, np.ndarray] = {}

    def _cache_path(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / key[:2] / f"{key}.npy"

    def _store(self, cache: Path | None, frames: np.ndarray) -> None:
        if cache is None:
            return
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(frames).astype(np.uint16 if self.contract.n_units <= 65535 else np.int64))

    def _lookup(self, paths: Iterable[str | Path], rejects: RejectsLog | None
                ) -> tuple[dict[str, np.ndarray], list[tuple[Path, str]], dict[str, list[Path]]]:
        """Units already known (this run or the disk cache), the files still to encode, and, per
        content key, every file sharing those bytes (encoded once)."""
        from twist.audio import BadAudioError, check_audio_file

        out: dict[str, np.ndarray] = {}
        todo: list[tuple[Path, str]] = []
        waiting: dict[str, list[Path]] = {}
        for p in dict.fromkeys(Path(x) for x in paths):
            if not p.exists():
                raise MissingInputError(f"audio file not found: {p}")
            try:  # before hashing (a FIFO would block) and before the cache (it may hold a bad file's units)
                check_audio_file(p)
            except BadAudioError as e:
                if rejects is not None:
                    rejects.add(p, e.reason)
                continue
            key = content_key(p)
            if key in self._frames:
                out[str(p)] = final_units(self._frames[key], self.contract, name=str(p))
                self.n_same_content += 1
                continue
            if key in waiting:
                waiting[key].append(p)
                self.n_same_content += 1
                continue
            cache = self._cache_path(key)
            if cache is not None and cache.is_file():
                try:
                    frames = np.load(cache)
                    out[str(p)] = final_units(frames, self.contract, name=str(p))
                    self._frames[key] = frames
                    self.n_cache_hits += 1
                    continue
                except (ValueError, OSError):
                    pass  # a torn or stale entry: re-encode it
            waiting[key] = [p]
            todo.append((p, key))
        return out, todo, waiting

    def _encode(self, files: list[Path], rejects: RejectsLog | None) -> list[np.ndarray | None]:
        """Frame-level units per file (``None`` for one that cannot be decoded, logged to ``rejects``)."""
        from twist.audio import BadAudioError, load_audio

        def reject(p: Path, e: BadAudioError) -> None:
            if rejects is not None:
                rejects.add(p, e.reason)

        if not self._batched:
            frames: list[np.ndarray | None] = []
            for p in files:
                try:
                    frames.append(self.tokenizer.encode_file(p))
                except BadAudioError as e:
                    frames.append(None)
                    reject(p, e)
            return frames
        wavs, ok = [], []
        for p in files:
            try:
                wavs.append(load_audio(p, int(self.tokenizer.sample_rate)))
                ok.append(True)
            except BadAudioError as e:
                ok.append(False)
                reject(p, e)
        encoded = iter(self.tokenizer.encode_batch(wavs)) if wavs else iter(())
        return [next(encoded) if good else None for good in ok]

    @property
    def _batched(self) -> bool:
        return hasattr(self.tokenizer, "encode_batch") and hasattr(self.tokenizer, "sample_rate")

    def units(self, paths: Iterable[str | Path], rejects: RejectsLog | None = None,
              desc: str = "tokenizing") -> dict[str, np.ndarray]:
        """Final-form units for each readable file, keyed by ``str(path)``.

        A file that cannot be decoded is logged to ``rejects`` (which raises in strict mode)
        and left out; a missing file raises ``MissingInputError`` naming it.
        """
        out, todo, waiting = self._lookup(paths, rejects)
        if not todo:
            return out
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=desc, unit="file", leave=False)
        step = self.batch_size if self._batched else 1
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            frames = self._encode([p for p, _ in chunk], rejects)
            for (p, key), f in zip(chunk, frames):
                if f is None:
                    for twin in waiting[key][1:]:  # same bytes, same verdict
                        if rejects is not None:
                            rejects.add(twin, f"same audio as {p}, which could not be read")
                    continue
                f = np.asarray(f)
                if f.size == 0:
                    for same in waiting[key]:
                        if rejects is not None:
                            rejects.add(same, "tokenizer returned no units (audio too short?)")
                    continue
                self._store(self._cache_path(key), f)
                self._frames[key] = f
                for same in waiting[key]:
                    out[str(same)] = final_units(f, self.contract, name=str(same))
                self.n_encoded += 1
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return out

    def clip_units(self, clips: Iterable[tuple[str | Path, float, float | None]], rejects: RejectsLog | None = None,
                   desc: str = "tokenizing") -> dict[tuple[str, float, float | None], np.ndarray]:
        """Final-form units of parts of files, keyed by ``(str(path), start, end)``.

        A clip is ``(path, start, end)`` in seconds from the file's start (``end`` None: to its
        end), cut from the audio as :func:`twist.audio.load_audio` reads it at the tokenizer's
        sample rate and encoded on its own (cross-modal StoryCloze reads a story's spoken context
        and its spoken ending apart). Clips are cached as files are, keyed by the file's content
        and the clip's bounds in samples. An unreadable file, or a clip with no audio in it, is
        logged to ``rejects`` and left out; a missing file raises ``MissingInputError``.
        """
        import hashlib

        from twist.audio import BadAudioError, check_audio_file, load_audio

        sr = int(self.tokenizer.sample_rate)
        out: dict[tuple[str, float, float | None], np.ndarray] = {}
        todo: dict[Path, list[tuple[tuple[str, float, float | None], int, int | None, str]]] = {}
        digests: dict[Path, str | None] = {}
        for path, start, end in clips:
            p = Path(path)
            clip = (str(p), start, end)
            if clip in out:
                continue
            if p not in digests:
                if not p.exists():
                    raise MissingInputError(f"audio file not found: {p}")
                try:
                    check_audio_file(p)
                    digests[p] = content_key(p)
                except BadAudioError as e:
                    digests[p] = None
                    if rejects is not None:
                        rejects.add(p, e.reason)
            if digests[p] is None:
                continue
            s0, s1 = int(round(start * sr)), None if end is None else int(round(end * sr))
            key = hashlib.sha256(f"{digests[p]}|{s0}|{s1}".encode()).hexdigest()
            frames = self._frames.get(key)
            cache = self._cache_path(key)
            if frames is None and cache is not None and cache.is_file():
                try:
                    frames = self._frames[key] = np.load(cache)
                    self.n_cache_hits += 1
                except (ValueError, OSError):
                    frames = None  # a torn or stale entry: re-encode it
            if frames is not None:
                out[clip] = final_units(frames, self.contract, name=f"{p} [{start}, {end}) s")
                continue
            todo.setdefault(p, []).append((clip, s0, s1, key))
        bar = None
        if self.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=sum(len(v) for v in todo.values()), desc=desc, unit="clip", leave=False)
        for p, wanted in todo.items():
            try:
                wav = load_audio(p, sr)
            except BadAudioError as e:
                if rejects is not None:
                    rejects.add(p, e.reason)
                continue
            cut = []
            for clip, s0, s1, key in wanted:
                w = wav[s0:s1]
                if w.size == 0:
                    if rejects is not None:
                        rejects.add(f"{p} [{clip[1]}, {clip[2]}) s", f"the clip is empty: the file is {wav.size / sr:.3f} s")
                    continue
                cut.append((clip, key, w))
            for (clip, key, _), f in zip(cut, self._encode_waveforms([w for *_, w in cut])):
                f = np.asarray(f)
                if f.size == 0:
                    if rejects is not None:
                        rejects.add(f"{p} [{clip[1]}, {clip[2]}) s", "tokenizer returned no units (clip too short?)")
                    continue
                self._store(self._cache_path(key), f)
                self._frames[key] = f
                out[clip] = final_units(f, self.contract, name=f"{p} [{clip[1]}, {clip[2]}) s")
                self.n_encoded += 1
            if bar is not None:
                bar.update(len(wanted))
        if bar is not None:
            bar.close()
        return out

    def _encode_waveforms(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Frame-level units of waveforms at the tokenizer's sample rate, ``batch_size`` at a time."""
        if not hasattr(self.tokenizer, "encode_batch"):
            return [self.tokenizer.encode(w) for w in wavs]
        out: list[np.ndarray] = []
        for start in range(0, len(wavs), self.batch_size):
            out += list(self.tokenizer.encode_batch(wavs[start : start + self.batch_size]))
        return out


class PretokenizedUnits:
    """Units made ahead of time: a unit dataset directory or an ``<id>\\t<units>`` line file.

    Args:
        source: the unit dataset dir or the line file.
        contract: the model's contract; a unit dataset's own contract must match it.
    """

    def __init__(self, source: str | Path, contract: UnitContract) -> None:
        self.source = Path(source)
        self.contract = contract
        self._table: Mapping[str, Any]
        if self.source.is_dir():
            from twist.units import UnitDataset

            ds = UnitDataset(self.source)
            contract.check_same_units(ds.contract, mine="model", theirs=f"pre-tokenized units {self.source}")
            self._ds = ds
            self._table = {uid: i for i, uid in enumerate(ds.ids)}
        elif self.source.is_file():
            self._ds = None
            table: dict[str, np.ndarray] = {}
            for lineno, line in enumerate(self.source.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                key, sep, text = line.partition("\t")
                if not sep:
                    key, _, text = line.partition(" ")
                try:
                    table[key.strip()] = np.asarray([int(t) for t in text.split()], dtype=np.int64)
                except ValueError:
                    raise InputError(f"{self.source}:{lineno}: expected '<id>\\t<u1 u2 ...>'") from None
            self._table = table
        else:
            raise MissingInputError(f"pre-tokenized units not found: {self.source}")
        if not self._table:
            raise InputError(f"pre-tokenized units {self.source} hold no utterances")

    def _lookup(self, path: Path, root: Path) -> Any:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = Path(path.name)
        for key in (rel.with_suffix("").as_posix(), rel.as_posix(), path.stem):
            if key in self._table:
                return self._table[key]
        return None

    def units(self, paths: Iterable[str | Path], root: str | Path, rejects: RejectsLog | None = None) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        root = Path(root)
        for x in paths:
            p = Path(x)
            hit = self._lookup(p, root)
            if hit is None:
                raise InputError(
                    f"pre-tokenized units {self.source} have no entry for {p} "
                    f"(looked up '{p.stem}' and its path relative to {root})"
                )
            raw = self._ds[hit] if self._ds is not None else hit
            out[str(p)] = final_units(raw, self.contract, name=f"{self.source}:{p.stem}")
        return out
