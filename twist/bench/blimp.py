"""sBLIMP-style spoken syntax benchmark from BLiMP-format JSONL.

BLiMP (Warstadt et al. 2020) gives minimal pairs of a grammatical and an ungrammatical
sentence; ZeroSpeech 2021 (Nguyen et al. 2020) synthesised them as sBLIMP. A model passes
a pair when it gives the grammatical sentence the higher likelihood.

Input: one JSON object per line with ``sentence_good``, ``sentence_bad``, ``UID`` (the
paradigm), ``field`` and ``linguistics_term`` (the phenomenon) - the format of the BLiMP
release files, so ``cat blimp/data/*.jsonl > blimp.jsonl`` is a valid input.

Output, the ZR2021 syntactic layout::

    syntactic/{dev,test}/<filename>.wav
    syntactic/{dev,test}/gold.csv   id,filename,voice,type,subtype,correct,transcription

``type`` is the linguistics term, ``subtype`` the UID. Each pair is spoken by every voice;
as in ZR2021, the ``id`` names the pair and is shared by its voices, so each ``(id, voice)``
has two rows (``correct`` 1 and 0) and scores are averaged over voices per id. Pairs are split into dev/test
stratified by UID with a seed; all voices of a pair land in the same split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from twist.bench.layout import SPLITS, SYNTACTIC_COLUMNS, slug, split_by_group, write_zr2021_splits
from twist.bench.tts import TTSBackend, synthesize_many
from twist.errors import InputError, MissingInputError
from twist.rejects import RejectsLog

BLIMP_FIELDS = ("sentence_good", "sentence_bad", "UID", "field", "linguistics_term")


@dataclass(frozen=True)
class MinimalPair:
    key: str  # "<UID>_<n>", n counting the UID's pairs in file order
    good: str
    bad: str
    uid: str
    field: str
    term: str


def read_blimp_jsonl(path: str | Path, rejects: RejectsLog | None = None) -> list[MinimalPair]:
    """Parse BLiMP JSONL.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not JSON or lacks a required field (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"BLiMP JSONL not found: {path}")
    pairs: list[MinimalPair] = []
    per_uid: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        for k in BLIMP_FIELDS:
            if k not in row:
                raise InputError(f"{path}:{n}: missing field {k!r} (BLiMP JSONL needs {', '.join(BLIMP_FIELDS)})")
        good, bad = str(row["sentence_good"]).strip(), str(row["sentence_bad"]).strip()
        uid = str(row["UID"]).strip()
        if not good or not bad or not uid:
            if rejects is not None:
                rejects.add(f"{path.name}:{n}", "empty sentence_good, sentence_bad or UID")
            continue
        if good == bad:
            if rejects is not None:
                rejects.add(f"{path.name}:{n}", "sentence_good equals sentence_bad")
            continue
        k = per_uid.get(uid, 0)
        per_uid[uid] = k + 1
        pairs.append(MinimalPair(f"{slug(uid)}_{k:05d}", good, bad, uid, str(row["field"]), str(row["linguistics_term"])))
    return pairs


def build_blimp(
    jsonl_path: str | Path,
    out_dir: str | Path,
    backend: TTSBackend,
    *,
    voices: Sequence[str] | None = None,
    seed: int = 0,
    dev_fraction: float = 0.5,
    workers: int | None = None,
    limit: int | None = None,
    rejects: RejectsLog | None = None,
    progress: bool = True,
) -> dict:
    """Build ``out_dir/syntactic/{dev,test}``; reruns skip wavs already there."""
    pairs = read_blimp_jsonl(jsonl_path, rejects)
    if limit is not None:
        pairs = pairs[: int(limit)]
    if not pairs:
        raise InputError(f"{jsonl_path}: no usable minimal pairs")
    voices = list(voices) if voices else backend.voices[:1]
    split = split_by_group([p.key for p in pairs], [p.uid for p in pairs], dev_fraction, seed)
    root = Path(out_dir) / "syntactic"

    rows: list[dict] = []
    jobs = []
    for p in pairs:
        for voice in voices:
            pid = f"{p.key}_{slug(voice)}"
            for correct, text in ((1, p.good), (0, p.bad)):
                fname = f"{pid}_{'good' if correct else 'bad'}"
                path = root / split[p.key] / f"{fname}.wav"
                rows.append({
                    "id": p.key, "_pid": pid, "filename": fname, "type": p.term, "subtype": p.uid,
                    "transcription": text, "correct": correct, "voice": voice, "_split": split[p.key], "_path": path,
                })  # fmt: skip
                jobs.append((text, voice, path))
    report = synthesize_many(backend, jobs, workers=workers, progress=progress, rejects=rejects)
    counts, n_failed = write_zr2021_splits(root, rows, SYNTACTIC_COLUMNS, SPLITS)
    return {
        "pairs": len(pairs),
        "voices": voices,
        "items": counts,  # pairs per split (each spoken by every voice)
        "failed_ids": n_failed,
        "tts": report.summary(),
        "tts_items_per_s": round(report.items_per_s, 2),
    }
