"""The tiny model of each family that tests and benchmarks/gpu_suite.py build: one table.

Each shape is a few config-class arguments (``model.config`` with ``model.source: null``):
2 layers, 32 wide, enough positions for the packed windows the tests use. Hidden dropout is
0 so that a model in train mode computes the same thing packed and padded; a test that
needs a family's own dropout (resume restores the RNG) sets it back.

Import as ``from tests.model_shapes import ...`` (pytest's rootdir is on the path; the GPU
suite puts the repository root there).
"""

from __future__ import annotations

from typing import Any

TINY_SHAPES: dict[str, dict[str, Any]] = {
    "opt": {"hidden_size": 32, "word_embed_proj_dim": 32, "ffn_dim": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 160, "dropout": 0.0, "attention_dropout": 0.0},
    "llama": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 160},
    "qwen2": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 160},
    "gpt_neox": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "max_position_embeddings": 160},
    "bloom": {"hidden_size": 32, "n_layer": 2, "n_head": 4},
    "imagegpt": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 160},
}  # fmt: skip


def tiny_config(family: str, **overrides: Any) -> dict[str, Any]:
    """The config-class arguments of ``family``'s tiny model, with ``overrides`` applied."""
    return {**TINY_SHAPES[family], **overrides}


def tiny_node(family: str, name: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A ``model/`` node (twist.lm.config.ModelConfig fields) for ``family``'s tiny model,
    built from its config class with random weights."""
    return {"name": name or f"tiny-{family}", "family": family, "source": None, "gguf_file": None,
            "num_layers": None, "dtype": "float32", "config": tiny_config(family, **overrides)}


def tiny_speech_lm(family: str, contract: Any, seed: int = 0, **overrides: Any) -> Any:
    """A cold-started tiny speech LM of ``family`` (``overrides`` change its shape)."""
    from twist.lm import build_speech_lm

    return build_speech_lm(tiny_node(family, **overrides), "cold", contract, seed=seed, verbose=False)


def tiny_family_model_for_vocab(family: str, vocab_size: int, seed: int = 0, **overrides: Any) -> Any:
    """A plain transformers model of ``family``'s tiny shape with exactly ``vocab_size`` ids
    (what an exported speech LM holds: no alignment-padding rows)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(family, **tiny_config(family, **overrides), vocab_size=vocab_size)
    return AutoModelForCausalLM.from_config(config)
