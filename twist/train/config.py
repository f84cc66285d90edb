"""``twist-train``'s settings, one dataclass per config group; each default is written here once.

The YAML files under ``twist/configs/`` (``train.yaml`` and the ``data/ optim/ schedule/
logger/ experiment/`` groups) only choose and override; the meaning and default of every key
is the docstring under its field below, and ``docs/config-reference.md`` is generated from them.
Recipe values follow TWIST (Hassid et al. 2023, §3.2 and appendix A.1): sequences of up to
704 tokens, a global batch of 64, AdamW with betas (0.9, 0.98), an inverse-sqrt schedule with
100 warmup steps, 400k steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from twist.errors import ConfigError
from twist.lm.config import InitConfig, ModelConfig
from twist.lm.families import ATTN_IMPLEMENTATIONS
from twist.schema import check_choice, check_positive


@dataclass
class MixRatios:
    """How many documents of each stream an epoch holds, relative to each other (data.interleave)."""

    text: float = 0.0
    """Text-only documents (from data.interleave.text), per unit of the other two."""
    interleaved: float = 0.0
    """Utterances laid out as interleaved text and speech (data.interleave.mode; needs word alignments)."""
    speech: float = 1.0
    """Utterances as speech only: <bos> <speech> units <eos>."""


@dataclass
class InterleaveConfig:
    """Speech-text interleaving for a text+units LM (+init=warm_interleaved; docs/interleave.md): a mixture of
    text-only, interleaved and speech-only documents, packed like every dataset. The default is speech only."""

    ratios: MixRatios = field(default_factory=MixRatios)
    """Each epoch: every train utterance once, interleaved or speech-only in the ratio interleaved:speech (seeded), plus text documents in the ratio text:(interleaved + speech)."""
    text: list[str] = field(default_factory=list)
    """Text files, or dirs of *.txt, for the text-only stream: one document per non-empty line (UTF-8)."""
    mode: str = "poisson"
    """poisson: speech spans of Poisson(span) words until fraction of the words are speech | speech: every word spoken | text: none."""
    span: float = 10.0
    """Mean words per speech span (Slam's SIMS: lambda = 10)."""
    fraction: float = 0.3
    """Share of an interleaved utterance's words that are spoken (SIMS: 0.3)."""
    loss: str = "all"
    """all: every next token is a target | units: only units (and an eos after a unit), text and markers are context."""

    def __post_init__(self) -> None:
        from twist.interleave import MODES

        check_choice("data.interleave.mode", self.mode, MODES)
        check_choice("data.interleave.loss", self.loss, ("all", "units"))
        check_positive("data.interleave.span", self.span)
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"data.interleave.fraction: must be in (0, 1], got {self.fraction}")
        r = self.ratios
        for key in ("text", "interleaved", "speech"):
            if getattr(r, key) < 0:
                raise ConfigError(f"data.interleave.ratios.{key}: must be >= 0, got {getattr(r, key)}")
        if r.interleaved + r.speech <= 0:
            raise ConfigError("data.interleave.ratios: interleaved + speech must be > 0 (an epoch is built around "
                              "the unit dataset's utterances)")
        if r.text > 0 and not self.text:
            raise ConfigError(f"data.interleave.text: ratios.text is {r.text}: give text files or dirs of *.txt "
                              "(data.interleave.text=[/data/text])")

    @property
    def active(self) -> bool:
        """Anything but TWIST's speech-only stream."""
        return self.ratios.text > 0 or self.ratios.interleaved > 0 or self.loss != "all"


@dataclass
class DataConfig:
    """The unit dataset trained on (written by twist-tokenize) and how it becomes sequences."""

    path: str = MISSING
    """Unit dataset directory (required): its train split is trained on, its valid split validates."""
    max_tokens: int = 704
    """Tokens per sequence including <bos>/<eos> (paper: 25 s at 25 Hz = 704); longer utterances are cut."""
    fraction: float = 1.0
    """Nested fraction of the train split: 0.01 | 0.1 | 1.0 (paper Table 6 data scaling)."""
    fraction_seed: int = 0
    """Seed of the fraction subset (same seed: the 1% subset lies inside the 10% one)."""
    packing: str = "auto"
    """auto | packed (document-masked windows) | padded (one utterance per row)."""
    valid_paths: list[str] = field(default_factory=list)
    """Extra unit datasets whose valid split is also scored; valid_ppl is the mean over all sets."""
    valid_max_windows: int | None = None
    """Score at most this many validation sequences per set (null = all)."""
    interleave: InterleaveConfig = field(default_factory=InterleaveConfig)

    def __post_init__(self) -> None:
        check_choice("data.packing", self.packing, ("auto", "packed", "padded"))
        if self.max_tokens < 2:
            raise ConfigError(f"data.max_tokens: must be at least 2, got {self.max_tokens}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"data.fraction: must be in (0, 1], got {self.fraction}")


@dataclass
class OptimConfig:
    """AdamW, as in the TWIST recipe. Learning rates come from init/ unless set here."""

    name: str = "adamw"
    """The optimiser: adamw (the only one)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """Adam betas (the fairseq/GSLM LM default)."""
    eps: float = 1.0e-8
    """Adam epsilon."""
    weight_decay: float = 0.01
    """Decoupled weight decay on matrices (not on biases or norms)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping; the norm is still logged)."""
    fused: str = "auto"
    """Fused AdamW kernels: auto (on CUDA) | true | false."""
    lr_max: float | None = None
    """Override init.lr_max (null = the init/ config's)."""
    lr_final: float | None = None
    """Override init.lr_final (null = the init/ config's)."""

    def __post_init__(self) -> None:
        check_choice("optim.name", self.name, ("adamw",))
        self.fused = str(self.fused).lower()
        check_choice("optim.fused", self.fused, ("auto", "true", "false"))
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas: need two numbers, got {list(self.betas)}")
        check_positive("optim.grad_clip", self.grad_clip, allow_zero=True)


@dataclass
class ScheduleConfig:
    """The learning-rate schedule (twist.train.schedule)."""

    name: str = "inverse_sqrt"
    """inverse_sqrt (paper) | cosine (the 7B recipe) | constant (debugging)."""
    warmup_steps: int = 100
    """Linear warmup steps (paper: 100; 7B recipe: 500)."""
    total_steps: int | None = None
    """cosine: the step at which lr reaches lr_final (null = train.max_steps)."""

    def __post_init__(self) -> None:
        from twist.train.schedule import KINDS

        check_choice("schedule.name", self.name, KINDS)
        check_positive("schedule.warmup_steps", self.warmup_steps, allow_zero=True)


@dataclass
class LoggerConfig:
    """Where metrics go besides <out_dir>/metrics.jsonl (always written)."""

    tensorboard: bool = True
    """Write TensorBoard scalars to <out_dir>/tb."""
    wandb: bool = False
    """Log to wandb (offline mode is set automatically when no network is reachable)."""
    project: str = "twist"
    """wandb project."""
    run_name: str | None = None
    """wandb run name (null = wandb's default)."""


@dataclass
class TrainLoopConfig:
    """The loop: devices, batch, stopping, validation, checkpoints, precision, speed switches."""

    device: str = "auto"
    """auto (cuda if visible, else cpu) | cpu | cuda."""
    strategy: str = "auto"
    """auto (ddp under torchrun, none alone) | none | ddp | fsdp (FSDP2, for models that do not fit: 7B)."""
    global_batch: int = 64
    """Sequences per optimiser step over all ranks (paper: 64); gradient accumulation fills the gap."""
    micro_batch: int = 8
    """Sequences per forward pass per rank; global_batch must be a multiple of micro_batch x world size."""
    valid_micro_batch: int | None = None
    """Sequences per validation forward pass (null = micro_batch)."""
    max_steps: int | None = 400000
    """Stop after this many optimiser steps (paper: 400k); null = no step limit."""
    max_train_tokens: int | None = None
    """Stop after this many non-padding training tokens; null = no limit."""
    max_time: Any = None
    """Stop after this much wall time in this process: seconds or "HH:MM:SS"; null = no limit."""
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    """On these signals finish the step, save checkpoints/last and exit 0 (pre-emption, SLURM --signal); [] = default handling."""
    valid_every: int = 5000
    """Validation PPL (and best-checkpoint selection) every N steps; 0 = only at the end."""
    save_every: int = 1000
    """Write checkpoints/last every N steps (also at every validation and at the end); 0 = only then."""
    log_every: int = 10
    """A metrics.jsonl / TensorBoard record every N steps."""
    checkpoint_format: str = "full"
    """full: rank 0 gathers model + optimiser into one file | sharded: every rank writes its shards (FSDP2 at 7B)."""
    precision: str = "auto"
    """auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32."""
    fsdp_param_dtype: str = "auto"
    """FSDP2 all-gather/compute dtype: auto (= the autocast dtype) | bf16 | fp32; master weights stay fp32."""
    attn_implementation: str = "auto"
    """auto (flex on CUDA for OPT/LLaMA/GPT-NeoX, eager for BLOOM, else sdpa; logged) | flex (block-sparse document masks, CUDA) | sdpa (dense document mask) | eager | flash_attention_2 (padded rows only); see docs/performance.md."""
    compile: bool = False
    """torch.compile the forward + loss (under FSDP2: the model, in place); checkpoints unchanged."""
    compile_backend: str = "inductor"
    """torch.compile backend when compile=true: inductor | aot_eager (checks graphs, no kernels) | eager."""
    activation_checkpointing: bool = False
    """Recompute block activations in backward: less GPU memory, about 1/3 more compute."""
    skip_nonfinite: int = 5
    """A NaN/inf gradient skips the update (weights untouched); more than this many in a row stops the run."""
    num_threads: int | None = None
    """CPU threads for torch (null = torch's default)."""
    progress: bool = True
    """tqdm progress bar on rank 0."""

    def __post_init__(self) -> None:
        check_choice("train.device", self.device, ("auto", "cpu", "cuda"))
        check_choice("train.strategy", self.strategy, ("auto", "none", "ddp", "fsdp"))
        check_choice("train.checkpoint_format", self.checkpoint_format, ("full", "sharded"))
        check_choice("train.precision", self.precision, ("auto", "bf16", "fp32"))
        check_choice("train.fsdp_param_dtype", self.fsdp_param_dtype, ("auto", "bf16", "fp32"))
        check_choice("train.compile_backend", self.compile_backend, ("inductor", "aot_eager", "eager"))
        check_choice("train.attn_implementation", self.attn_implementation, (*ATTN_IMPLEMENTATIONS, "flex_attention"))
        for key in ("global_batch", "micro_batch", "log_every", "max_steps", "max_train_tokens"):
            check_positive(f"train.{key}", getattr(self, key))
        for key in ("valid_every", "save_every", "skip_nonfinite"):
            check_positive(f"train.{key}", getattr(self, key), allow_zero=True)
        if self.global_batch % self.micro_batch:
            raise ConfigError(f"train.global_batch ({self.global_batch}) must be a multiple of "
                              f"train.micro_batch ({self.micro_batch})")
        self.max_time = seconds(self.max_time, "train.max_time")
        import signal

        bad = [s for s in self.stop_signals if not hasattr(signal, str(s))]
        if bad:
            raise ConfigError(f"train.stop_signals: unknown signal(s) {bad} (e.g. SIGTERM, SIGUSR1)")


@dataclass
class DPOConfig:
    """Preference optimisation (``+objective=dpo``, the Slam recipe's second stage; twist.train.objective)."""

    policy: str | None = None
    """Speech LM dir the policy starts from; the reference is this same model, frozen (required with objective=dpo)."""
    beta: float = 0.1
    """Strength of the pull towards the reference (Slam and TRL: 0.1)."""
    loss: str = "sigmoid"
    """sigmoid (DPO) | ipo (on per-token mean log-ratios) | sigmoid_norm (DPO on per-token mean log-ratios)."""
    precompute_reference: bool = False
    """Score every pair with the reference once, before training (resumable, kept in <out_dir>/reference/); then only the policy is in memory."""
    shared_prompt: str = "auto"
    """auto | true | false: score chosen and rejected in one row sharing the prompt (auto: where the family packs)."""

    def __post_init__(self) -> None:
        from twist.train.dpo_loss import LOSS_TYPES

        check_choice("dpo.loss", self.loss, LOSS_TYPES)
        self.shared_prompt = str(self.shared_prompt).lower()
        check_choice("dpo.shared_prompt", self.shared_prompt, ("auto", "true", "false"))
        check_positive("dpo.beta", self.beta)


OBJECTIVES = ("lm", "dpo")


@dataclass
class TrainRunConfig:
    """Everything ``twist-train`` reads (configs/train.yaml composed with its groups)."""

    out_dir: str = MISSING
    """Run directory: metrics.jsonl, checkpoints/{last,best}, speech_lm/, config.yaml (required)."""
    seed: int = 0
    """Seeds model init, data order and dropout."""
    resume: str = "auto"
    """auto: continue from <out_dir>/checkpoints/last if it exists | true: it must exist | false: refuse an existing run."""
    run_root: str | None = None
    """Parent of every cell's run directory in a paper-table sweep (experiment/ files use it in out_dir)."""
    objective: str = "lm"
    """lm: next-unit prediction on a unit dataset (TWIST) | dpo: preference pairs (+objective=dpo; dpo.*)."""
    model: ModelConfig | None = None
    """The text LM (+model=<file in configs/model>; no default on purpose; objective=dpo takes dpo.policy instead)."""
    init: InitConfig | None = None
    """Warm or cold start, and the vocabulary (+init=warm|cold|warm_interleaved; no default on purpose; not with objective=dpo)."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    allow_changes: list[str] = field(default_factory=list)
    """Settings allowed to differ from those that made out_dir (a rerun refuses any other change; [all] = any); the change is recorded in identity.json."""

    # May change when a run is resumed (recorded in identity.json, not compared): how long to
    # train, how to log and checkpoint, and how to run on the hardware at hand. Everything
    # else defines what the run dir holds (twist.run_identity).
    RERUN_FREE: ClassVar[tuple[str, ...]] = (
        "out_dir", "resume", "run_root", "logger", "model.cache_dir",
        "train.max_steps", "train.max_train_tokens", "train.max_time", "train.stop_signals",
        "train.valid_every", "train.save_every", "train.log_every", "train.progress", "train.skip_nonfinite",
        "train.device", "train.strategy", "train.micro_batch", "train.valid_micro_batch", "train.num_threads",
        "train.checkpoint_format", "train.fsdp_param_dtype", "train.attn_implementation",
        "train.compile", "train.compile_backend", "train.activation_checkpointing", "dpo.precompute_reference",
    )

    def identity_settings(self, flat: dict[str, Any]) -> dict[str, Any]:
        """A cosine schedule without total_steps ends at train.max_steps: then that is part of the run."""
        if self.schedule.name == "cosine" and self.schedule.total_steps is None:
            flat["schedule.total_steps"] = self.train.max_steps
        return flat

    def identity_inputs(self) -> dict[str, str | None]:
        """The artefacts whose content defines the run: the unit dataset's meta.json, the text LM."""
        from pathlib import Path

        inputs = {"data": str(Path(self.data.path) / "meta.json")}
        if self.data.interleave.ratios.text > 0:
            inputs.update({f"data.interleave.text[{i}]": p for i, p in enumerate(self.data.interleave.text)})
        if self.objective == "dpo":
            inputs["dpo.policy"] = self.dpo.policy
        elif self.model is not None and self.init is not None:
            source = self.model.source
            warm = source and self.init.name == "warm" and Path(source).exists()
            inputs["model.source"] = source if warm else None
        return inputs

    def __post_init__(self) -> None:
        self.resume = str(self.resume).lower()
        aliases = {"1": "true", "yes": "true", "0": "false", "no": "false"}
        self.resume = aliases.get(self.resume, self.resume)
        check_choice("resume", self.resume, ("auto", "true", "false"))
        check_choice("objective", self.objective, OBJECTIVES)
        if self.objective == "lm":
            for group in ("model", "init"):
                if getattr(self, group) is None:
                    raise ConfigError(f"no {group} chosen: add +{group}=<name> to the command line; choose one "
                                      f"of: {', '.join(group_choices(group))}")
        else:
            if not self.dpo.policy:
                raise ConfigError("objective=dpo needs dpo.policy=<speech LM dir> (the model to align; twist-train's "
                                  "<run>/speech_lm)")
            given = [g for g in ("model", "init") if getattr(self, g) is not None]
            if given:
                raise ConfigError(f"objective=dpo starts from dpo.policy: drop +{' and +'.join(given)} (the "
                                  "policy dir defines the model)")
        if self.schedule.name == "cosine" and not (self.schedule.total_steps or self.train.max_steps):
            raise ConfigError("schedule.total_steps: the cosine schedule needs it, or train.max_steps")

    @property
    def lr_max(self) -> float:
        """The peak learning rate: optim.lr_max if set, else the init/ config's."""
        if self.optim.lr_max is None and self.init is None:
            raise ConfigError("optim.lr_max: set it (objective=dpo has no init/ to take it from)")
        return float(self.optim.lr_max if self.optim.lr_max is not None else self.init.lr_max)

    @property
    def lr_final(self) -> float:
        """The final learning rate: optim.lr_final if set, else the init/ config's."""
        if self.optim.lr_final is None and self.init is None:
            return self.lr_max
        return float(self.optim.lr_final if self.optim.lr_final is not None else self.init.lr_final)


def group_choices(group: str) -> list[str]:
    """The files of a config group (``twist/configs/<group>/*.yaml``), for an error that lists them."""
    from pathlib import Path

    return sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "configs" / group).glob("*.yaml"))


def seconds(v: Any, key: str) -> float | None:
    """``None``, a number of seconds, or ``"HH:MM:SS"`` / ``"MM:SS"`` -> seconds."""
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)):
        return float(v)
    total = 0.0
    for part in str(v).split(":"):
        try:
            total = total * 60 + float(part)
        except ValueError:
            raise ConfigError(f"{key}: must be seconds or HH:MM:SS, got {v!r}") from None
    return total


@dataclass
class PlotConfig:
    """``twist-plot``: validation PPL against steps for several runs, as a PNG (paper Fig. 2b)."""

    runs: Any = MISSING
    """twist-train run directories, each holding metrics.jsonl: a list, or one directory (required)."""
    out: str = "valid_ppl.png"
    """Output PNG path."""
    metric: str = "valid_ppl"
    """Metric to draw: valid_ppl (mean over validation sets), valid_ppl/<set>, loss, ..."""
    labels: list[str] | None = None
    """Legend labels, one per run (null = "<model> <init>" from each run's config.yaml)."""
    title: str | None = None
    """Figure title (null = a default title)."""
    log_y: bool = False
    """Logarithmic y axis."""

    def __post_init__(self) -> None:
        self.runs = [self.runs] if isinstance(self.runs, str) else [str(r) for r in self.runs]
        if self.labels is not None and len(self.labels) != len(self.runs):
            raise ConfigError(f"labels: {len(self.labels)} given for {len(self.runs)} runs")
