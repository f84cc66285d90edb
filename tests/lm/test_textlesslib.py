"""Published TWIST LMs (config.offset, fairseq specials) map into twist's id layout."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from twist.contract import VocabLayout
from twist.lm import import_textlesslib_lm, load_speech_lm

OFFSET = 4  # fairseq dictionary: <s>=0 <pad>=1 </s>=2 <unk>=3, units from 4


def replica(kind: str, k: int, path):
    """A stand-in for a textlesslib TWIST directory: random weights, units at id u + offset."""
    common = dict(vocab_size=k + OFFSET + 3, bos_token_id=0, pad_token_id=1, eos_token_id=2)
    if kind == "opt":
        cfg = OPTConfig(hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64, **common)
        model_cls = OPTForCausalLM
    else:
        cfg = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=False, **common)
        model_cls = LlamaForCausalLM
    cfg.offset = OFFSET
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("kind", ["opt", "llama"])
def test_imported_model_scores_units_like_the_original(kind, contract, tmp_path):
    k = contract.n_units
    layout = VocabLayout(k)
    src = replica(kind, k, tmp_path / "src")
    imported = import_textlesslib_lm(tmp_path / "src", contract, out_dir=tmp_path / "out")
    units = torch.randint(0, k, (2, 10))
    old_ids = torch.cat([torch.zeros(2, 1, dtype=torch.long), units + OFFSET], 1)  # <s> u+offset ...
    new_ids = torch.cat([torch.full((2, 1), layout.bos_id), units], 1)
    with torch.no_grad():
        old = src(input_ids=old_ids).logits
        new = imported(input_ids=new_ids).logits
        reloaded = load_speech_lm(tmp_path / "out", expected=contract)[0](input_ids=new_ids).logits
    torch.testing.assert_close(new[..., :k], old[..., OFFSET : OFFSET + k], rtol=0, atol=1e-5)
    torch.testing.assert_close(new[..., layout.eos_id], old[..., 2], rtol=0, atol=1e-5)
    assert torch.equal(reloaded, new)
    assert imported.config.twist["init"] == "imported" and not hasattr(imported.config, "offset")


def test_refuses_a_contract_that_does_not_fit(contract, tmp_path):
    import dataclasses

    replica("opt", contract.n_units, tmp_path / "src")
    with pytest.raises(ValueError, match="exceeds its vocab_size"):
        import_textlesslib_lm(tmp_path / "src", dataclasses.replace(contract, n_units=500))
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError):
        import_textlesslib_lm(tmp_path / "plain", contract)
