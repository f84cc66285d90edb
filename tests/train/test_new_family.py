"""Adding a model family is one row of the family table (twist/lm/families.py).

A LLaMA-shaped model registered with transformers under a model type twist has never heard of
stands in for a new family. Without a row it trains and scores on padded rows only; with one
row it trains packed (loss equal to the padded loss) and scores packed (scores equal to the
padded ones), with no other edit anywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tests.model_shapes import tiny_node
from twist.errors import ConfigError
from twist.eval.likelihood import LikelihoodScorer
from twist.lm import families, load_speech_lm
from twist.lm.config import ModelConfig
from twist.lm.packing import pad_documents
from twist.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW_TYPE = "twist_test_family"


class NewFamilyConfig(LlamaConfig):
    model_type = NEW_TYPE


class NewFamilyForCausalLM(LlamaForCausalLM):
    config_class = NewFamilyConfig


@pytest.fixture(scope="module", autouse=True)
def _registered_with_transformers():
    """What a family that transformers ships already has: a config and a causal-LM class."""
    AutoConfig.register(NEW_TYPE, NewFamilyConfig, exist_ok=True)
    AutoModelForCausalLM.register(NewFamilyConfig, NewFamilyForCausalLM, exist_ok=True)


def _cfg(make_cfg, unit_data, out):
    cfg = make_cfg(unit_data, out, max_steps=3, valid_every=3, save_every=0)
    node = tiny_node("llama", name="tiny-new-family")
    cfg.model = ModelConfig(**{**node, "family": NEW_TYPE})
    return cfg


def _packed_and_padded_loss(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """The same windows of the run's stream, packed and one utterance per padded row."""
    trainer.model.eval()
    windows = [trainer.stream._next_window()[1] for _ in range(3)]
    assert sum(len(w) for w in windows) > len(windows)  # documents share windows
    packed = trainer.stream.make_batch(windows)
    padded = pad_documents([trainer.stream._read(p) for w in windows for p in w], trainer.contract.layout)
    with torch.no_grad():
        lp = trainer.objective.forward_loss(packed) / packed.n_targets
        lu = trainer.objective.forward_loss(padded) / padded.n_targets
    trainer.model.train()
    return lp, lu


def test_a_family_added_as_one_table_row_trains_and_scores_packed(make_cfg, unit_data, contract, tmp_path,
                                                                  monkeypatch):
    # without a row: padded rows only, and packed scoring is refused
    trainer = Trainer(_cfg(make_cfg, unit_data, tmp_path / "no_row"))
    assert type(trainer.model).__name__ == "NewFamilyForCausalLM"
    assert trainer.objective.packing == "padded"
    with pytest.raises(ConfigError, match=f"not supported for model type '{NEW_TYPE}'"):
        LikelihoodScorer(trainer.model, contract, pack_tokens=64)

    # the one edit: a row in the family table
    monkeypatch.setitem(families.FAMILIES, NEW_TYPE, families.Family(NEW_TYPE))
    trainer = Trainer(_cfg(make_cfg, unit_data, tmp_path / "row"))
    assert trainer.objective.packing == "packed" and trainer.attention.mask == "bool"  # CPU: dense document mask
    lp, lu = _packed_and_padded_loss(trainer)
    assert torch.allclose(lp, lu, atol=1e-5, rtol=0), (float(lp), float(lu))
    result = trainer.fit()
    assert result.step == 3 and math.isfinite(result.best_value)

    # the exported speech LM scores packed: equal to padded, under the dense mask and flex
    model, saved = load_speech_lm(tmp_path / "row" / "speech_lm")
    assert saved == contract and model.config.model_type == NEW_TYPE
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, contract.n_units, size=int(n)) for n in rng.integers(1, 40, size=30)]
    padded = LikelihoodScorer(model, contract, batch_size=4).score_units(seqs)
    for attn in ("auto", "flex"):  # flex scores on CPU (forward only)
        scorer = LikelihoodScorer(model, contract, batch_size=4, pack_tokens=96, attn_implementation=attn)
        assert scorer.attention.packing == "packed"
        rows = [r for batch in scorer._packed_rows(np.asarray([len(s) + 2 for s in seqs])) for r in batch]
        assert len(rows) < len(seqs) / 2  # sequences really share rows
        packed = scorer.score_units(seqs)
        np.testing.assert_allclose(packed.sum, padded.sum, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(packed.n_tokens, padded.n_tokens)
