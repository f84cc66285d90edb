"""Spoken StoryCloze (sSC) and topic StoryCloze (tSC) from the StoryCloze CSV.

TWIST (Hassid et al. 2023, §3.3) turned the StoryCloze test set (Mostafazadeh et al.
2016) into speech with one TTS speaker, joining sentences with 100 ms of silence:

* **sSC**: the four-sentence context followed by the right ending (positive) or the
  dataset's own wrong ending (negative): a model must follow fine-grained causal and
  temporal commonsense.
* **tSC**: the negative ending is instead the right ending of another story, drawn with a
  seed, so the negative is off-topic; this tests coarse topic coherence.

A tSC negative is a function of the seed, the story id and the set of right endings of the
*whole* input file (:func:`topic_negatives`), never of which stories a build covers: a
``limit`` or a ``shard`` of the file gets exactly the pairs those stories have in a build of
the whole file. A negative whose normalised text (:func:`normalize_text`) equals the
positive's is never drawn, so no pair is two recordings of the same words.

**Multi-speaker sets** (``voices``, after SIMS, Maimon et al. 2025, which found a model trained
on synthetic speech scoring much lower on them): ``sSC_ms`` and ``tSC_ms`` hold the same pairs,
but each story's sentences are spoken by voices drawn under the seed (:func:`story_voices`:
consecutive sentences always differ), and both endings of a pair by one voice, so voice
carries no cue.

Each sentence is synthesised once per voice (cached under ``_segments/``), its engine padding
is trimmed, and the sentences of a story are joined with exactly ``silence_ms`` of digital
silence. Each distinct recording (a context plus one ending) is written once, under
``wav/``; an sSC positive and the tSC positive of the same story are the same file, which
both manifests name.

With an engine that reports word timings (espeak-ng), each sentence's timings are kept beside
its cached recording and each recording gets ``<wav>.words.json``: the words of its sentences,
moved to where each trimmed sentence lies in the joined audio (:mod:`twist.alignment`; what
``twist-tokenize align=tts`` reads).

Output (``out_dir``)::

    wav/<id>_pos_<h>.wav  wav/<id>_neg_<h>.wav      each recording once (<h>: what it was made from)
    wav/<id>_pos_<h>.wav  wav/<id>_neg_<h>.wav      each recording once (<h>: what it was made from)
    wav/<name>.wav.words.json                       its word timings (engines that report them)
    sSC/pairs.jsonl  sSC/texts.jsonl                paths in pairs.jsonl are ../wav/...; a texts row holds
                                                    the sentences and where the ending begins (seconds)
    tSC/pairs.jsonl  tSC/texts.jsonl
    sSC_ms/  tSC_ms/                                with voices: the same, texts.jsonl rows name the voices
    _segments/<voice>/<hash>.wav                    one per distinct (sentence, voice) (a cache),
                                                    with <hash>.wav.words.json
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twist.alignment import WORD_TIMES_SUFFIX, moved_words, read_word_times, word_times_path, write_word_times
from twist.atomic import atomic_write_text
from twist.audio import BadAudioError, load_audio, save_audio
from twist.bench.layout import read_pairs_jsonl, slug, write_pairs_jsonl
from twist.bench.tts import TTSBackend, synthesize_many, trim_bounds
from twist.errors import ConfigError, InputError, MissingInputError
from twist.rejects import RejectsLog

STORYCLOZE_COLUMNS = (
    "InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
    "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding",
)  # fmt: skip
BUILTIN_STORIES = Path(__file__).parent / "data" / "stories.csv"
VARIANTS = ("sSC", "tSC")
MULTI_SPEAKER = "_ms"  # sSC_ms, tSC_ms: the multi-speaker sets, next to the single-speaker ones
ALL_VARIANTS = (*VARIANTS, *(v + MULTI_SPEAKER for v in VARIANTS))
WAV_DIR = "wav"


@dataclass(frozen=True)
class Story:
    id: str
    context: tuple[str, str, str, str]
    right: str
    wrong: str


def normalize_text(text: str) -> str:
    """The form in which two endings count as the same words.

    Unicode NFKC, case-folded, every character that is not a letter or a digit turned into
    a space, runs of spaces collapsed: ``"His family loved it."`` and ``"his family loved
    it!"`` are the same ending.
    """
    t = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(c if c.isalnum() else " " for c in t).split())


def read_storycloze_csv(path: str | Path, rejects: RejectsLog | None = None) -> list[Story]:
    """Parse a StoryCloze CSV; bad rows go to ``rejects``.

    Raises:
        MissingInputError: no such file.
        InputError: a required column is missing (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"StoryCloze CSV not found: {path}")
    stories: list[Story] = []
    seen: set[str] = set()
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for col in STORYCLOZE_COLUMNS:
            if col not in header:
                raise InputError(
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
            elif normalize_text(texts[4]) == normalize_text(texts[5]):
                reason = "RandomFifthSentenceQuiz1 and RandomFifthSentenceQuiz2 are the same words (a forced tie)"
            if reason is not None:
                if rejects is not None:
                    rejects.add(what, reason)
                continue
            seen.add(sid)
            right, wrong = (texts[4], texts[5]) if answer == "1" else (texts[5], texts[4])
            stories.append(Story(sid, tuple(texts[:4]), right, wrong))  # type: ignore[arg-type]
    return stories


def topic_negatives(stories: Sequence[Story], seed: int, endings: Iterable[str] | None = None) -> list[str]:
    """The tSC negative of each story: the right ending of another story, drawn with ``seed``.

    The draw for a story depends on ``seed``, the story's id and the *set* of ``endings``
    only: not on the other stories asked for, nor on the order of the file. Pass the right
    endings of every story of the input file as ``endings`` and any subset of the file gets
    the negatives it has in the whole. Endings whose normalised text equals the story's own
    right ending are never drawn (duplicated endings exist in the real test file).

    Args:
        stories: the stories that need a negative.
        seed: the build's seed.
        endings: the right endings of the whole input file (default: those of ``stories``).

    Raises:
        InputError: a story has no ending to draw (the file has fewer than two different ones).
    """
    pool = sorted(set(endings if endings is not None else (s.right for s in stories)))
    same_words: dict[str, list[int]] = {}
    for i, e in enumerate(pool):
        same_words.setdefault(normalize_text(e), []).append(i)
    out = []
    for s in stories:
        banned = same_words.get(normalize_text(s.right), [])  # ascending indices into pool
        n_ok = len(pool) - len(banned)
        if n_ok < 1:
            raise InputError(
                f"tSC needs at least 2 stories with different right endings (story {s.id!r} has no other "
                "ending to draw its negative from)"
            )
        # A private stream per story: its draw cannot depend on what else is built.
        r = random.Random(f"tsc:{seed}:{s.id}").randrange(n_ok)
        for b in banned:  # the r-th allowed index, stepping over the banned ones
            if r >= b:
                r += 1
        out.append(pool[r])
    return out


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``None`` stays ``None``."""
    if shard is None or str(shard).strip() == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ConfigError(f"storycloze.shard must be 'i/n' with 0 <= i < n (e.g. 0/4), got {shard!r}")
    return int(m.group(1)), int(m.group(2))


def select_stories(stories: Sequence[Story], limit: int | None = None, shard: str | None = None) -> list[Story]:
    """The first ``limit`` stories, then the ``i``-th of ``n`` contiguous parts of them (``shard="i/n"``)."""
    out = list(stories[: int(limit)] if limit is not None else stories)
    part = parse_shard(shard)
    if part is not None:
        i, n = part
        out = out[len(out) * i // n : len(out) * (i + 1) // n]
    return out


def check_storycloze_input(csv_path: str | Path, limit: int | None = None, shard: str | None = None) -> int:
    """Fail now, naming the problem, if a build from this CSV could not make a single pair.

    Returns the number of stories the build would cover.
    """
    every_story = read_storycloze_csv(csv_path)
    if not every_story:
        raise InputError(f"{csv_path}: no usable stories (rows need an id, six non-empty sentences and "
                         "AnswerRightEnding 1 or 2)")
    stories = select_stories(every_story, limit, shard)
    if not stories:
        raise ConfigError(f"storycloze.limit={limit} / storycloze.shard={shard} select no story of {csv_path}")
    return len(stories)


def join_with_silence(segments: Sequence[np.ndarray], silence_ms: float, sample_rate: int = 16000) -> np.ndarray:
    """Concatenate with exactly ``silence_ms`` of zeros between consecutive segments."""
    gap = np.zeros(int(round(sample_rate * silence_ms / 1000.0)), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, seg in enumerate(segments):
        if i:
            parts.append(gap)
        parts.append(np.asarray(seg, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def segment_path(root: Path, text: str, voice: str) -> Path:
    """Where the engine's recording of one sentence is cached."""
    h = hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]
    return Path(root) / slug(voice) / f"{h}.wav"


def _recording_name(story: Story, kind: str, ending: str, recipe: list) -> str:
    """``<id>_<kind>_<h>.wav``: ``h`` hashes everything the audio is made from, so a file of
    that name is always the right one to reuse (resume) and a changed setting never is."""
    h = hashlib.sha256(json.dumps([*recipe, *story.context, ending]).encode("utf-8")).hexdigest()[:12]
    return f"{slug(story.id)}_{kind}_{h}.wav"


def story_voices(story: Story, voices: Sequence[str], seed: int) -> tuple[str, ...]:
    """The voices of a multi-speaker story: its four sentences, then its ending (both endings).

    The voices are shuffled under the seed and the story's id, and the five slots take them in
    turn, so consecutive sentences always differ and the draw does not depend on which other
    stories are built. Both endings of a pair share the last slot's voice: a model cannot tell
    the positive from the negative by who speaks it.
    """
    order = list(voices)
    random.Random(f"ms-voices:{seed}:{story.id}").shuffle(order)
    return tuple(order[i % len(order)] for i in range(5))


def build_storycloze(
    csv_path: str | Path,
    out_dir: str | Path,
    backend: TTSBackend,
    *,
    voice: str | None = None,
    voices: Sequence[str] | None = None,
    seed: int = 0,
    silence_ms: float = 100.0,
    tasks: Sequence[str] = VARIANTS,
    workers: int | None = None,
    limit: int | None = None,
    shard: str | None = None,
    trim_threshold: float = 1e-3,
    rejects: RejectsLog | None = None,
    progress: bool = True,
) -> dict:
    """Build sSC and/or tSC from a StoryCloze CSV; returns counts and synthesis speed.

    Reruns skip sentences and recordings already built (resume); recordings no manifest
    names any more (another seed, silence or story set) are removed.

    Args:
        voice: the one speaker of sSC / tSC (default: the engine's first voice).
        voices: several voices: also build the multi-speaker ``sSC_ms`` / ``tSC_ms`` of the same
            pairs (SIMS), each story spoken as :func:`story_voices` draws.
        limit: the first ``limit`` stories of the file only.
        shard: ``"i/n"``: the ``i``-th of ``n`` contiguous parts of those stories. tSC
            negatives are still drawn from the whole file, so the parts of a sharded build
            hold exactly the pairs of the whole build.
    """
    out_dir = Path(out_dir)
    bad = set(tasks) - set(VARIANTS)
    if bad:
        raise ConfigError(f"unknown StoryCloze task(s) {sorted(bad)} in storycloze.tasks; use sSC and/or tSC")
    if voices is not None and len(set(voices)) < 2:
        raise ConfigError(f"storycloze.voices: the multi-speaker sets need at least 2 different voices, got {voices}")
    check_storycloze_input(csv_path, limit, shard)
    every_story = read_storycloze_csv(csv_path, rejects)
    stories = select_stories(every_story, limit, shard)
    voice = backend.voice_or_default(voice)
    negatives: dict[str, list[tuple[Story, str]]] = {}
    if "sSC" in tasks:
        negatives["sSC"] = [(s, s.wrong) for s in stories]
    if "tSC" in tasks:
        negatives["tSC"] = list(zip(stories, topic_negatives(stories, seed, endings=[s.right for s in every_story])))
    # each variant's rows: (story, negative ending, the voices of its five slots)
    variants: dict[str, list[tuple[Story, str, tuple[str, ...]]]] = {
        task: [(s, neg, (voice,) * 5) for s, neg in rows] for task, rows in negatives.items()}
    if voices:
        drawn = {s.id: story_voices(s, voices, seed) for s in stories}
        variants.update({task + MULTI_SPEAKER: [(s, neg, drawn[s.id]) for s, neg in rows]
                         for task, rows in negatives.items()})
    spoken = sorted({(t, v) for rows in variants.values() for s, neg, vs in rows
                     for t, v in zip((*s.context, s.right), vs)} |
                    {(neg, vs[4]) for rows in variants.values() for s, neg, vs in rows})
    segments = _Segments(out_dir / "_segments", trim_threshold)
    report = synthesize_many(backend, [(t, v, segments.path(t, v)) for t, v in spoken], workers=workers,
                             progress=progress, word_times=True)
    for path, why in report.failures:
        segments.failed.add(path)
        if rejects is not None:
            rejects.add(path, f"sentence synthesis failed: {why}")
    # Every distinct recording once: an sSC and a tSC positive of one story share a name.
    recordings: dict[str, tuple[Story, str, tuple[str, ...]]] = {}
    names: dict[str, list[tuple[Story, str, str, str, tuple[str, ...]]]] = {}
    for task, rows in variants.items():
        names[task] = []
        for s, neg, vs in rows:
            # one speaker: the recipe the single-speaker sets always had, so their files keep their names
            recipe = [backend.name, vs[0] if len(set(vs)) == 1 else list(vs), float(silence_ms), trim_threshold]
            pos_name, neg_name = _recording_name(s, "pos", s.right, recipe), _recording_name(s, "neg", neg, recipe)
            recordings.setdefault(pos_name, (s, s.right, vs))
            recordings.setdefault(neg_name, (s, neg, vs))
            names[task].append((s, neg, pos_name, neg_name, vs))
    errors = _write_recordings(recordings, out_dir / WAV_DIR, segments, float(silence_ms), workers)
    def bounds(s: Story, vs: tuple[str, ...]) -> dict[str, float]:
        return _ending_bounds([segments(t, v).size for t, v in zip(s.context, vs)], float(silence_ms))

    counts = {task: _write_variant(out_dir / task, rows, errors, rejects, bounds,
                                   multi_speaker=task.endswith(MULTI_SPEAKER)) for task, rows in names.items()}
    kept = _remove_unreferenced(out_dir, {n for n, e in errors.items() if e is None}, rebuilt=set(names))
    return {"stories": len(stories), "stories_in_file": len(every_story), "pairs": counts,
            "sentences": len(spoken), "recordings": kept, "voice": voice, **({"voices": list(voices)} if voices else {}),
            "tts": report.summary(), "tts_items_per_s": round(report.items_per_s, 2)}


class _Segments:
    """The synthesised sentences, by (text, voice): their cache paths, and each one trimmed, loaded once."""

    def __init__(self, root: Path, trim_threshold: float) -> None:
        self.root, self.trim_threshold = root, trim_threshold
        self.failed: set[str] = set()
        self._cache: dict[tuple[str, str], tuple[np.ndarray, int]] = {}

    def path(self, text: str, voice: str) -> Path:
        return segment_path(self.root, text, voice)

    def _load(self, text: str, voice: str) -> tuple[np.ndarray, int]:
        if (text, voice) not in self._cache:
            path = self.path(text, voice)
            if str(path) in self.failed:
                raise BadAudioError(path, "synthesis failed")
            wav = load_audio(path, 16000)
            i0, i1 = trim_bounds(wav, self.trim_threshold)
            if i1 == i0:
                raise BadAudioError(path, f"silent synthesis of {text[:60]!r}")
            self._cache[(text, voice)] = (wav[i0:i1], i0)
        return self._cache[(text, voice)]

    def __call__(self, text: str, voice: str) -> np.ndarray:
        return self._load(text, voice)[0]

    def words(self, text: str, voice: str) -> dict | None:
        """The engine's word timings of the trimmed sentence (times from its first kept sample), or
        ``None`` when the engine recorded none."""
        path = word_times_path(self.path(text, voice))
        if not path.is_file():
            return None
        wav, i0 = self._load(text, voice)
        rec = read_word_times(path)
        rec["words"] = moved_words(rec["words"], by=-i0 / 16000, clip=(i0 / 16000, (i0 + wav.size) / 16000))
        return rec


def _write_recordings(recordings: dict[str, tuple[Story, str, tuple[str, ...]]], wav_dir: Path, segments: _Segments,
                      silence_ms: float, workers: int | None) -> dict[str, str | None]:
    """Join each story's sentences, each in its slot's voice, with ``silence_ms`` of silence into
    ``wav_dir/<name>`` (skipping those already there); ``{name: None, or why it could not be made}``."""
    for s, ending, vs in recordings.values():  # load serially: the cache is then read-only in the threads
        for t, v in zip((*s.context, ending), vs):
            try:
                segments(t, v)
            except BadAudioError:
                pass

    def write(name: str) -> str | None:
        s, ending, vs = recordings[name]
        path = wav_dir / name
        parts = list(zip((*s.context, ending), vs))
        try:
            if not path.exists():
                joined = join_with_silence([segments(t, v) for t, v in parts], silence_ms)
                save_audio(path, joined, 16000)
                word_times_path(path).unlink(missing_ok=True)  # they were another file's
            if not word_times_path(path).exists():
                _write_joined_word_times(path, [segments.words(t, v) for t, v in parts],
                                         [segments(t, v).size for t, v in parts], silence_ms)
        except BadAudioError as e:
            return f"{s.id}: {e}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers or 2)) as pool:
        return dict(zip(recordings, pool.map(write, recordings)))


def _write_joined_word_times(path: Path, sentences: list[dict | None], sizes: list[int], silence_ms: float) -> None:
    """``<recording>.words.json``: each sentence's words moved by where it starts in the joined audio
    (what :func:`join_with_silence` did to the samples). Nothing when a sentence has no timings."""
    if not sentences or any(rec is None for rec in sentences):
        return
    gap = int(round(16000 * silence_ms / 1000.0))
    words, texts, at, char_at = [], [], 0, 0
    for rec, size in zip(sentences, sizes):
        assert rec is not None
        words += moved_words(rec["words"], by=at / 16000, chars=char_at)
        texts.append(rec["text"])
        at += size + gap
        char_at += len(rec["text"]) + 1
    voices = [rec["engine"].get("voice") for rec in sentences if rec is not None]
    engine = {**sentences[0]["engine"], "voice": voices[0] if len(set(voices)) == 1 else voices,  # type: ignore[index]
              "joined": {"silence_ms": float(silence_ms), "sentences": len(sentences)}}
    write_word_times(path, text=" ".join(texts), words=words, duration=(at - gap) / 16000, sample_rate=16000,
                     engine=engine)


def _ending_bounds(context_sizes: Sequence[int], silence_ms: float, sample_rate: int = 16000) -> dict[str, float]:
    """Where the spoken context ends and the ending begins, in seconds, in both recordings of a pair
    (they share the context and its gaps, as :func:`join_with_silence` laid them): cross-modal
    StoryCloze (twist.eval.cross_modal) cuts the recordings there."""
    gap = int(round(sample_rate * silence_ms / 1000.0))
    context = sum(int(n) for n in context_sizes) + (len(context_sizes) - 1) * gap
    return {"context_end": context / sample_rate, "ending_start": (context + gap) / sample_rate}


def _write_variant(task_dir: Path, rows: list[tuple[Story, str, str, str, tuple[str, ...]]],
                   errors: dict[str, str | None], rejects: RejectsLog | None,
                   bounds: Callable[[Story, tuple[str, ...]], dict[str, float]], *, multi_speaker: bool = False) -> int:
    """``pairs.jsonl`` and ``texts.jsonl`` of one variant (sSC, tSC or their multi-speaker sets); returns
    its pair count. Each text row says where, in both recordings, the spoken context ends and the
    ending begins (``context_end``, ``ending_start``, seconds: :func:`_ending_bounds`). A
    multi-speaker variant's text rows name the voice of each sentence (``voices``: the four
    sentences', then the one of both endings)."""
    _drop_legacy_layout(task_dir)
    pairs, texts = [], []
    for s, neg, pos_name, neg_name, vs in rows:
        why = errors[pos_name] or errors[neg_name]
        if why is not None:
            if rejects is not None:
                rejects.add(f"{task_dir.name} {s.id}", f"{task_dir.name} {why}")
            continue
        pairs.append({"id": s.id, "positive": f"../{WAV_DIR}/{pos_name}", "negative": f"../{WAV_DIR}/{neg_name}"})
        texts.append({"id": s.id, "context": list(s.context), "positive": s.right, "negative": neg,
                      **bounds(s, vs), **({"voices": list(vs)} if multi_speaker else {})})
    write_pairs_jsonl(task_dir / "pairs.jsonl", pairs)
    lines = [json.dumps(t) for t in sorted(texts, key=lambda t: t["id"])]
    atomic_write_text(task_dir / "texts.jsonl", "".join(line + "\n" for line in lines))
    return len(pairs)


def _drop_legacy_layout(task_dir: Path) -> None:
    """Builds before the shared ``wav/`` kept a copy of every recording per variant."""
    shutil.rmtree(task_dir / "wav", ignore_errors=True)
    (task_dir / ".build-key").unlink(missing_ok=True)


def _remove_unreferenced(out_dir: Path, built: set[str], rebuilt: set[str]) -> int:
    """Delete recordings no manifest names any more; returns how many are kept.

    A variant not rebuilt this time keeps the files its existing ``pairs.jsonl`` names.
    """
    keep = set(built)
    for task in ALL_VARIANTS:
        manifest = out_dir / task / "pairs.jsonl"
        if task in rebuilt or not manifest.is_file():
            continue
        try:
            rows = read_pairs_jsonl(manifest)
        except (ValueError, OSError):
            continue
        keep |= {Path(r[k]).name for r in rows for k in ("positive", "negative")}
    wav_dir = out_dir / WAV_DIR
    if not wav_dir.is_dir():
        return 0
    for f in wav_dir.iterdir():
        if f.is_file() and f.name.removesuffix(WORD_TIMES_SUFFIX) not in keep:  # a recording, with its word times
            f.unlink()
    return sum(1 for f in wav_dir.iterdir() if f.is_file() and not f.name.endswith(WORD_TIMES_SUFFIX))
