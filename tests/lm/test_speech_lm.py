"""Speech LM on disk: self-contained save/load, contract checks, masked padding rows."""

import dataclasses
import json

import pytest
import torch

from twist.contract import ContractMismatchError
from twist.lm import build_speech_lm, contract_of, load_speech_lm, mask_invalid_logits, save_speech_lm
from twist.lm.sources import model_class_for


def test_save_load_gives_identical_logits(family_key, make_node, contract, fwd, tmp_path):
    model = build_speech_lm(make_node(family_key), "warm", contract, verbose=False)
    ids = torch.randint(0, contract.layout.n_real, (2, 11))
    with torch.no_grad():
        ref = model(**fwd(model, ids)).logits
    out = save_speech_lm(model, tmp_path / "slm", contract)
    assert (out / "config.json").is_file() and (out / "unit_contract.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left

    n_real = contract.layout.n_real  # the padding columns are masked, and not exported
    loaded, got = load_speech_lm(out, expected=contract)
    assert got == contract and contract_of(loaded) == contract
    with torch.no_grad():
        assert torch.equal(loaded(**fwd(loaded, ids)).logits[..., :n_real], ref[..., :n_real])

    # Plain transformers, nothing else: the directory is self-contained.
    cfg = json.loads((out / "config.json").read_text())
    plain = model_class_for(loaded.config).from_pretrained(out)
    assert cfg["twist"]["contract"]["n_units"] == contract.n_units
    with torch.no_grad():
        assert torch.equal(plain(**fwd(plain, ids)).logits, ref[..., :n_real])


def test_contract_mismatch_is_refused_naming_both_sides(make_node, contract, tmp_path):
    model = build_speech_lm(make_node("opt"), "cold", contract, verbose=False)
    save_speech_lm(model, tmp_path / "slm", contract)
    other = dataclasses.replace(contract, n_units=50, encoder="hubert")
    with pytest.raises(ContractMismatchError) as err:
        load_speech_lm(tmp_path / "slm", expected=other, expected_name="dataset /data/units")
    msg = str(err.value)
    assert f"speech LM {tmp_path / 'slm'}" in msg and "dataset /data/units" in msg
    assert "n_units" in msg and "20" in msg and "50" in msg and "'logmel'" in msg and "'hubert'" in msg
    # saving with a contract other than the model's own is refused as well
    with pytest.raises(ContractMismatchError):
        save_speech_lm(model, tmp_path / "slm2", other)


def test_loading_a_plain_text_lm_is_refused(make_node, tmp_path):
    from twist.lm import load_text_lm

    load_text_lm(make_node("opt")).save_pretrained(tmp_path / "text")
    with pytest.raises(ValueError, match="not a twist speech LM"):
        load_speech_lm(tmp_path / "text")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_speech_lm(tmp_path / "missing")


def test_padding_rows_get_no_probability_mass(make_node, contract, fwd):
    layout = contract.layout
    model = build_speech_lm(make_node("llama"), "warm", contract, verbose=False)
    ids = torch.randint(0, layout.n_real, (3, 8))
    with torch.no_grad():
        logits = model(**fwd(model, ids)).logits
    assert torch.isfinite(logits[..., layout.n_real:]).all()  # the raw head does score them
    probs = mask_invalid_logits(logits, layout).softmax(-1)
    assert torch.all(probs[..., layout.n_real:] == 0)
    assert torch.all(probs[..., : layout.n_real] > 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 8))
    sampled = mask_invalid_logits(logits, contract, allow_specials=False).softmax(-1)
    assert torch.all(sampled[..., [layout.bos_id, layout.pad_id]] == 0)
    assert torch.all(sampled[..., layout.eos_id] > 0)
    draws = torch.multinomial(sampled.reshape(-1, layout.vocab_size), 200, replacement=True)
    assert int(draws.max()) <= layout.eos_id and not torch.isin(draws, torch.tensor([layout.bos_id])).any()
    # loss over masked logits stays finite for every real target
    loss = torch.nn.functional.cross_entropy(mask_invalid_logits(logits, layout).flatten(0, 1), ids.flatten())
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="columns"):
        mask_invalid_logits(logits[..., :10], layout)
