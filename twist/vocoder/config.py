"""``twist-vocoder``'s settings; each default is written here once.

The unit HiFi-GAN with a duration predictor follows speech-resynthesis (Polyak et al. 2021)
as used by TWIST (appendix A.2): AdamW at 2e-4 with betas (0.8, 0.99), a mel L1 loss weighted
45, feature matching 2, LSGAN 1, 400k steps of 16 segments of 8,960 samples. The generator,
discriminator and mel shapes come from a ``vocoder_model/`` file, which overrides
:class:`GeneratorSettings`, :class:`DiscriminatorSettings` and :class:`MelSettings` (their
defaults are the published 50 Hz unit HiFi-GAN's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from twist.asr import ASR
from twist.errors import ConfigError
from twist.schema import check_choice, check_positive, choice_field, type_choices
from twist.tokenizer.config import TokenizerConfig

MODES = ("train", "resynth", "convert", "rtf", "table")
# the settings each mode cannot do without
NEEDS = {"train": ("units_dir", "audio_dir"), "resynth": ("vocoder", "tokenizer_dir", "audio"),
         "convert": ("checkpoint", "hifigan_config", "contract"), "rtf": ("rtf_seconds",), "table": ()}


@dataclass
class VocoderTrainConfig:
    """mode=train: the optimisation of the generator, discriminators and duration predictor."""

    steps: int = 400000
    """Optimiser steps (published recipe: 400k)."""
    batch_size: int = 16
    """Segments per step (published: 16)."""
    segment_frames: int = 28
    """Unit frames per segment: 28 x 320 = 8960 samples (published segment_size)."""
    lr: float = 2.0e-4
    """AdamW learning rate (HiFi-GAN: 2e-4)."""
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    """AdamW betas (HiFi-GAN)."""
    lr_decay: float = 0.999
    """LR multiplier applied every lr_decay_every steps (HiFi-GAN: 0.999 per epoch)."""
    lr_decay_every: int = 1000
    """Steps between LR decays."""
    lambda_mel: float = 45.0
    """Mel L1 weight (HiFi-GAN: 45)."""
    lambda_fm: float = 2.0
    """Feature-matching weight (HiFi-GAN: 2)."""
    lambda_adv: float = 1.0
    """LSGAN generator weight; 0 trains with the mel loss only."""
    lambda_dur: float = 1.0
    """Duration-predictor MSE weight (speech-resynthesis dur_prediction_weight: 1)."""
    adv_start_step: int = 0
    """GAN losses start at this step (a mel-only warm-up before it)."""
    log_every: int = 10
    """A metrics.jsonl row every N steps."""
    ckpt_every: int = 2000
    """checkpoints/last + vocoder/ export every N steps (and at the end)."""
    max_minutes: float | None = None
    """Wall-clock budget; stops with a checkpoint when spent (null = none)."""
    seed: int = 0
    """Seeds init, segment sampling and dropout."""
    n_valid: int = 8
    """Held-out utterances for the validation mel / duration loss."""
    max_length_mismatch_frames: int = 3
    """Audio vs unit length tolerance (frames) before an utterance is rejected."""

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "segment_frames", "lr", "log_every", "ckpt_every", "lr_decay_every"):
            check_positive(f"train.{key}", getattr(self, key))


@dataclass
class DurationPredictorSettings:
    """The duration predictor of deduplicated units (speech-resynthesis's ``dur_predictor_params``)."""

    var_pred_hidden_dim: int = 128
    """Conv width (published: 128)."""
    var_pred_kernel_size: int = 3
    """Conv kernel (published: 3)."""
    var_pred_dropout: float = 0.5
    """Dropout after each LayerNorm (published: 0.5)."""
    encoder_embed_dim: int | None = None
    """Width of its input; null = generator.embedding_dim."""


@dataclass
class GeneratorSettings:
    """The unit HiFi-GAN generator (Kong et al. 2020 V1 shape at 50 Hz, 16 kHz; keys spelled as in speech-resynthesis's JSON)."""

    embedding_dim: int = 128
    """Unit (and speaker) embedding width (published: 128)."""
    upsample_rates: list[int] = field(default_factory=lambda: [5, 4, 4, 2, 2])
    """Per-stage upsampling; their product is the hop: 320 samples = 1/50 s at 16 kHz (25 Hz units: [5, 4, 4, 4, 2])."""
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [11, 8, 8, 4, 4])
    """Transposed-conv kernel per stage (kernel - rate must be even)."""
    upsample_initial_channel: int = 512
    """Channels after conv_pre, halved at each stage (published: 512)."""
    resblock: str = "1"
    """"1" = HiFi-GAN V1 block (two convs per dilation) | "2" = the lighter V2 block."""
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    """Multi-receptive-field fusion kernels."""
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    """Dilations per fusion kernel."""
    multispkr: bool = False
    """Add a speaker embedding table of num_speakers rows."""
    num_speakers: int = 200
    """Rows of the speaker table (200 in the published models)."""
    dur_predictor_params: DurationPredictorSettings | None = None
    """The duration predictor of deduplicated units; null = none ({} = its published shape)."""


@dataclass
class DiscriminatorSettings:
    """HiFi-GAN's discriminators: multi-period (MPD) and multi-scale (MSD)."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    """Multi-period discriminator periods; [] = no MPD."""
    n_scales: int = 3
    """Multi-scale discriminator scales (raw, /2, /4); 0 = no MSD."""
    width: float = 1.0
    """Channel multiplier of every discriminator (1.0 = the published size)."""


@dataclass
class MelSettings:
    """The spectrogram of the mel L1 loss (HiFi-GAN's)."""

    n_fft: int = 1024
    """FFT size."""
    hop_length: int = 256
    """Hop in samples."""
    win_length: int = 1024
    """Window in samples (<= n_fft)."""
    n_mels: int = 80
    """Mel bands."""
    fmin: float = 0.0
    """Lowest band edge in Hz."""
    fmax: float | None = 8000.0
    """Highest band edge in Hz; null = Nyquist."""
    n_ffts: list[int] | None = None
    """Multi-resolution loss: one spectrogram per FFT size, hop n_fft/4 and window n_fft each (n_fft, hop_length and win_length are then unused); null = one spectrogram."""

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            from twist.errors import ConfigError

            raise ConfigError(f"vocoder_model.mel: win_length {self.win_length} > n_fft {self.n_fft}")


@dataclass
class VocoderModelConfig:
    """A vocoder_model/ file: the shapes of the generator, the discriminators and the mel loss."""

    name: str = "hifigan-50hz"
    """The preset's name (shown in reports)."""
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    discriminator: DiscriminatorSettings = field(default_factory=DiscriminatorSettings)
    mel: MelSettings = field(default_factory=MelSettings)


@dataclass
class VocoderRunConfig:
    """Everything ``twist-vocoder`` reads (configs/vocoder.yaml with vocoder_model/ and asr/)."""

    mode: str = "train"
    """train | resynth | convert | rtf | table."""
    out_dir: str = MISSING
    """Output directory of this run (required)."""
    device: str = "cpu"
    """Torch device: cpu | cuda | cuda:N."""
    threads: int | None = None
    """Torch CPU threads (null = torch's default)."""
    progress: bool = True
    """tqdm progress bar."""
    units_dir: str | None = None
    """mode=train: the unit dataset written by twist-tokenize (its contract becomes the vocoder's)."""
    audio_dir: str | None = None
    """mode=train: the audio the units were made from (matched by manifest source path or id)."""
    resume: bool = True
    """mode=train: continue from <out_dir>/checkpoints/last when it exists."""
    train: VocoderTrainConfig = field(default_factory=VocoderTrainConfig)
    vocoder_model: VocoderModelConfig = field(default_factory=VocoderModelConfig)
    asr: Any = choice_field(ASR, "none")
    """ASR for resynthesis WER (an asr/ file: faster-whisper | hf-whisper | none) and its settings."""
    vocoder: str | None = None
    """mode=resynth/rtf: a vocoder dir (or a mode=train run dir); mode=rtf without one times vocoder_model at random weights."""
    tokenizer_dir: str | None = None
    """mode=resynth: a UnitTokenizer dir (e.g. <units_dir>/tokenizer); must match the vocoder's contract."""
    audio: str | None = None
    """mode=resynth: an audio file or a directory of them to resynthesise."""
    transcripts: str | None = None
    """mode=resynth: text references, lines "id<TAB>text" or JSON {"id", "text"} (id = file stem)."""
    limit: int | None = None
    """mode=resynth: at most this many files (null = all)."""
    predict_durations: bool = False
    """mode=resynth: durations from the duration predictor (as in generation) instead of the true ones."""
    name: str | None = None
    """mode=resynth: row label in the Table-5 report (null = the vocoder dir name)."""
    batch_frames: int = 20000
    """mode=resynth: unit frames per vocoder batch (20000 = 400 s at 50 Hz)."""
    rtf_seconds: float | None = 10.0
    """Seconds of random units for the real-time-factor benchmark (mode=rtf needs it; resynth: null skips it)."""
    rtf_batch: int = 1
    """mode=rtf: utterances per batch."""
    rtf_units: int = TokenizerConfig.n_units
    """mode=rtf without a vocoder: K of the random-weight model of vocoder_model (the tokenizer's default K)."""
    checkpoint: str | None = None
    """mode=convert: a published speech-resynthesis / textlesslib generator file ({"generator": state_dict})."""
    hifigan_config: str | None = None
    """mode=convert: its JSON config (upsample_*, resblock_*, num_embeddings, dur_predictor_params, ...)."""
    contract: str | None = None
    """mode=convert: the unit contract it was trained for: contract.json, a unit dataset dir or a tokenizer dir."""
    allow_pickle: bool = False
    """mode=convert: read a checkpoint that needs unpickling (only for files you trust)."""
    runs: list[str] = field(default_factory=list)
    """mode=table: resynth output dirs (each with wer.json) -> <out_dir>/table5.md."""
    allow_changes: list[str] = field(default_factory=list)
    """Settings allowed to differ from those that made out_dir (a rerun refuses any other change; [all] = any); the change is recorded in identity.json."""

    # May change on a rerun: how long and how visibly to train, threads, batching, how many files.
    RERUN_FREE: ClassVar[tuple[str, ...]] = (
        "out_dir", "threads", "progress", "resume", "limit", "batch_frames", "rtf_seconds",
        "train.steps", "train.max_minutes", "train.log_every", "train.ckpt_every",
    )
    # the settings each mode reads (the others stay at whatever the config says and are not compared)
    MODE_SETTINGS: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("mode", "device", "units_dir", "audio_dir", "train", "vocoder_model"),
        "resynth": ("mode", "device", "vocoder", "tokenizer_dir", "audio", "transcripts", "predict_durations",
                    "name", "asr"),
        "convert": ("mode", "checkpoint", "hifigan_config", "contract", "allow_pickle"),
        "rtf": ("mode", "device", "vocoder", "vocoder_model", "rtf_batch", "rtf_units", "rtf_seconds"),
        "table": ("mode", "runs"),
    }

    def identity_settings(self, flat: dict[str, Any]) -> dict[str, Any]:
        """Only the settings this mode reads; training may move to another device on resume."""
        from twist.run_identity import is_free

        keep = self.MODE_SETTINGS[self.mode]
        flat = {k: v for k, v in flat.items() if is_free(k, keep)}
        if self.mode == "train":
            flat.pop("device", None)
        return flat

    def identity_inputs(self) -> dict[str, str | None]:
        """The artefacts whose content this mode's outputs come from."""
        from pathlib import Path

        return {"train": {"units": self.units_dir and str(Path(self.units_dir) / "meta.json")},
                "resynth": {"vocoder": self.vocoder, "tokenizer_dir": self.tokenizer_dir},
                "convert": {"checkpoint": self.checkpoint},
                "rtf": {"vocoder": self.vocoder}}.get(self.mode, {})

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        type_choices(self)
        missing = [k for k in NEEDS[self.mode] if getattr(self, k) in (None, "")]
        if missing:
            raise ConfigError(f"mode={self.mode} needs {', '.join(missing)} (e.g. {missing[0]}=/path)"
                              if missing[0] != "rtf_seconds" else "mode=rtf needs rtf_seconds (e.g. rtf_seconds=10)")
