"""``twist-vocoder``'s settings; each default is written here once.

The unit HiFi-GAN with a duration predictor follows speech-resynthesis (Polyak et al. 2021)
as used by TWIST (appendix A.2): AdamW at 2e-4 with betas (0.8, 0.99), a mel L1 loss weighted
45, feature matching 2, LSGAN 1, 400k steps of 16 segments of 8,960 samples. The generator,
discriminator and mel shapes come from a ``vocoder_model/`` file (their keys are those of
twist.vocoder.generator.GeneratorConfig and twist.vocoder.train).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from twist.schema import check_choice, check_positive

MODES = ("train", "resynth", "convert", "rtf", "table")


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
class VocoderModelConfig:
    """A vocoder_model/ file: the shapes of the generator, the discriminators and the mel loss."""

    name: str = "hifigan-50hz"
    """The preset's name (shown in reports)."""
    generator: dict[str, Any] = field(default_factory=dict)
    """GeneratorConfig fields: embedding_dim, upsample_rates (product = hop), resblock, dur_predictor_params, ..."""
    discriminator: dict[str, Any] = field(default_factory=dict)
    """periods (multi-period), n_scales (multi-scale), width (channel multiplier; 1.0 = published)."""
    mel: dict[str, Any] = field(default_factory=dict)
    """The mel-loss spectrogram: n_fft, hop_length, win_length, n_mels, fmin, fmax."""


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
    asr: dict[str, Any] = field(default_factory=lambda: {"backend": "none"})
    """ASR for resynthesis WER (an asr/ file: backend faster-whisper | hf-whisper | none, and its options)."""
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
    """Seconds of random units for the real-time-factor benchmark (resynth: null skips it)."""
    rtf_batch: int = 1
    """mode=rtf: utterances per batch."""
    rtf_units: int = 100
    """mode=rtf without a vocoder: K of the random-weight model of vocoder_model."""
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
