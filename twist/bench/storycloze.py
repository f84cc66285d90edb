"""Spoken StoryCloze (sSC) and topic StoryCloze (tSC) from the StoryCloze CSV.

TWIST (Hassid et al. 2023, §3.3) turned the StoryCloze test set (Mostafazadeh et al.
2016) into speech with one TTS speaker, joining sentences with 100 ms of silence:

* **sSC**: the four-sentence context followed by the right ending (positive) or the
  dataset's own wrong ending (negative): a model must follow fine-grained causal and
  temporal commonsense.
* **tSC**: the negative ending is instead the right ending of another, randomly chosen
  story (seeded), so the negative is off-topic; this tests coarse topic coherence.

Each sentence is synthesised once (cached under ``_segments/``), its engine padding is
trimmed, and the sentences are joined with exactly ``silence_ms`` of digital silence.

Output (``out_dir``)::

    sSC/pairs.jsonl   sSC/wav/<id>_pos.wav  sSC/wav/<id>_neg.wav  sSC/texts.jsonl
    tSC/pairs.jsonl   tSC/wav/...                                  tSC/texts.jsonl
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twist.atomic import atomic_write_text
from twist.audio import BadAudioError, load_audio, save_audio
from twist.bench.layout import slug, write_pairs_jsonl
from twist.bench.tts import TTSBackend, synthesize_many, trim_silence
from twist.rejects import RejectsLog

STORYCLOZE_COLUMNS = (
    "InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
    "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding",
)  # fmt: skip
BUILTIN_STORIES = Path(__file__).parent / "data" / "stories.csv"


@dataclass(frozen=True)
class Story:
    id: str
    context: tuple[str, str, str, str]
    right: str
    wrong: str


def read_storycloze_csv(path: str | Path, rejects: RejectsLog | None = None) -> list[Story]:
    """Parse a StoryCloze CSV; bad rows go to ``rejects``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a required column is missing (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StoryCloze CSV not found: {path}")
    stories: list[Story] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for col in STORYCLOZE_COLUMNS:
            if col not in header:
                raise ValueError(
                    f"{path}: missing column {col!r} in the StoryCloze CSV header "
                    f"(expected {', '.join(STORYCLOZE_COLUMNS)}; got {', '.join(header) or 'nothing'})"
                )
        for n, row in enumerate(reader, 2):
            sid = (row["InputStoryid"] or "").strip()
            what = f"{path.name}:{n} ({sid or 'no id'})"
            texts = [(row[c] or "").strip() for c in STORYCLOZE_COLUMNS[1:7]]
            answer = (row["AnswerRightEnding"] or "").strip()
            reason = None
            if not sid:
                reason = "empty InputStoryid"
            elif sid in seen:
                reason = f"duplicate InputStoryid {sid!r}"
            elif any(not t for t in texts):
                empty = STORYCLOZE_COLUMNS[1 + [not t for t in texts].index(True)]
                reason = f"empty {empty}"
            elif answer not in ("1", "2"):
                reason = f"AnswerRightEnding must be 1 or 2, got {answer!r}"
            if reason is not None:
                if rejects is not None:
                    rejects.add(what, reason)
                continue
            seen.add(sid)
            right, wrong = (texts[4], texts[5]) if answer == "1" else (texts[5], texts[4])
            stories.append(Story(sid, tuple(texts[:4]), right, wrong))  # type: ignore[arg-type]
    return stories


def topic_negatives(stories: Sequence[Story], seed: int) -> list[str]:
    """For story i, the right ending of a different story drawn with ``seed`` (tSC)."""
    if len(stories) < 2:
        raise ValueError("tSC needs at least 2 stories (the negative ending comes from another story)")
    rng = random.Random(seed)
    out = []
    for i in range(len(stories)):
        j = rng.randrange(len(stories) - 1)
        out.append(stories[j + (j >= i)].right)
    return out


def join_with_silence(segments: Sequence[np.ndarray], silence_ms: float, sample_rate: int = 16000) -> np.ndarray:
    """Concatenate with exactly ``silence_ms`` of zeros between consecutive segments."""
    gap = np.zeros(int(round(sample_rate * silence_ms / 1000.0)), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, seg in enumerate(segments):
        if i:
            parts.append(gap)
        parts.append(np.asarray(seg, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _segment_path(root: Path, text: str, voice: str) -> Path:
    import hashlib

    h = hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]
    return root / slug(voice) / f"{h}.wav"


def build_storycloze(
    csv_path: str | Path,
    out_dir: str | Path,
    backend: TTSBackend,
    *,
    voice: str | None = None,
    seed: int = 0,
    silence_ms: float = 100.0,
    tasks: Sequence[str] = ("sSC", "tSC"),
    workers: int | None = None,
    limit: int | None = None,
    trim_threshold: float = 1e-3,
    rejects: RejectsLog | None = None,
    progress: bool = True,
) -> dict:
    """Build sSC and/or tSC from a StoryCloze CSV; returns counts and synthesis speed.

    Reruns skip sentences and pairs already built (resume).
    """
    out_dir = Path(out_dir)
    bad = set(tasks) - {"sSC", "tSC"}
    if bad:
        raise ValueError(f"unknown StoryCloze task(s) {sorted(bad)}; use sSC and/or tSC")
    stories = read_storycloze_csv(csv_path, rejects)
    if limit is not None:
        stories = stories[: int(limit)]
    if not stories:
        raise ValueError(f"{csv_path}: no usable stories")
    voice = backend.voice_or_default(voice)
    seg_root = out_dir / "_segments"

    variants: dict[str, list[tuple[Story, str]]] = {}
    if "sSC" in tasks:
        variants["sSC"] = [(s, s.wrong) for s in stories]
    if "tSC" in tasks:
        variants["tSC"] = list(zip(stories, topic_negatives(stories, seed)))

    sentences = sorted({t for rows in variants.values() for s, neg in rows for t in (*s.context, s.right, neg)})
    jobs = [(t, voice, _segment_path(seg_root, t, voice)) for t in sentences]
    report = synthesize_many(backend, jobs, workers=workers, progress=progress)
    failed = {p for p, _ in report.failures}
    for p, why in report.failures:
        if rejects is not None:
            rejects.add(p, f"sentence synthesis failed: {why}")

    cache: dict[str, np.ndarray] = {}

    def segment(text: str) -> np.ndarray:
        if text not in cache:
            path = _segment_path(seg_root, text, voice)
            if str(path) in failed:
                raise BadAudioError(path, "synthesis failed")
            wav = trim_silence(load_audio(path, 16000), trim_threshold)
            if wav.size == 0:
                raise BadAudioError(path, f"silent synthesis of {text[:60]!r}")
            cache[text] = wav
        return cache[text]

    def build_one(task: str, story: Story, neg: str) -> dict | None:
        base = slug(story.id)
        rel = {"positive": f"wav/{base}_pos.wav", "negative": f"wav/{base}_neg.wav"}
        try:
            for key, ending in (("positive", story.right), ("negative", neg)):
                path = out_dir / task / rel[key]
                if not path.exists():
                    save_audio(path, join_with_silence([segment(t) for t in (*story.context, ending)], silence_ms), 16000)
        except BadAudioError as e:
            return {"error": f"{task} {story.id}: {e}"}
        return {"id": story.id, **rel, "texts": {"context": list(story.context), "positive": story.right, "negative": neg}}

    # Pre-load segments serially (the cache is then read-only), then assemble in threads.
    for rows in variants.values():
        for s, neg in rows:
            for t in (*s.context, s.right, neg):
                try:
                    segment(t)
                except BadAudioError:
                    pass
    counts = {}
    with ThreadPoolExecutor(max_workers=max(1, workers or 2)) as pool:
        for task, rows in variants.items():
            _drop_stale_wavs(out_dir / task, {
                "backend": backend.name, "voice": voice, "silence_ms": silence_ms, "trim": trim_threshold,
                "rows": [[st.id, list(st.context), st.right, neg] for st, neg in rows],
            })  # fmt: skip
            results = list(pool.map(lambda r, task=task: build_one(task, *r), rows))
            pairs = []
            for res in results:
                if res is None or "error" in res:
                    if rejects is not None and res is not None:
                        rejects.add(res["error"].split(":")[0], res["error"])
                    continue
                pairs.append(res)
            write_pairs_jsonl(out_dir / task / "pairs.jsonl", pairs)
            texts = [json.dumps({"id": p["id"], **p["texts"]}) for p in sorted(pairs, key=lambda p: p["id"])]
            atomic_write_text(out_dir / task / "texts.jsonl", "".join(t + "\n" for t in texts))
            counts[task] = len(pairs)
    return {
        "stories": len(stories),
        "pairs": counts,
        "sentences": len(sentences),
        "voice": voice,
        "tts": report.summary(),
        "tts_items_per_s": round(report.items_per_s, 2),
    }


def _drop_stale_wavs(task_dir: Path, settings: dict) -> None:
    """Wav files are reused on a rerun (resume); only if made from these very settings and texts.

    A stamp holds a hash of what the wavs were built from; a different seed (other tSC
    negatives), voice, silence or story set removes the old wavs instead of reusing them.
    """
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    stamp = task_dir / ".build-key"
    if stamp.exists() and stamp.read_text().strip() != key:
        shutil.rmtree(task_dir / "wav", ignore_errors=True)
    elif not stamp.exists() and (task_dir / "wav").exists():
        shutil.rmtree(task_dir / "wav", ignore_errors=True)  # made before stamps, or by hand
    atomic_write_text(stamp, key + "\n")
