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
from twist.bench.packaged_text import read_sentences
from twist.errors import ConfigError

__all__ = ["build_corpus", "read_sentences"]


def build_corpus(
    out_dir: str | Path,
    *,
    n_sentences: int,
    voices: Sequence[str] | None,
    voices_per_sentence: int,
    tts: str,
    workers: int,
    seed: int,
    word_times: bool = True,
) -> dict:
    """Synthesise ``n_sentences`` sentences, each with ``voices_per_sentence`` voices (the demo's
    ``corpus`` settings, twist.demo.config.CorpusSettings; ``voices=None``: the engine's own).

    Writes ``out_dir/audio/<voice>/<voice>-s<n>.wav`` and ``out_dir/transcripts.jsonl``
    (``{"id": <wav stem>, "text", "voice", ...}``, the reference format of twist-vocoder's
    resynthesis WER); with ``word_times`` (and an engine that reports them: espeak-ng), the
    engine's word timings beside each wav (``<wav>.words.json``, read by ``twist-tokenize
    align=tts``). Files that already exist are kept (a rerun finishes an interrupted build).

    Returns:
        a summary dict (utterance count, hours, voices).
    """
    from twist.bench.tts import get_backend, synthesize_many

    out_dir = Path(out_dir)
    backend = get_backend(tts)
    all_voices = list(voices or backend.voices)
    if not all_voices:
        raise ConfigError(f"TTS backend {tts!r} reports no voices")
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
    synthesize_many(tts, jobs, workers=workers, word_times=word_times)
    atomic_write_text(out_dir / "transcripts.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    from twist.audio import audio_seconds

    seconds = sum(audio_seconds(out_dir / r["path"]) for r in rows)
    summary = {"utterances": len(rows), "sentences": len(sentences), "hours": seconds / 3600, "voices": all_voices}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
