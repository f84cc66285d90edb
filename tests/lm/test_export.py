"""An exported speech LM is right in plain transformers, with no twist code in the way.

The model twist trains keeps alignment-padding rows in its embedding and head (a vocabulary
that is a multiple of 64 runs faster); twist masks them. Outside twist nothing masks them, so
the export must not carry them, and its generation config must keep ``<bos>``/``<pad>`` out
of samples.
"""

import json

import pytest
import torch

from twist.contract import VocabLayout
from twist.lm import build_speech_lm, load_speech_lm, mask_invalid_logits, save_speech_lm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained_looking(model, layout: VocabLayout):
    """Give the padding rows of the head the large logits an untrained row can have."""
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight[layout.n_real:layout.vocab_size] = 3.0 * head.weight[: layout.vocab_size - layout.n_real].abs()
    return model


def _twist_logprobs(model, ids, fwd, layout):
    with torch.no_grad():
        logits = model(**fwd(model, ids)).logits
    return torch.log_softmax(mask_invalid_logits(logits.float(), layout, allow_specials=True), -1)[..., : layout.n_real]


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "opt_proj", "imagegpt"])
def test_plain_transformers_gives_twists_masked_logprobs(family, make_node, contract, fwd, tmp_path):
    from transformers import AutoModelForCausalLM

    layout = contract.layout
    model = _trained_looking(build_speech_lm(make_node(family), "cold", contract, verbose=False), layout)
    ids = torch.randint(0, layout.n_real, (3, 12))
    want = _twist_logprobs(model, ids, fwd, layout)
    out = save_speech_lm(model, tmp_path / "slm", contract)
    assert model.get_output_embeddings().weight.shape[0] == layout.vocab_size  # training layout untouched

    plain = AutoModelForCausalLM.from_pretrained(out) if family != "imagegpt" else None
    if plain is None:  # ImageGPT has no AutoModelForCausalLM mapping; its own class is plain transformers too
        from transformers import ImageGPTForCausalImageModeling

        plain = ImageGPTForCausalImageModeling.from_pretrained(out)
    with torch.no_grad():
        got = torch.log_softmax(plain(**fwd(plain, ids)).logits.float(), -1)
    assert got.shape[-1] == layout.n_real
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)

    # twist's own loader gives the training layout back, with the same probabilities
    loaded, _ = load_speech_lm(out, expected=contract)
    assert loaded.get_output_embeddings().weight.shape[0] == layout.vocab_size
    torch.testing.assert_close(_twist_logprobs(loaded, ids, fwd, layout), want, rtol=0, atol=1e-5)


def test_plain_generate_samples_only_units_and_eos(make_node, contract, tmp_path):
    from transformers import AutoModelForCausalLM

    layout = contract.layout
    model = _trained_looking(build_speech_lm(make_node("llama"), "cold", contract, verbose=False), layout)
    with torch.no_grad():  # make <bos> and <pad> the most likely next tokens: only the config can stop them
        model.get_output_embeddings().weight[[layout.bos_id, layout.pad_id]] *= 5.0
    out = save_speech_lm(model, tmp_path / "slm", contract)
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (layout.bos_id, layout.eos_id, layout.pad_id)

    plain = AutoModelForCausalLM.from_pretrained(out)
    torch.manual_seed(0)
    sampled: list[int] = []
    while len(sampled) < 1000:
        prompt = torch.full((16, 1), layout.bos_id)
        with torch.no_grad():
            seqs = plain.generate(prompt, do_sample=True, max_new_tokens=40)
        for row in seqs[:, 1:].tolist():
            for t in row:
                sampled.append(t)
                if t == layout.eos_id:
                    break  # what follows <eos> is generate's own padding
    valid = set(range(contract.n_units)) | {layout.eos_id}
    bad = [t for t in sampled if t not in valid]
    assert len(sampled) >= 1000 and not bad, f"{len(bad)} of {len(sampled)} sampled ids are not units or <eos>"


def test_twist_still_loads_an_untrimmed_export(make_node, contract, fwd, tmp_path):
    """Directories exported before trimming (head and embedding at the padded width) still load."""
    layout = contract.layout
    model = build_speech_lm(make_node("opt"), "cold", contract, verbose=False)
    old = tmp_path / "old"
    model.save_pretrained(old)  # what save_speech_lm wrote before
    contract.save(old / "unit_contract.json")
    ids = torch.randint(0, layout.n_real, (2, 9))
    loaded, _ = load_speech_lm(old, expected=contract)
    torch.testing.assert_close(_twist_logprobs(loaded, ids, fwd, layout), _twist_logprobs(model, ids, fwd, layout),
                               rtol=0, atol=0)
