"""The ``twist-tokenize`` run: audio files -> a unit dataset, resumable and sharded.

Steps (each rank does its own share; see ``docs/tokenize.md``):

1. **List inputs** from an audio directory (recursive, by extension) or a manifest: a fairseq
   TSV (first line the root dir, rows ``relpath<TAB>num_samples``) or JSONL rows
   (``{"path": ..., "id": ...}``). Utterance ids are the relative paths without extension.
2. **Fit** (rank 0): encode a seeded sample of files and fit K centroids with faiss on a
   bounded sample of frames; save the tokenizer to ``out_dir/tokenizer``. Other ranks wait
   for it to appear.
3. **Apply**: rank ``r`` of ``w`` takes every ``w``-th input. Files are sorted by length and
   grouped into batches of similar length (less padding; the encoders are batch-invariant
   anyway), decoded by DataLoader workers, encoded, assigned, and written with
   :class:`twist.units.UnitShardWriter`, which commits a shard at a time. A rerun skips
   committed and rejected ids, so a killed run resumes without duplicates or losses.
4. **Merge**: when every rank has written its done marker, the last one to finish gathers
   the shards into ``manifest.jsonl``/``meta.json`` and the per-rank rejects into
   ``rejects.jsonl``. Merging again gives the same files.

With ``align=tts|whisper`` each utterance is also word-aligned in step 3
(:mod:`twist.tokenizer.aligners`) and its record committed with its units in the same shard
(:class:`twist.units.UnitShardWriter`); an utterance that cannot be aligned is a reject.

Bad inputs (unreadable, empty, too short, NaN) go to the rejects log with their reason;
``strict=true`` fails on the first one instead.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.atomic import disk_full_guard
from twist.audio import DEFAULT_EXTENSIONS, BadAudioError, audio_info, find_audio, load_audio
from twist.console import quiet_third_party_progress, say
from twist.contract import sha256_file
from twist.device import resolve_device
from twist.dist import rank_and_world
from twist.errors import ConfigError, InputError, MissingInputError, RunExistsError
from twist.parent_watch import die_with_parent
from twist.rejects import RejectsLog
from twist.tokenizer.config import TokenizeRunConfig
from twist.tokenizer.encoders import build_encoder
from twist.tokenizer.kmeans import fit_kmeans
from twist.tokenizer.tokenizer import TOKENIZER_FILE, UnitTokenizer
from twist.units import UnitShardWriter, committed_rows, merge_shards

TOKENIZER_SUBDIR = "tokenizer"
REJECTS = "rejects.jsonl"
DONE_DIR = ".done"


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioItem:
    id: str
    path: str
    n_samples: int | None = None  # from a manifest; None = read the header
    sample_rate: int | None = None
    text: str | None = None  # its known transcript (a JSONL manifest's "text", or input.transcripts)


def _id_for(rel: Path) -> str:
    return rel.with_suffix("").as_posix()


def list_inputs(
    *,
    audio_dir: str | None = None,
    manifest: str | None = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
) -> list[AudioItem]:
    """Every input, sorted by id. Exactly one of ``audio_dir`` and ``manifest`` is given."""
    if bool(audio_dir) == bool(manifest):
        raise ConfigError("give exactly one of input.audio_dir and input.manifest")
    items: list[AudioItem] = []
    if audio_dir:
        root = Path(audio_dir)
        for p in find_audio(root, extensions):
            items.append(AudioItem(_id_for(p.relative_to(root)), str(p)))
    else:
        mpath = Path(manifest)  # type: ignore[arg-type]
        if not mpath.exists():
            raise MissingInputError(f"input manifest not found: {mpath}")
        lines = mpath.read_text(encoding="utf-8").splitlines()
        if mpath.suffix == ".jsonl" or (lines and lines[0].lstrip().startswith("{")):
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    rel = rec.get("path") or rec.get("audio") or rec["file"]
                except (json.JSONDecodeError, KeyError, AttributeError):
                    raise InputError(f"{mpath}:{n}: expected a JSON object with a 'path' field") from None
                p = Path(rel) if Path(rel).is_absolute() else mpath.parent / rel
                uid = str(rec.get("id") or _id_for(Path(rel)))
                ns = rec.get("num_samples")
                text = rec.get("text")
                items.append(AudioItem(uid, str(p), int(ns) if ns is not None else None,
                                       text=str(text) if text is not None else None))
        else:  # fairseq TSV: root line, then relpath \t num_samples
            if not lines:
                raise InputError(f"{mpath}: empty manifest (a fairseq TSV starts with the root directory)")
            root = Path(lines[0].strip())
            if not root.is_absolute():
                root = mpath.parent / root
            for n, line in enumerate(lines[1:], 2):
                if not line.strip():
                    continue
                parts = line.split("\t")
                try:
                    ns = int(parts[1]) if len(parts) > 1 and parts[1].strip() else None
                except ValueError:
                    raise InputError(f"{mpath}:{n}: num_samples {parts[1]!r} is not an integer") from None
                items.append(AudioItem(_id_for(Path(parts[0])), str(root / parts[0]), ns))
    seen: dict[str, str] = {}
    for it in items:
        if it.id in seen:
            raise InputError(f"two inputs map to the utterance id {it.id!r}: {seen[it.id]} and {it.path}")
        seen[it.id] = it.path
    return sorted(items, key=lambda it: it.id)


# ---------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------
def length_batches(lengths: Sequence[float], *, max_seconds: float, max_items: int) -> list[list[int]]:
    """Group indices of similar length: sorted by length, each batch's padded size
    (``len(batch) * longest``) stays under ``max_seconds`` and ``max_items``."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = max(lengths[i], *(lengths[j] for j in cur)) if cur else lengths[i]
        if cur and ((len(cur) + 1) * longest > max_seconds or len(cur) >= max_items):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


class _BatchLoader(torch.utils.data.Dataset):
    """Decodes one batch of files per item, in DataLoader workers."""

    def __init__(self, items: Sequence[AudioItem], batches: Sequence[Sequence[int]], sample_rate: int,
                 min_seconds: float, max_seconds: float | None) -> None:
        self.items, self.batches = items, batches
        self.sample_rate, self.min_seconds, self.max_seconds = sample_rate, min_seconds, max_seconds

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> list[tuple[AudioItem, np.ndarray | None, str | None, dict[str, Any]]]:
        out = []
        for i in self.batches[b]:
            it = self.items[i]
            seen = source_fingerprint(it.path)  # before reading: never newer than what was decoded
            try:
                wav = load_audio(it.path, self.sample_rate, min_seconds=self.min_seconds, max_seconds=self.max_seconds)
                out.append((it, wav, None, seen))
            except BadAudioError as e:
                out.append((it, None, e.reason, seen))
        return out


def _identity(x: Any) -> Any:
    return x


# ---------------------------------------------------------------------------------------
# changed inputs
# ---------------------------------------------------------------------------------------
def source_fingerprint(path: str | Path) -> dict[str, Any]:
    """What an input file was when it was read: size, mtime and SHA-256, kept with its units
    (or its reject) so that a rerun notices a file that changed since. ``source_size`` is
    ``None`` for what is not a regular file (a FIFO, a broken link), which is never hashed."""
    try:
        st = os.stat(path)
    except OSError:
        return {"source_size": None}
    if not stat.S_ISREG(st.st_mode):
        return {"source_size": None}
    try:
        digest = sha256_file(path)
    except OSError:
        return {"source_size": None}
    return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns, "source_sha256": digest}


def source_change(path: str | Path, rec: dict[str, Any]) -> str | None:
    """How ``path`` differs from the file ``rec`` (a shard row or a reject) was made from, or
    ``None`` if it does not (or ``rec`` predates the record). The bytes are hashed only when
    the size is the same and the mtime is not: a copy that kept the bytes is the same input."""
    if "source_size" not in rec:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None  # gone or a broken link now: nothing of it could be tokenized anyway
    if rec["source_size"] is None:
        return "it was not a readable file then and is one now" if stat.S_ISREG(st.st_mode) else None
    if not stat.S_ISREG(st.st_mode):
        return "it is no longer a regular file"
    if st.st_size != rec["source_size"]:
        return f"size {rec['source_size']} -> {st.st_size} bytes"
    if st.st_mtime_ns != rec.get("source_mtime_ns") and sha256_file(path) != rec.get("source_sha256"):
        return "same size, other bytes (SHA-256 differs)"
    return None


def refuse_changed_inputs(out_dir: Path, items: Sequence[AudioItem]) -> None:
    """Refuse a rerun into ``out_dir`` whose inputs changed since it tokenized (or rejected)
    them: resuming would keep units of the old audio beside units of the new.

    Raises:
        InputError: naming the first changed file, what changed, and how many more did.
    """
    by_id = {it.id: it.path for it in items}
    changed: list[str] = []

    def check(rec: dict[str, Any], verb: str) -> None:
        path = by_id.get(str(rec.get("id")))
        why = source_change(path, rec) if path is not None else None
        if why:
            changed.append(f"{path} changed since {verb} ({why})")

    for row in committed_rows(out_dir):
        check(row, f"it was tokenized into {out_dir}")
    for p in sorted((out_dir / "rejects").glob("r*.jsonl")):
        for rec in RejectsLog.read(p):
            check(rec, f"{out_dir} rejected it")
    if changed:
        more = f" (and {len(changed) - 1} more changed inputs)" if len(changed) > 1 else ""
        raise InputError(f"{changed[0]}{more}; tokenize into a new out_dir: resuming would mix units of "
                         "the old and the new audio")


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
def _inputs(s: TokenizeRunConfig) -> list[AudioItem]:
    items = list_inputs(audio_dir=s.input.audio_dir, manifest=s.input.manifest, extensions=s.input.extensions)
    if s.input.transcripts:
        from twist.tokenizer.aligners import read_transcripts, transcript_for

        by_id, by_path = read_transcripts(s.input.transcripts)
        items = [it if it.text is not None else dataclasses.replace(it, text=transcript_for(it.id, it.path, by_id, by_path))
                 for it in items]
    return items


def _log(msg: str, rank: int = 0) -> None:
    if rank == 0:
        say(f"[twist-tokenize] {msg}")


def fit_tokenizer(s: TokenizeRunConfig, items: Sequence[AudioItem] | None = None) -> UnitTokenizer:
    """Fit k-means on a seeded sample of the inputs and save the tokenizer (rank 0's job)."""
    items = list(items if items is not None else _inputs(s))
    device = resolve_device(s.device)
    spec = s.tokenizer.encoder
    if s.tokenizer.frame_rate is not None and spec.name == "hubert" and spec.expected_frame_rate is None:
        spec = dataclasses.replace(spec, expected_frame_rate=s.tokenizer.frame_rate)
    encoder = build_encoder(spec, device=device)
    if s.tokenizer.frame_rate is not None and not math.isclose(encoder.frame_rate, float(s.tokenizer.frame_rate)):
        raise ConfigError(f"tokenizer config says frame_rate={s.tokenizer.frame_rate} but the {encoder.name} encoder runs at {encoder.frame_rate:g} Hz")
    rng = random.Random(s.seed)
    sample = list(items)
    rng.shuffle(sample)
    gen = np.random.default_rng(s.seed)
    chunks: list[np.ndarray] = []
    n_frames = 0
    used = 0
    from tqdm import tqdm

    # encoding the sample is most of a short run's fit: show it
    bar = tqdm(total=min(len(sample), s.fit.max_files), desc="k-means fit", unit="file", dynamic_ncols=True,
               disable=not (s.progress and rank_and_world()[0] == 0))
    for it in sample:
        if used >= s.fit.max_files or n_frames >= s.fit.max_frames:
            break
        bar.update(1)
        try:
            wav = load_audio(it.path, encoder.sample_rate, min_seconds=s.min_seconds, max_seconds=s.max_seconds)
        except BadAudioError:
            continue  # the apply step logs it as a reject
        f = encoder.encode(wav).cpu().numpy()
        if f.shape[0] == 0:
            continue
        if f.shape[0] > s.fit.frames_per_file:  # many files, few frames each: more speakers/contexts
            f = f[np.sort(gen.choice(f.shape[0], s.fit.frames_per_file, replace=False))]
        chunks.append(f)
        n_frames += f.shape[0]
        used += 1
        bar.set_postfix_str(f"{n_frames} frames")
    bar.total = bar.n  # stopped early at fit.max_frames: the bar ends full
    bar.refresh()
    bar.close()
    if not chunks:
        raise InputError("no usable audio to fit k-means on (every sampled input was rejected)")
    feats = np.concatenate(chunks)[: s.fit.max_frames]
    _log(f"fitting k-means K={s.tokenizer.n_units} on {feats.shape[0]} frames from {used} files (dim {feats.shape[1]})")
    t0 = time.time()
    q = fit_kmeans(feats, s.tokenizer.n_units, niter=s.fit.niter, seed=s.seed)
    q.info.update({"n_files": used, "fit_seconds": round(time.time() - t0, 2)})
    tok = UnitTokenizer(encoder, q, dedup=s.dedup)
    tok.save(s.tokenizer_path)
    _log(f"tokenizer saved to {s.tokenizer_path} ({tok.contract.encoder}, fingerprint {tok.contract.encoder_fingerprint})")
    return tok


def _load_existing_tokenizer(s: TokenizeRunConfig, device: torch.device) -> UnitTokenizer:
    tok = UnitTokenizer.load(s.tokenizer_path, device=device)
    if tok.n_units != s.tokenizer.n_units:
        raise ConfigError(f"existing tokenizer {s.tokenizer_path} has K={tok.n_units}, the config asks for K={s.tokenizer.n_units}")
    want = s.tokenizer.encoder.name
    have = UnitTokenizer.read_spec(s.tokenizer_path)["encoder"]
    if want != have.get("name"):
        raise ConfigError(f"existing tokenizer {s.tokenizer_path} uses encoder {have.get('name')!r}, the config asks for {want!r}")
    if tok.contract.dedup != s.dedup:
        tok = UnitTokenizer(tok.encoder, tok.quantizer, dedup=s.dedup)
    return tok


def _wait_for(path: Path, timeout_s: float, what: str) -> None:
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout_s:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what} ({path}); did rank 0 fail?")
        time.sleep(1.0)


def _read_rejected_ids(out_dir: Path) -> set[str]:
    ids: set[str] = set()
    for p in sorted((out_dir / "rejects").glob("r*.jsonl")):
        ids.update(str(r.get("id")) for r in RejectsLog.read(p) if r.get("id") is not None)
    return ids


def merge_outputs(out_dir: str | Path, *, split: dict[str, Any] | None = None) -> dict[str, Any]:
    """Gather shards and per-rank rejects into the final dataset files. Idempotent."""
    from twist.atomic import atomic_write_text

    out_dir = Path(out_dir)
    meta = merge_shards(out_dir, split=split, extra_meta={"tokenizer": TOKENIZER_SUBDIR})
    rows: dict[str, dict] = {}
    for p in sorted((out_dir / "rejects").glob("r*.jsonl")):
        for r in RejectsLog.read(p):
            rows.setdefault(str(r.get("id", r.get("item"))), r)
    atomic_write_text(out_dir / REJECTS, "".join(json.dumps(rows[k], sort_keys=True) + "\n" for k in sorted(rows)))
    meta["n_rejected"] = len(rows)
    return meta


def apply_tokenizer(s: TokenizeRunConfig, tok: UnitTokenizer, items: Sequence[AudioItem]) -> dict[str, Any]:
    """Tokenize this rank's share of ``items`` into ``out_dir`` shards (resumable)."""
    from tqdm import tqdm

    from twist.alignment import AlignmentRejected
    from twist.tokenizer.aligners import build_aligner

    rank, world = rank_and_world()
    out_dir = Path(s.out_dir)
    mine = list(items)[rank::world]
    aligner = build_aligner(s.align, transcripts=s.input.transcripts)
    # with known transcripts (some or all items), each utterance is matched to its own
    with_text = aligner is not None and aligner.name == "whisper" and any(it.text is not None for it in items)
    writer = UnitShardWriter(out_dir, tok.contract, rank=rank, shard_items=s.shard_items,
                             alignment=aligner.info if aligner is not None else None)
    rejected_before = _read_rejected_ids(out_dir)
    todo = [it for it in mine if it.id not in writer.done_ids and it.id not in rejected_before]
    stats = {"rank": rank, "world": world, "assigned": len(mine), "skipped_done": len(mine) - len(todo),
             "ok": 0, "rejected": 0, "audio_seconds": 0.0}
    rejects = RejectsLog(out_dir / "rejects" / f"r{rank:04d}.jsonl", stage="tokenize", strict=s.strict)
    # lengths for bucketing: manifest num_samples, else the file header (cheap, no decoding)
    lengths: list[float] = []
    ready: list[AudioItem] = []
    early_rejects = 0
    for it in todo:
        if it.n_samples is not None:
            sec = it.n_samples / float(it.sample_rate or tok.sample_rate)
        else:
            try:
                frames, sr, _ = audio_info(it.path)
            except BadAudioError as e:
                rejects.add(it.path, e.reason, id=it.id, **source_fingerprint(it.path))
                stats["rejected"] += 1
                early_rejects += 1
                continue
            sec = frames / sr
        lengths.append(sec)
        ready.append(it)
    batches = length_batches(lengths, max_seconds=s.batch.max_seconds, max_items=s.batch.max_items)
    loader = torch.utils.data.DataLoader(
        _BatchLoader(ready, batches, tok.sample_rate, s.min_seconds, s.max_seconds),
        batch_size=None, shuffle=False, num_workers=s.num_workers, collate_fn=_identity,
        prefetch_factor=4 if s.num_workers > 0 else None, persistent_workers=False,
        # a kill -9 of this process must not leave decoders behind (reparented, holding files)
        worker_init_fn=functools.partial(die_with_parent, parent=os.getpid()) if s.num_workers > 0 else None,
    )
    t0 = time.time()
    # the bar counts every input of this rank: done by an earlier run, rejected early, or decoded here
    bar = tqdm(total=len(mine), initial=stats["skipped_done"] + early_rejects, unit="file", desc=f"tokenize r{rank}",
               disable=not (s.progress and rank == 0), dynamic_ncols=True)
    try:
        for batch in loader:
            good = [(it, w, seen) for it, w, err, seen in batch if err is None]
            for it, _, err, seen in batch:
                if err is not None:
                    rejects.add(it.path, err, id=it.id, **seen)
                    stats["rejected"] += 1
            units = tok.encode_batch_tensors([w for _, w, _ in good]) if good else []
            for (it, w, seen), u in zip(good, units):
                if u.numel() == 0:
                    rejects.add(it.path, f"too short for the encoder ({w.size} samples give no frame)", id=it.id, **seen)
                    stats["rejected"] += 1
                    continue
                sec = w.size / tok.sample_rate
                record = None
                if aligner is not None:
                    try:
                        if with_text and it.text is None:
                            raise AlignmentRejected("no transcript for this utterance (input.transcripts or the "
                                                    "manifest's text) to match Whisper's words to")
                        record = aligner.align(it.id, it.path, w, tok.sample_rate, text=it.text,
                                               source_sha256=seen.get("source_sha256"))
                    except AlignmentRejected as e:
                        rejects.add(it.path, f"align={aligner.name}: {e}", id=it.id, **seen)
                        stats["rejected"] += 1
                        continue
                writer.add(it.id, u.cpu().numpy(), source=it.path, duration=sec, extra=seen, alignment=record)
                stats["ok"] += 1
                stats["audio_seconds"] += sec
            bar.update(len(batch))
            el = max(time.time() - t0, 1e-9)
            sec_done = stats["audio_seconds"]
            bar.set_postfix_str(f"{sec_done / 3600 / el:.4f} audio-h/s ({sec_done / el:.1f} audio-s/s)")
        writer.close()
    finally:
        bar.close()
        rejects.close()
    stats["elapsed_s"] = round(time.time() - t0, 3)
    return stats


def run_tokenize(s: TokenizeRunConfig, *, mode: str = "fit+apply",
                 on_start: Callable[[], Any] | None = None) -> dict[str, Any]:
    """The whole ``twist-tokenize`` run for this rank; returns a summary dict.

    ``on_start`` is called once the inputs are validated, right before the first write to
    ``out_dir`` (the CLI writes the run's records there then).
    """
    if mode not in ("fit", "apply", "fit+apply", "merge"):
        raise ConfigError(f"unknown tokenize mode {mode!r}; choose fit, apply, fit+apply, merge")
    out_dir = Path(s.out_dir)
    rank, world = rank_and_world()
    if mode == "merge":
        # A standalone merge keeps the split recorded in meta.json when the dataset was made:
        # the config's split here is usually just its default, and re-splitting would change
        # train/valid/test silently (merging must give the same files).
        if not out_dir.is_dir():
            raise MissingInputError(f"mode=merge: {out_dir} does not exist (run mode=apply into it first)")
        keep = (out_dir / "meta.json").exists()
        if on_start is not None:
            on_start()
        meta = merge_outputs(out_dir, split=None if keep else dataclasses.asdict(s.split))
        _log(f"merged {meta['n_utterances']} utterances ({meta['hours']} h), {meta['n_rejected']} rejects -> {out_dir}")
        return meta
    if not s.progress:
        quiet_third_party_progress()  # transformers' own "Loading weights" bar
    t_start = time.time()
    items = _inputs(s)
    if not items:
        raise InputError(f"no audio inputs found in {s.input.audio_dir or s.input.manifest} (extensions {list(s.input.extensions)})")
    if mode == "apply" and not (s.tokenizer_path / TOKENIZER_FILE).exists():
        raise MissingInputError(f"mode=apply needs a fitted tokenizer at {s.tokenizer_path} (run mode=fit first)")
    if on_start is not None:
        on_start()
    out_dir.mkdir(parents=True, exist_ok=True)
    _log(f"{len(items)} inputs; rank {rank} of {world}", rank)
    device = resolve_device(s.device)
    tok_file = s.tokenizer_path / TOKENIZER_FILE
    if mode in ("fit", "fit+apply"):
        if tok_file.exists():
            if mode == "fit":
                raise RunExistsError(f"a tokenizer already exists at {s.tokenizer_path}; remove it to refit")
            tok = _load_existing_tokenizer(s, device)  # a resumed run keeps its codebook
            _log(f"reusing the tokenizer at {s.tokenizer_path}", rank)
        elif rank == 0:
            tok = fit_tokenizer(s, items)
        else:
            _wait_for(tok_file, s.wait_timeout_s, "rank 0 to fit the tokenizer")
            tok = _load_existing_tokenizer(s, device)
        if mode == "fit":
            return {"tokenizer": str(s.tokenizer_path), "contract": tok.contract.to_dict()}
    else:
        if not tok_file.exists():
            raise MissingInputError(f"mode=apply needs a fitted tokenizer at {s.tokenizer_path} (run mode=fit first)")
        tok = UnitTokenizer.load(s.tokenizer_path, device=device)
        tok = UnitTokenizer(tok.encoder, tok.quantizer, dedup=s.dedup) if tok.contract.dedup != s.dedup else tok
        if s.tokenizer_dir and not (out_dir / TOKENIZER_SUBDIR / TOKENIZER_FILE).exists() and rank == 0:
            tok.save(out_dir / TOKENIZER_SUBDIR)  # the dataset carries its tokenizer
    refuse_changed_inputs(out_dir, items[rank::world])  # before anything of this rerun is written
    done_dir = out_dir / DONE_DIR
    done_dir.mkdir(exist_ok=True)
    (done_dir / f"r{rank:04d}-of-{world:04d}.json").unlink(missing_ok=True)
    with disk_full_guard(out_dir, intact="committed shards are kept; free space and rerun the same command to resume"):
        stats = apply_tokenizer(s, tok, items)
    from twist.atomic import atomic_write_json

    atomic_write_json(done_dir / f"r{rank:04d}-of-{world:04d}.json", stats)
    # the last rank to finish merges (every rank checks; merging twice is harmless)
    if all((done_dir / f"r{r:04d}-of-{world:04d}.json").exists() for r in range(world)):
        meta = merge_outputs(out_dir, split=dataclasses.asdict(s.split))
        summary = {
            "out_dir": str(out_dir),
            "inputs": len(items),
            "utterances": meta["n_utterances"],
            "rejected": meta["n_rejected"],
            "hours": meta["hours"],
            "units_total": meta["n_units_total"],
            "world_size": world,
            "this_rank": stats,
            "wall_s": round(time.time() - t_start, 2),
            "contract": tok.contract.to_dict(),
            **({"alignment": meta["alignment"]} if "alignment" in meta else {}),
        }
        atomic_write_json(out_dir / "summary.json", summary)
        el = max(stats["elapsed_s"], 1e-9)
        say(
            f"[twist-tokenize] done: {meta['n_utterances']} utterances ({meta['hours']:.4f} h), "
            f"{meta['n_rejected']} rejected (see {out_dir / REJECTS}), {meta['n_units_total']} units"
            + (f", word-aligned by {meta['alignment']['aligner']}" if "alignment" in meta else "") + "; "
            f"this rank {stats['ok']} files at {stats['audio_seconds'] / el:.1f} audio-s/s -> {out_dir}"
        )
        return summary
    _log(f"rank {rank} finished its shard; the last rank to finish merges", 0)
    return {"this_rank": stats, "merged": False}
