"""twist-train with ``+init=warm_interleaved`` on a (units-first) unit dataset: the batches are
built in the model's text+units layout and the export is a text+units model dir with its tokenizer.

This is the speech-only stream of such a model; the mixture of text, interleaved and speech
documents (data.interleave) is tests/train/test_interleave.py's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.model_shapes import tiny_node
from tests.text_tokenizers import save_tiny_text_tokenizer
from twist.contract import LAYOUT_NAME, TEXT_UNITS_LAYOUT, VocabLayout
from twist.lm import contract_of, load_speech_lm, load_speech_tokenizer
from twist.lm.config import ModelConfig
from twist.lm.packing import IGNORE_INDEX, document_lengths, utterance_documents
from twist.train.data import TrainStream, open_split, valid_batches
from twist.train.trainer import Trainer


def test_a_text_units_layout_frames_the_same_utterances_with_speech_at_the_offset(unit_data):
    ds = open_split(unit_data, "train")
    lay = VocabLayout.text_units(ds.contract.n_units, text_vocab=300, bos_id=1, eos_id=2, pad_id=0)
    plain = TrainStream(ds, max_tokens=32, global_batch=4, micro_batch=2, seed=1)
    tu = TrainStream(ds, max_tokens=32, global_batch=4, micro_batch=2, seed=1, layout=lay)
    assert plain.layout.name == LAYOUT_NAME and tu.layout is lay
    for a, b in zip(plain.next_step(), tu.next_step()):
        assert b.input_ids.shape == a.input_ids.shape
        ids = b.input_ids[b.segments > 0]
        units = ids[(ids >= lay.unit_offset) & (ids < lay.unit_offset + lay.n_units)]
        assert units.numel() > 0 and set(ids.tolist()) <= {*range(300, 300 + lay.n_units), 1, 2, lay.speech_id}
        # every <bos> is followed by <speech>: a marker opens every utterance
        flat = b.input_ids.flatten().tolist()
        for i, t in enumerate(flat[:-1]):
            if t == lay.bos_id:
                assert flat[i + 1] == lay.speech_id
        assert (b.targets[b.targets != IGNORE_INDEX] != lay.bos_id).all()
    # an utterance is <bos> <speech> units <eos>, and the plan counts the marker
    u = np.asarray(ds[0])
    doc = utterance_documents(u, lay, 1 << 30)[0]
    assert doc.tolist() == [1, lay.speech_id, *(u + 300).tolist(), 2]
    assert document_lengths(len(u), 1 << 30, lay.framing_tokens) == [len(doc)] == [len(u) + 3]
    vb = next(valid_batches(ds, max_tokens=32, micro_batch=2, layout=lay))[0]
    assert lay.speech_id in vb.input_ids.tolist()[0]


@pytest.mark.slow
def test_train_warm_interleaved_exports_a_text_units_model_with_its_tokenizer(make_cfg, unit_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_dir = save_tiny_text_tokenizer(tmp_path / "tok")
    cfg = make_cfg(unit_data, tmp_path / "run", max_steps=2, valid_every=2, save_every=0)
    cfg.model = ModelConfig(**tiny_node("llama", vocab_size=300, tie_word_embeddings=True), tokenizer=str(tok_dir))
    cfg.init.name, cfg.init.vocab = "warm", "text+units"
    result = Trainer(cfg).fit()
    out = result.export_dir
    mine = contract_of(load_speech_lm(out)[0])
    assert mine.layout_name == TEXT_UNITS_LAYOUT and mine.text_vocab == 300
    assert json.loads((tmp_path / "run" / "contract.json").read_text())["layout"] == TEXT_UNITS_LAYOUT
    tok = load_speech_tokenizer(out)
    assert len(tok) == mine.layout.n_real and len(AutoTokenizer.from_pretrained(out)) == mine.layout.n_real
    plain = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.from_numpy(mine.layout.encode(np.arange(4)))[None]
    assert plain(input_ids=ids).logits.shape[-1] == mine.layout.n_real


def test_preference_pairs_of_a_text_units_policy_put_units_at_their_offset():
    """A pair's prompt opens <bos> <speech>; its units and the continuations' are at the offset;
    a cut keeps the opening, the prompt's end and the continuations' start (as units-first)."""
    from twist.train.dpo import pair_sequences

    lay = VocabLayout.text_units(20, text_vocab=300, bos_id=1, eos_id=2, pad_id=0)
    p, c, r, cut = pair_sequences(np.arange(3), np.array([4, 5]), np.array([6]), lay, max_tokens=32)
    assert not cut and p.tolist() == [1, lay.speech_id, 300, 301, 302]
    assert c.tolist() == [304, 305, 2] and r.tolist() == [306, 2]
    p, c, r, cut = pair_sequences(np.arange(10), np.arange(4), np.arange(2), lay, max_tokens=8)
    assert cut and p.tolist() == [1, lay.speech_id, 309] and c.tolist() == [300, 301, 302, 303, 2]
    assert len(p) + max(len(c), len(r)) == 8
    units_first = VocabLayout(20)
    p, c, _, _ = pair_sequences(np.arange(3), np.array([4, 5]), np.array([6]), units_first, max_tokens=32)
    assert p.tolist() == [20, 0, 1, 2] and c.tolist() == [4, 5, 21]


@pytest.mark.slow
def test_dpo_on_a_text_units_policy_keeps_its_layout_and_ships_its_tokenizer(contract, tmp_path):
    """Units-first pairs fit a text+units policy of the same units; the aligned export keeps the
    policy's layout and carries its tokenizer on."""
    from tests.train.test_dpo_training import dpo_cfg
    from twist.lm import build_speech_lm, save_speech_lm, speech_tokenizer_for
    from twist.pairs import PreferencePair, write_pair_dataset

    node = {**tiny_node("llama", vocab_size=300, tie_word_embeddings=True),
            "tokenizer": str(save_tiny_text_tokenizer(tmp_path / "tok"))}
    model = build_speech_lm(node, {"name": "warm", "vocab": "text+units"}, contract, verbose=False)
    mine = contract_of(model)
    policy = save_speech_lm(model, tmp_path / "policy", tokenizer=speech_tokenizer_for(node, mine))
    rng = np.random.default_rng(0)
    pairs = [PreferencePair(id=f"p{i}", split="valid" if i >= 6 else "train", voice="v",
                            prompt=rng.integers(0, 20, 5), chosen=rng.integers(0, 20, 3), rejected=rng.integers(0, 20, 4),
                            prompt_text="p", chosen_text="c", rejected_text="r") for i in range(8)]
    write_pair_dataset(tmp_path / "pairs", pairs, contract, made_by={"source": "test"}, split={"seed": 0, "valid": 0.2})
    cfg = dpo_cfg((policy, tmp_path / "pairs"), tmp_path / "run", global_batch=2, micro_batch=2, max_steps=2,
                  valid_every=2, save_every=0)
    out = Trainer(cfg).fit().export_dir
    assert contract_of(load_speech_lm(out)[0]) == mine
    assert (out / "tokenizer.json").read_text() == (policy / "tokenizer.json").read_text()
