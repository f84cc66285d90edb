"""``twist-eval``'s settings; each default is written here once (benchmark settings: twist.eval.registry).

The ``benchmarks`` node is built from the registry's rows, so a new benchmark's settings
appear in the schema, the config reference and the command-line check without an edit here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any, ClassVar

from omegaconf import MISSING

from twist.errors import ConfigError
from twist.eval.registry import (
    BENCHMARKS,
    CrossModalStoryClozeSettings,
    check_cross_modal_directions,
    check_generation_asr,
)
from twist.lm.families import ATTN_IMPLEMENTATIONS
from twist.schema import check_choice, type_choices

BenchmarksConfig = make_dataclass(
    "BenchmarksConfig",
    [(b.key, b.settings, field(default_factory=b.settings)) for b in BENCHMARKS],
)
BenchmarksConfig.__doc__ = "Every benchmark twist-eval can run; one runs when its input is set."
BenchmarksConfig.__module__ = __name__


@dataclass
class CompareConfig:
    """mode=compare: one table over several eval runs."""

    runs: list[str] = field(default_factory=list)
    """Eval run dirs (each with results.json) to put in one table, in row order."""
    names: list[str] = field(default_factory=list)
    """Optional row names, one per run (default: each run's model_name)."""


@dataclass
class EvalRunConfig:
    """Everything ``twist-eval`` reads (configs/eval.yaml)."""

    mode: str = "eval"
    """eval: score one model | compare: one table over several eval run dirs (compare.runs)."""
    out_dir: str = MISSING
    """Run directory: results.json, results.md, items/, submission/, rejects.jsonl, config.yaml (required)."""
    model_path: str | None = None
    """Speech LM dir (save_speech_lm / the trainer's <run>/speech_lm); required in eval mode."""
    model_name: str | None = None
    """Name shown in tables (null = the model dir's name)."""
    tokenizer_dir: str | None = None
    """UnitTokenizer dir, typically <unit dataset>/tokenizer; required when a benchmark reads audio."""
    tokenizer_device: str = "auto"
    """Where the tokenizer's encoder runs: auto (cuda if visible) | cpu | cuda."""
    device: str = "auto"
    """auto (cuda if visible, else cpu) | cpu | cuda | cuda:N."""
    dtype: str = "auto"
    """Model weights: auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16 | float16."""
    batch_size: int = 32
    """Sequences per forward pass; sequences are length-sorted and scores do not depend on it."""
    max_batch_tokens: int | None = None
    """Cap on padded tokens per forward pass (null = no cap); bounds memory on long stories."""
    pack_tokens: int | None = None
    """Pack sequences into rows of this many tokens under a document mask (null = padded length-sorted buckets); rows per pass: batch_size, or max_batch_tokens / pack_tokens."""
    attn_implementation: str = "auto"
    """auto (flex on CUDA for OPT/LLaMA/GPT-NeoX, eager for BLOOM, else sdpa; as train.attn_implementation, logged) | flex | sdpa | eager | flash_attention_2 (padded buckets only: no pack_tokens)."""
    decide_by: str = "sum"
    """sum (paper, ZeroSpeech baseline) | mean (per-token, SlamKit): which log-prob decides a pair."""
    score_eos: bool = True
    """Count log p(<eos>) in an utterance's score (the model was trained to end utterances)."""
    max_length: int | None = None
    """Longest <bos> units <eos> sequence fed to the model (null = the model's max_position_embeddings)."""
    too_long: str = "error"
    """error | truncate: what to do with a longer sequence (truncations are counted in results)."""
    cache_dir: str | None = None
    """Audio->units cache root (null = $TWIST_CACHE/eval_units or ~/.cache/twist/eval_units; "off" = none)."""
    tokenize_batch_size: int = 16
    """Audio files per tokenizer call."""
    strict: bool = False
    """An unreadable audio file stops the run (false: its pairs are skipped and logged in rejects.jsonl)."""
    allow_incomplete: bool = False
    """Exit 0 although a ZR2021 split is incomplete (missing or extra wavs); results.json records it either way."""
    progress: bool = True
    """tqdm progress bars."""
    zr2021_root: str | None = None
    """A ZeroSpeech 2021 root holding lexical/ and syntactic/ (fills benchmarks.swuggy.dir / sblimp.dir)."""
    bench_root: str | None = None
    """A twist-bench output dir: uses its lexical/, syntactic/, storycloze/sSC/, storycloze/tSC/ and the multi-speaker storycloze/sSC_ms/, storycloze/tSC_ms/ (or sSC/, tSC/, ... directly) where they exist."""
    benchmarks: BenchmarksConfig = field(default_factory=BenchmarksConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    allow_changes: list[str] = field(default_factory=list)
    """Settings allowed to differ from those that made out_dir (a rerun refuses any other change; [all] = any); the change is recorded in identity.json."""

    # May change on a rerun: devices, batching (scores do not depend on it), caches, labels, strictness.
    RERUN_FREE: ClassVar[tuple[str, ...]] = (
        "out_dir", "model_name", "device", "tokenizer_device", "batch_size", "max_batch_tokens", "pack_tokens",
        "attn_implementation",
        "cache_dir", "tokenize_batch_size", "strict", "allow_incomplete", "progress",
        "benchmarks.generation.batch_size", "benchmarks.generation.sampling.batch_size",
    )

    def identity_inputs(self) -> dict[str, Any]:
        """The speech LM, tokenizer and vocoder whose content the scores are of."""
        return {"model_path": self.model_path, "tokenizer_dir": self.tokenizer_dir,
                "vocoder": self.benchmarks.generation.vocoder}

    def __post_init__(self) -> None:
        type_choices(self)
        check_generation_asr(self.benchmarks.generation.asr)
        for b in BENCHMARKS:
            if b.settings is CrossModalStoryClozeSettings:
                check_cross_modal_directions(b.key, getattr(self.benchmarks, b.key).directions)
        check_choice("mode", self.mode, ("eval", "compare"))
        check_choice("decide_by", self.decide_by, ("sum", "mean"))
        check_choice("too_long", self.too_long, ("error", "truncate"))
        check_choice("attn_implementation", self.attn_implementation, (*ATTN_IMPLEMENTATIONS, "flex_attention"))
        if self.pack_tokens and self.attn_implementation.startswith("flash_attention"):
            from twist.lm.packing import EVAL_SETTINGS, packing_mode

            packing_mode("", "packed", self.attn_implementation, EVAL_SETTINGS)  # refuses, as scoring would
        if self.mode == "compare" and not self.compare.runs:
            raise ConfigError("mode=compare needs compare.runs=[<eval run dir>, ...]")

