"""The demo's spoken corpus: English sentences from an installed package, spoken by offline TTS.

The text comes from Debian's ``fortunes-min`` package (quotations and literature excerpts,
installed by ``make install``; never committed here). Sentences are cleaned and filtered to
4-16 plain words so espeak-ng reads them without surprises, then each is synthesised with
several voices. The result is an audio directory plus ``transcripts.jsonl`` that the rest of
the demo tokenizes, trains on and evaluates with.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

from twist.atomic import atomic_write_text

FORTUNE_DIRS = ("/usr/share/games/fortunes",)
FORTUNE_FILES = ("fortunes", "literature", "riddles")
_OK = re.compile(r"[A-Za-z ,.;:'!?-]+")


def read_sentences(
    files: Sequence[str | Path] | None = None,
    *,
    min_words: int = 4,
    max_words: int = 16,
) -> list[str]:
    """Clean English sentences from fortune files, in file order, without duplicates.

    Raises:
        FileNotFoundError: none of the files exists; the message says which package to install.
    """
    if files is None:
        files = [Path(d) / f for d in FORTUNE_DIRS for f in FORTUNE_FILES]
    files = [Path(f) for f in files]
    existing = [f for f in files if f.is_file()]
    if not existing:
        raise FileNotFoundError(
            f"no text source found (looked for {[str(f) for f in files]}); "
            "install it with: apt-get install fortunes-min"
        )
    seen: set[str] = set()
    out: list[str] = []
    for f in existing:
        text = f.read_text(encoding="utf-8", errors="replace")
        for quote in text.split("\n%\n"):
            quote = re.sub(r"\s+", " ", quote).strip()
            quote = re.sub(r"\s--\s.*$", "", quote)  # attribution lines
            quote = re.sub(r"\b[QA]:\s*", "", quote)  # riddle markers
            for s in re.split(r"(?<=[.!?])\s+", quote):
                s = s.strip()
                n = len(s.split())
                if min_words <= n <= max_words and _OK.fullmatch(s) and s.lower() not in seen:
                    seen.add(s.lower())
                    out.append(s)
    return out


def build_corpus(
    out_dir: str | Path,
    *,
    n_sentences: int = 600,
    voices: Sequence[str] | None = None,
    voices_per_sentence: int = 2,
    tts: str = "espeak",
    workers: int = 2,
    seed: int = 0,
) -> dict:
    """Synthesise ``n_sentences`` sentences, each with ``voices_per_sentence`` voices.

    Writes ``out_dir/audio/<voice>/<voice>-s<n>.wav`` and ``out_dir/transcripts.jsonl``
    (``{"id": <wav stem>, "text", "voice", ...}``, the reference format of twist-vocoder's
    resynthesis WER). Files that
    already exist are kept (a rerun finishes an interrupted build).

    Returns:
        a summary dict (utterance count, hours, voices).
    """
    from twist.bench.tts import get_backend, synthesize_many

    out_dir = Path(out_dir)
    backend = get_backend(tts)
    all_voices = list(voices or backend.voices)
    if not all_voices:
        raise ValueError(f"TTS backend {tts!r} reports no voices")
    sentences = read_sentences()
    rng = random.Random(seed)
    rng.shuffle(sentences)
    sentences = sentences[:n_sentences]
    jobs, rows = [], []
    for i, text in enumerate(sentences):
        start = i % len(all_voices)
        for k in range(min(voices_per_sentence, len(all_voices))):
            voice = all_voices[(start + k) % len(all_voices)]
            vname = re.sub(r"[^A-Za-z0-9_-]", "_", voice)
            stem = f"{vname}-s{i:05d}"  # unique across voices: ASR references are keyed by file stem
            rel = f"audio/{vname}/{stem}.wav"
            jobs.append((text, voice, out_dir / rel))
            rows.append({"id": stem, "path": rel, "text": text, "voice": voice, "sentence": i})
    synthesize_many(tts, jobs, workers=workers)
    atomic_write_text(out_dir / "transcripts.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    import soundfile as sf

    seconds = sum(sf.info(str(out_dir / r["path"])).duration for r in rows)
    summary = {"utterances": len(rows), "sentences": len(sentences), "hours": seconds / 3600, "voices": all_voices}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
