"""Tiny model/ nodes, one per family, built offline from each config class."""

import pytest
import torch

# Every family TWIST uses, plus OPT-350M's project_in/out shape (word_embed_proj_dim != hidden).
FAMILY_NODES = {
    "opt": {
        "family": "opt",
        "config": dict(hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=64, vocab_size=300),
    },
    "opt_proj": {
        "family": "opt",
        "config": dict(hidden_size=32, word_embed_proj_dim=16, ffn_dim=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=64, vocab_size=300,
                       do_layer_norm_before=False),
    },
    "bloom": {"family": "bloom", "config": dict(hidden_size=32, n_layer=2, n_head=4, vocab_size=300)},
    "gpt_neox": {
        "family": "gpt_neox",
        "config": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       max_position_embeddings=64, vocab_size=300, tie_word_embeddings=False),
    },
    "llama": {
        "family": "llama",
        "config": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=64, max_position_embeddings=64, vocab_size=300, tie_word_embeddings=True),
    },
    "imagegpt": {"family": "imagegpt", "config": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=300)},
}


def node(key: str, **extra) -> dict:
    d = {"name": f"tiny-{key}", "source": None, "gguf_file": None, "num_layers": None, "dtype": "float32"}
    d.update(FAMILY_NODES[key])
    d["config"] = dict(d["config"])
    d.update(extra)
    return d


@pytest.fixture(params=sorted(FAMILY_NODES))
def family_key(request):
    return request.param


def forward_kwargs(model, ids: torch.Tensor) -> dict:
    """The speech-LM calling convention; BLOOM (ALiBi) takes no position_ids."""
    kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if model.config.model_type != "bloom":
        kw["position_ids"] = torch.arange(ids.shape[1]).expand_as(ids)
    return kw


@pytest.fixture
def make_node():
    return node


@pytest.fixture
def fwd():
    return forward_kwargs
