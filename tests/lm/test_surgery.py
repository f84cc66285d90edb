"""Warm/cold start for every family: body bit for bit, fresh vocabulary, family quirks."""

import pytest
import torch

from twist.lm import build_speech_lm, cold_start, load_text_lm, param_report, warm_start
from twist.lm.surgery import count_params, vocab_param_names


def body(model):
    fresh = vocab_param_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in fresh}


def test_warm_start_keeps_every_body_tensor_bit_for_bit(family_key, make_node, contract):
    text = load_text_lm(make_node(family_key))
    speech = warm_start(text, contract)
    text_body, speech_body = body(text), body(speech)
    assert set(text_body) == set(speech_body)  # nothing dropped, nothing added
    for k, t in speech_body.items():
        assert t.dtype == text_body[k].dtype, k
        assert torch.equal(t, text_body[k]), f"{k} changed in the warm start"
        assert t.data_ptr() != text_body[k].data_ptr(), f"{k} shares storage with the text LM"


def test_share_body_takes_the_text_tensors_without_a_copy(family_key, make_node, contract):
    """What build_speech_lm does: one model's memory, not two, and no random init of the body."""
    text = load_text_lm(make_node(family_key))
    expected = {k: v.clone() for k, v in body(text).items()}
    buffers = dict(text.named_buffers())  # non-persistent ones too (rotary inv_freq, causal masks)
    speech = warm_start(text, contract, share_body=True, seed=3)
    for k, t in body(speech).items():
        assert t.data_ptr() == body(text)[k].data_ptr(), f"{k} was copied"
        assert torch.equal(t, expected[k])
    for k, b in speech.named_buffers():
        assert not b.is_meta and torch.equal(b, buffers[k]), k
    assert not any(p.is_meta for p in speech.parameters())
    # the new rows depend on the seed only, not on sharing
    again = warm_start(load_text_lm(make_node(family_key)), contract, seed=3)
    assert torch.equal(speech.get_input_embeddings().weight, again.get_input_embeddings().weight)
    assert torch.equal(speech.get_output_embeddings().weight, again.get_output_embeddings().weight)


def test_vocabulary_is_the_padded_unit_layout(family_key, make_node, contract, fwd):
    layout = contract.layout
    text = load_text_lm(make_node(family_key))
    speech = warm_start(text, contract)
    emb, head = speech.get_input_embeddings().weight, speech.get_output_embeddings().weight
    assert layout.vocab_size % 64 == 0 and layout.vocab_size >= contract.n_units + 3
    assert head.shape[0] == layout.vocab_size
    # ImageGPT's head has vocab_size - 1 rows, so its table keeps one unused extra row.
    assert emb.shape[0] == layout.vocab_size + (family_key == "imagegpt")
    ids = torch.randint(0, layout.n_real, (2, 9))
    assert speech(**fwd(speech, ids)).logits.shape == (2, 9, layout.vocab_size)
    assert (speech.config.bos_token_id, speech.config.eos_token_id, speech.config.pad_token_id) == (
        layout.bos_id, layout.eos_id, layout.pad_id)


def test_new_rows_use_the_family_init(family_key, make_node, contract):
    text = load_text_lm(make_node(family_key))
    speech = warm_start(text, contract)
    cfg = speech.config
    std = getattr(cfg, "init_std", None) if cfg.model_type == "opt" else cfg.initializer_range
    w = speech.get_input_embeddings().weight.detach()
    pad = getattr(speech.get_input_embeddings(), "padding_idx", None)
    rows = [i for i in range(w.shape[0]) if i != pad]
    assert abs(w[rows].std().item() - std) < 0.25 * std
    if pad is not None:
        assert torch.count_nonzero(w[pad]) == 0


def test_family_quirks(family_key, make_node, contract):
    text = load_text_lm(make_node(family_key))
    speech = warm_start(text, contract)
    names = set(body(speech))
    emb, head = speech.get_input_embeddings().weight, speech.get_output_embeddings().weight
    tied = emb is head
    assert tied == (text.get_input_embeddings().weight is text.get_output_embeddings().weight)
    if family_key == "opt_proj":
        assert {"model.decoder.project_in.weight", "model.decoder.project_out.weight"} <= names
        assert emb.shape[1] == 16 and tied
    if family_key.startswith("opt"):
        pos = speech.model.decoder.embed_positions
        assert pos.offset == 2 and pos.weight.shape[0] == make_node(family_key)["config"]["max_position_embeddings"] + 2
        assert "model.decoder.embed_positions.weight" in names
    if family_key == "bloom":
        assert {"transformer.word_embeddings_layernorm.weight", "transformer.word_embeddings_layernorm.bias"} <= names
    if family_key == "gpt_neox":
        assert not tied and "embed_out.weight" not in names and not speech.config.tie_word_embeddings
    if family_key == "llama":
        assert tied and not any("rotary" in n for n in names)
    if family_key == "imagegpt":
        assert not tied


def test_cold_start_differs_from_warm_in_the_body_and_is_seeded(family_key, make_node, contract):
    text = load_text_lm(make_node(family_key))
    warm = body(warm_start(text, contract))
    cold_model = cold_start(text.config, contract, seed=0)
    cold = body(cold_model)
    assert set(cold) == set(warm)
    matrices = [k for k, v in warm.items() if v.ndim >= 2 and v.dtype.is_floating_point]
    assert matrices
    for k in matrices:
        assert not torch.equal(cold[k], warm[k]), f"{k} is the same in cold and warm"
    again = body(cold_start(text.config, contract, seed=0))
    assert all(torch.equal(again[k], cold[k]) for k in cold)
    assert cold_model.config.twist["init"] == "cold"


def test_mean_embed_init_is_random_plus_text_mean(make_node, contract):
    for key in ("llama", "gpt_neox"):  # tied and untied heads
        text = load_text_lm(make_node(key))
        rnd = warm_start(text, contract, embed_init="random", seed=3)
        mean = warm_start(text, contract, embed_init="mean", seed=3)
        pairs = [(rnd.get_input_embeddings(), mean.get_input_embeddings(), text.get_input_embeddings())]
        if key == "gpt_neox":
            pairs.append((rnd.get_output_embeddings(), mean.get_output_embeddings(), text.get_output_embeddings()))
        for r, m, t in pairs:
            shift = t.weight.mean(0)
            pad = getattr(m, "padding_idx", None)
            rows = [i for i in range(m.weight.shape[0]) if i != pad]
            torch.testing.assert_close((m.weight - r.weight)[rows], shift.expand(len(rows), -1), rtol=0, atol=1e-6)
            if pad is not None:  # the family keeps its padding row at zero
                assert torch.count_nonzero(m.weight[pad]) == 0
        assert all(torch.equal(a, b) for a, b in zip(body(rnd).values(), body(mean).values()))
    with pytest.raises(ValueError, match="embed_init"):
        warm_start(text, contract, embed_init="zeros")


def test_num_layers_keeps_the_first_blocks(make_node, contract, tmp_path):
    full = load_text_lm(make_node("llama"))
    full.save_pretrained(tmp_path / "text")  # a local HF dir source
    speech = build_speech_lm({"name": "t", "family": "llama", "source": str(tmp_path / "text"), "num_layers": 1},
                             "warm", contract, verbose=False)
    assert len(speech.model.layers) == 1 and speech.config.num_hidden_layers == 1
    ref = full.state_dict()
    for k, v in body(speech).items():
        assert torch.equal(v, ref[k]), k
    with pytest.raises(ValueError, match="num_layers"):
        build_speech_lm({"family": "llama", "source": str(tmp_path / "text"), "num_layers": 5}, "warm", contract)


def test_param_report_matches_a_direct_count(family_key, make_node, contract, capsys):
    n = make_node(family_key)
    for init in ("warm", "cold"):
        speech = build_speech_lm(n, {"name": init, "embed_init": "random"}, contract)
        report = param_report(speech)
        assert report.speech_lm == count_params(speech)
        assert report.text_lm == count_params(load_text_lm(n))  # derived from config == counted
        assert report.speech_lm < report.text_lm
        assert speech.config.twist["init"] == init
    out = capsys.readouterr().out
    assert "fewer" in out and f"{report.text_lm / 1e6:.2f}M" in out


def test_bad_init_and_override_are_refused(make_node, contract):
    with pytest.raises(ValueError, match="warm' or 'cold"):
        build_speech_lm(make_node("opt"), "lukewarm", contract)
    bad = make_node("opt")
    bad["config"]["not_a_field"] = 1
    with pytest.raises(ValueError, match="not_a_field"):
        build_speech_lm(bad, "warm", contract)


@pytest.mark.slow
def test_warm_start_benchmark_runs_and_adds_no_body_copy(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "warm_start_memory.py"
    spec = importlib.util.spec_from_file_location("warm_start_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--model", "opt-125m"])
    assert out["twist"]["added_gib"] < 0.05  # the 85M-parameter body (0.3 GiB) is not copied
    assert "time ratio plain / twist" in capsys.readouterr().out
