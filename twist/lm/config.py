"""The ``model/`` and ``init/`` config groups: which text LM, and whether its weights are used.

A ``model/`` file (``twist/configs/model/*.yaml``) fills :class:`ModelConfig` for one text LM;
an ``init/`` file fills :class:`InitConfig` with the paper's warm or cold start and its
learning rates (Hassid et al. 2023, §2.2 and appendix A.1), and the vocabulary: the paper's
units only, or the text LM's tokenizer with units appended (``init/warm_interleaved``). Both are read by
:func:`twist.lm.build_speech_lm` and by every stage that trains a speech LM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twist.schema import check_choice

DTYPE_NAMES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto")
EMBED_INITS = ("random", "mean", "text_rows", "mean_cov")
VOCABS = ("units", "text+units")


@dataclass
class ModelConfig:
    """One text LM (``+model=<file in configs/model>``)."""

    name: str = "model"
    """A label used in logs and in the saved speech LM's config."""
    family: str | None = None
    """transformers model_type: opt | bloom | gpt_neox | llama | imagegpt | ... (required when source is null)."""
    source: str | None = None
    """Local HF dir | .gguf path | pkg:<python package>[/sub] | hub id (needs a network or $TWIST_MODELS_DIR); null = random weights from the family's config class."""
    gguf_file: str | None = None
    """A GGUF file name inside `source` (dequantised once and cached as safetensors); null = not GGUF."""
    config: dict[str, Any] = field(default_factory=dict)
    """Overrides of the HF config fields (e.g. {dropout: 0.1}); with source null, the config-class arguments."""
    num_layers: int | None = None
    """null keeps every block; N keeps only the first N blocks (explicit depth truncation)."""
    dtype: str = "float32"
    """Weights dtype: float32 (training master weights) | bfloat16 | float16 | auto (the checkpoint's own)."""
    cache_dir: str | None = None
    """Where dequantised GGUF copies are cached; null = $TWIST_CACHE_DIR or ~/.cache/twist."""
    tokenizer: str | None = None
    """The text LM's tokenizer: a tokenizer dir | a .gguf path | pkg:<python package>[/sub] | hub id; null = the text LM's own (model.source). Read for init.vocab=text+units (and by GenPPL's text LM); a model with source null needs it there."""

    def __post_init__(self) -> None:
        check_choice("model.dtype", str(self.dtype).lower(), DTYPE_NAMES)
        if self.num_layers is not None and self.num_layers < 1:
            from twist.errors import ConfigError

            raise ConfigError(f"model.num_layers: must be at least 1 (or null for every block), got {self.num_layers}")


@dataclass
class InitConfig:
    """Warm or cold start (``+init=warm|cold|warm_interleaved``), the learning rates that go with it, and the vocabulary."""

    name: str = "warm"
    """warm: the text LM's body is loaded (its weights are read), new unit embeddings (TWIST) | cold: the same architecture, every weight fresh (only the text LM's config is read)."""
    embed_init: str = "random"
    """New embedding (and untied head) rows: random (the paper's; the family's own init) | mean (random + the text rows' mean) | text_rows (Slam's: id i starts as text row i) | mean_cov (drawn from a normal with the text rows' mean and covariance). Warm only; docs/lm.md."""
    lr_max: float = 4.0e-4
    """Peak learning rate (paper A.1: 4e-4 with a pretrained LM, 8e-5 without)."""
    lr_final: float = 8.0e-5
    """Final learning rate (paper A.1: 8e-5 with a pretrained LM, 2.5e-5 without)."""
    vocab: str = "units"
    """units: the text vocabulary is replaced by the units (TWIST) | text+units: the text LM's tokenizer ids and embedding rows are kept and the units, <speech> and <text> appended (speech-text interleaving; `+init=warm_interleaved`). docs/lm.md."""

    def __post_init__(self) -> None:
        check_choice("init.name", self.name, ("warm", "cold"))
        check_choice("init.embed_init", self.embed_init, EMBED_INITS)
        check_choice("init.vocab", self.vocab, VOCABS)
