"""The word aligners of ``twist-tokenize align=tts|whisper``: one alignment record per utterance.

* ``tts`` (:class:`TtsAligner`): the words the TTS engine reported while it spoke the very audio
  being tokenized, read from ``<audio>.words.json`` beside it (written by the demo corpus and
  twist-bench's StoryCloze, :func:`twist.bench.tts.synthesize_many`). The file records the
  SHA-256 of its audio; timings of other audio, or none, make the utterance a reject.
* ``whisper`` (:class:`WhisperAligner`): word timestamps from faster-whisper
  (``transcribe(..., word_timestamps=True)``: Whisper's cross-attention aligned to the audio by
  dynamic time warping), Whisper tiny.en offline by default. With a known transcript (the input's
  ``transcripts`` file, or a JSONL manifest's ``text``), the recognised words are matched to the
  transcript's words (:func:`twist.alignment.match_transcript`) and the mismatches counted in
  the record; without one, the recognised words are the transcript.

A record (docs/contracts.md#word-alignments)::

    {"id", "aligner", "transcript", "duration",
     "words": [{"word", "start", "end", "how"}, ...],     seconds from the start of the audio
     "counts": {"timed", "substituted", "interpolated"},  transcript words by how they got their times
     "mismatches",                                        whisper: edits against the transcript; tts: untimed words
     "recognised", "edits": {"substituted", "deleted", "inserted"}}   whisper only

Each aligner describes itself (:attr:`info`: what it is, its settings, the fingerprints of the
model and transcripts it reads, and one ``fingerprint`` of all that), which the unit dataset keeps
as ``alignment.json`` and in ``meta.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from twist.alignment import (
    WORD_TIMES_FORMAT,
    WORD_TIMES_SUFFIX,
    WORD_TIMES_VERSION,
    AlignmentRejected,
    match_transcript,
    read_word_times,
    time_tokens_from_engine,
    word_times_path,
)
from twist.asr import transcript_lines
from twist.errors import ConfigError, InputError, MissingInputError

WHISPER_SAMPLE_RATE = 16000


class Aligner(Protocol):
    name: str
    info: dict[str, Any]

    def align(self, utt_id: str, path: str, wav: np.ndarray, sample_rate: int, *, text: str | None = None,
              source_sha256: str | None = None) -> dict[str, Any]: ...


def _with_fingerprint(info: dict[str, Any], *, leave_out: Sequence[str] = ()) -> dict[str, Any]:
    """``info`` plus a ``fingerprint`` of it (paths left out: moving a model or a file changes nothing)."""
    core = {k: v for k, v in info.items() if k not in leave_out}
    digest = hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {**info, "fingerprint": f"{info['aligner']}-{digest}"}


def build_aligner(settings: Any, *, transcripts: str | None = None) -> Aligner | None:
    """The aligner ``settings`` (a :data:`twist.tokenizer.config.ALIGNER` option) choose; ``None`` for none."""
    name = settings.name
    if name == "none":
        return None
    if name == "tts":
        return TtsAligner()
    if name == "whisper":
        return WhisperAligner(settings, transcripts=transcripts)
    raise ConfigError(f"unknown aligner {name!r}; choose none, tts or whisper")


# ---------------------------------------------------------------------------------------
# tts
# ---------------------------------------------------------------------------------------
class TtsAligner:
    """Word times the TTS engine reported for the very audio (``<audio>.words.json``)."""

    name = "tts"

    def __init__(self) -> None:
        self.info = _with_fingerprint({"aligner": "tts", "source": f"<audio>{WORD_TIMES_SUFFIX}",
                                       "format": f"{WORD_TIMES_FORMAT}/{WORD_TIMES_VERSION}"})

    def align(self, utt_id: str, path: str, wav: np.ndarray, sample_rate: int, *, text: str | None = None,
              source_sha256: str | None = None) -> dict[str, Any]:
        timings = word_times_path(path)
        if not timings.is_file():
            raise AlignmentRejected(f"no TTS word timings recorded beside the audio ({timings.name} not found)")
        try:
            rec = read_word_times(timings)
        except InputError as e:
            raise AlignmentRejected(f"unreadable TTS word timings: {e}") from None
        duration = len(wav) / float(sample_rate)
        if rec.get("audio_sha256") and source_sha256 and rec["audio_sha256"] != source_sha256:
            raise AlignmentRejected(f"the TTS word timings in {timings.name} were recorded for other audio "
                                    "(the audio's SHA-256 differs)")
        if not rec.get("audio_sha256") and abs(float(rec["duration"]) - duration) > 0.01:
            raise AlignmentRejected(f"the TTS word timings in {timings.name} are for {rec['duration']} s of audio, "
                                    f"the file holds {duration:.3f} s")
        words, counts = time_tokens_from_engine(rec["text"], rec["words"], duration)
        return {"id": utt_id, "aligner": self.name, "transcript": rec["text"], "duration": round(duration, 5),
                "words": words, "counts": counts, "mismatches": counts["interpolated"]}


# ---------------------------------------------------------------------------------------
# whisper
# ---------------------------------------------------------------------------------------
class WhisperAligner:
    """faster-whisper word timestamps, matched to known transcripts.

    Args:
        settings: :class:`twist.tokenizer.config.WhisperAlignSettings`.
        transcripts: the transcripts file the input gives (recorded, with its fingerprint).
    """

    name = "whisper"
    DECODING: Mapping[str, Any] = {"temperature": 0.0, "condition_on_previous_text": False, "vad_filter": False}

    def __init__(self, settings: Any, *, transcripts: str | None = None) -> None:
        try:
            import faster_whisper
            from faster_whisper import WhisperModel
        except ImportError:
            raise ConfigError("align=whisper needs the faster-whisper package: `pip install faster-whisper`") from None
        from twist.asr import default_whisper_dir
        from twist.run_identity import fingerprint_path

        model_dir = Path(settings.model_dir) if settings.model_dir else default_whisper_dir()
        if not (model_dir / "model.bin").is_file():
            raise MissingInputError(f"align.model_dir: not a CTranslate2 Whisper directory (no model.bin): {model_dir}")
        self.model = WhisperModel(str(model_dir), device=settings.device, compute_type=settings.compute_type,
                                  cpu_threads=settings.cpu_threads, local_files_only=True)
        self.beam_size, self.language = int(settings.beam_size), settings.language
        self.info = _with_fingerprint({
            "aligner": "whisper", "model_dir": str(model_dir), "model_fingerprint": fingerprint_path(model_dir),
            "faster_whisper": faster_whisper.__version__, "compute_type": settings.compute_type,
            "beam_size": self.beam_size, "language": self.language, "decoding": dict(self.DECODING),
            "transcripts": str(transcripts) if transcripts else None,
            "transcripts_fingerprint": fingerprint_path(transcripts) if transcripts else None,
        }, leave_out=("model_dir", "transcripts"))

    def recognise(self, wav: np.ndarray, sample_rate: int) -> list[tuple[str, float, float]]:
        """Whisper's words with their times: ``(word as written, start, end)`` in seconds."""
        from twist.audio import prepare_waveform

        audio = np.asarray(wav, dtype=np.float32).reshape(-1)
        if sample_rate != WHISPER_SAMPLE_RATE:
            audio = prepare_waveform(audio, sample_rate, WHISPER_SAMPLE_RATE)
        segments, _ = self.model.transcribe(audio, beam_size=self.beam_size, language=self.language,
                                            word_timestamps=True, **self.DECODING)
        return [(w.word, float(w.start), float(w.end)) for seg in segments for w in (seg.words or [])]

    def align(self, utt_id: str, path: str, wav: np.ndarray, sample_rate: int, *, text: str | None = None,
              source_sha256: str | None = None) -> dict[str, Any]:
        heard = self.recognise(wav, sample_rate)
        transcript = text if text is not None else " ".join(w.strip() for w, _, _ in heard)
        words, stats = match_transcript(transcript, heard, len(wav) / float(sample_rate))
        return {"id": utt_id, "aligner": self.name, "transcript": transcript,
                "duration": round(len(wav) / float(sample_rate), 5), "words": words, "counts": stats["counts"],
                "mismatches": stats["mismatches"], "recognised": stats["recognised"], "edits": stats["edits"]}


# ---------------------------------------------------------------------------------------
# known transcripts
# ---------------------------------------------------------------------------------------
def read_transcripts(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """``({id: text}, {resolved audio path: text})`` from lines ``id<TAB>text`` or JSON objects
    ``{"id" or "path", "text"}`` (a ``path`` is relative to the transcripts file; the demo corpus's
    ``transcripts.jsonl`` is one).

    Raises:
        MissingInputError: no such file. InputError: a line that is neither, naming it.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"input.transcripts not found: {p}")
    by_id: dict[str, str] = {}
    by_path: dict[str, str] = {}
    fields = '"text" and "id" or "path"'
    for where, rec in transcript_lines(p, fields=fields):
        if "text" not in rec:
            raise InputError(f"{where}: expected a JSON object with {fields}")
        text = str(rec["text"])
        if rec.get("path"):
            audio = Path(rec["path"]) if Path(rec["path"]).is_absolute() else p.parent / rec["path"]
            by_path[str(audio.resolve())] = text
        if rec.get("id") is not None:
            by_id[str(rec["id"])] = text
    return by_id, by_path


def transcript_for(utt_id: str, path: str, by_id: Mapping[str, str], by_path: Mapping[str, str]) -> str | None:
    """An utterance's transcript: by its audio path, else its utterance id, else its file's stem."""
    hit = by_path.get(str(Path(path).resolve()))
    if hit is None:
        hit = by_id.get(utt_id)
    if hit is None:
        hit = by_id.get(Path(path).stem)
    return hit
