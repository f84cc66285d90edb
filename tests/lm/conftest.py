"""Tiny text-LM model/ nodes, one per family (shapes: tests/model_shapes.py), built offline."""

import pytest
import torch

from tests.model_shapes import tiny_node

TEXT_VOCAB = 300  # the stand-in text vocabulary the surgery replaces

# Every family TWIST uses, plus OPT-350M's project_in/out shape (word_embed_proj_dim != hidden),
# with each family's embedding tying as its real checkpoints have it.
FAMILY_NODES = {
    "opt": tiny_node("opt", vocab_size=TEXT_VOCAB),
    "opt_proj": tiny_node("opt", "tiny-opt_proj", vocab_size=TEXT_VOCAB, word_embed_proj_dim=16,
                          do_layer_norm_before=False),
    "bloom": tiny_node("bloom", vocab_size=TEXT_VOCAB),
    "gpt_neox": tiny_node("gpt_neox", vocab_size=TEXT_VOCAB, tie_word_embeddings=False),
    "llama": tiny_node("llama", vocab_size=TEXT_VOCAB, tie_word_embeddings=True),
    "imagegpt": tiny_node("imagegpt", vocab_size=TEXT_VOCAB),
}


def node(key: str, **extra) -> dict:
    d = dict(FAMILY_NODES[key])
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
