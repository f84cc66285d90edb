"""``init.embed_init``: how the warm start fills the new embedding (and untied head) rows.

``random`` (the paper's) must stay the family's own init on the seed; ``text_rows`` (Slam)
copies text row i to id i; ``mean_cov`` draws from a normal with the text rows' mean and
covariance. Each is checked against what it says it does, row by row.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from twist.errors import ConfigError
from twist.lm import build_speech_lm, load_text_lm, save_speech_lm, warm_start
from twist.lm.config import InitConfig
from twist.lm.surgery import sample_mean_cov, vocab_param_names


def body(model):
    fresh = vocab_param_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in fresh}


def untied(model) -> bool:
    return model.get_output_embeddings().weight is not model.get_input_embeddings().weight


def test_random_embed_init_is_the_family_init_on_the_seed_unchanged(family_key, make_node, contract):
    """The paper's init: the rows are what the family's own ``_init_weights`` draws under the seed,
    embedding first, then an untied head, exactly as before ``embed_init`` had more choices."""
    text = load_text_lm(make_node(family_key))
    speech = warm_start(text, contract, embed_init="random", seed=3)
    emb, head = speech.get_input_embeddings(), speech.get_output_embeddings()
    fresh = [copy.deepcopy(emb)] + ([copy.deepcopy(head)] if untied(speech) else [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        for mod in fresh:
            speech._init_weights(mod)
    assert torch.equal(fresh[0].weight, emb.weight)
    if untied(speech):
        assert torch.equal(fresh[1].weight, head.weight)
    assert speech.config.twist["embed_init"] == "random"


def test_text_rows_copies_text_row_i_to_id_i_bit_for_bit(family_key, make_node, contract):
    """Slam's rule (``resize_token_embeddings`` on the pretrained LM): unit i, and bos/eos/pad at
    their ids, start as text row i; an untied head's row i is the text head's row i."""
    layout = contract.layout
    text = load_text_lm(make_node(family_key))
    speech = warm_start(text, contract, embed_init="text_rows", seed=3)
    pairs = [(speech.get_input_embeddings().weight, text.get_input_embeddings().weight)]
    if untied(speech):
        pairs.append((speech.get_output_embeddings().weight, text.get_output_embeddings().weight))
    for new, old in pairs:
        n = min(new.shape[0], old.shape[0])
        assert n >= layout.n_real  # every unit and special has its text row (text vocab 300 > 64)
        assert torch.equal(new[:n], old[:n])
        for special in (layout.bos_id, layout.eos_id, layout.pad_id):
            assert torch.equal(new[special], old[special])
    rnd = warm_start(text, contract, embed_init="random", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(body(rnd).values(), body(speech).values()))
    assert speech.config.twist["embed_init"] == "text_rows"


def test_text_rows_beyond_a_small_text_vocabulary_keep_the_family_init(make_node, contract):
    """Ids past the text vocabulary (only alignment padding, which never gets probability mass)
    have no text row to copy: they keep the random init; a vocabulary without a row for every
    unit and special is refused."""
    layout = contract.layout
    small = layout.n_real + 5  # 28 text rows for 64 speech ids
    for key in ("llama", "gpt_neox"):
        node = make_node(key)
        node["config"] = {**node["config"], "vocab_size": small}
        text = load_text_lm(node)
        rows = warm_start(text, contract, embed_init="text_rows", seed=3)
        rnd = warm_start(text, contract, embed_init="random", seed=3)
        mods = [("get_input_embeddings", small)] + ([("get_output_embeddings", small)] if key == "gpt_neox" else [])
        for getter, n in mods:
            new, old, ref = (getattr(m, getter)().weight for m in (rows, text, rnd))
            assert torch.equal(new[:n], old[:n]) and torch.equal(new[n:], ref[n:])
    node = make_node("llama")
    node["config"] = {**node["config"], "vocab_size": layout.n_real - 1}
    with pytest.raises(ConfigError, match=rf"text_rows.*{layout.n_real - 1} rows.*{layout.n_real}"):
        warm_start(load_text_lm(node), contract, embed_init="text_rows")


def test_mean_cov_samples_match_the_text_mean_and_covariance():
    """20,000 rows drawn from a 300 x 6 text embedding with correlated columns: the sample mean
    and covariance agree with the text rows' own, each entry within 5 standard errors of its
    estimate (mean: sqrt(S_jj / n); covariance: sqrt((S_ii S_jj + S_ij^2) / n))."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g) * torch.tensor([1.0, 0.5, 2.0, 0.1, 1.0, 0.3])
    text = (torch.randn(300, 6, generator=g) @ mix + torch.linspace(-1, 1, 6)).float()
    n = 20_000
    rows = sample_mean_cov(text, n, torch.Generator().manual_seed(5))
    assert rows.shape == (n, 6) and rows.dtype == text.dtype
    t = text.double()
    mean = t.mean(0)
    cov = (t - mean).T @ (t - mean) / t.shape[0]  # the population covariance, as transformers' mean_resizing
    r = rows.double()
    r_mean = r.mean(0)
    r_cov = (r - r_mean).T @ (r - r_mean) / (n - 1)
    var = torch.diagonal(cov)
    assert ((r_mean - mean).abs() <= 5 * (var / n).sqrt()).all(), (r_mean, mean)
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((r_cov - cov).abs() <= 5 * se_cov).all(), (r_cov - cov) / se_cov
    # seeded: the same generator seed gives the same rows, another seed others
    assert torch.equal(rows, sample_mean_cov(text, n, torch.Generator().manual_seed(5)))
    assert not torch.equal(rows, sample_mean_cov(text, n, torch.Generator().manual_seed(6)))


def test_mean_cov_survives_a_rank_deficient_text_embedding():
    """Fewer text rows than dimensions (or repeated rows) make the covariance singular; the draw
    still has the text rows' mean and stays in their span."""
    text = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    rows = sample_mean_cov(text, 4000, torch.Generator().manual_seed(1))
    assert torch.isfinite(rows).all()
    torch.testing.assert_close(rows.double().mean(0), text.double().mean(0), atol=0.1, rtol=0)
    centred = text.double() - text.double().mean(0)
    basis = torch.linalg.svd(centred, full_matrices=False).Vh[:2]  # rank 2 after centring
    resid = (rows.double() - text.double().mean(0)) - (rows.double() - text.double().mean(0)) @ basis.T @ basis
    assert resid.abs().max() < 1e-4


def test_mean_cov_warm_start_draws_the_embedding_then_an_untied_head(make_node, contract):
    for key in ("llama", "gpt_neox"):  # tied and untied heads
        text = load_text_lm(make_node(key))
        speech = warm_start(text, contract, embed_init="mean_cov", seed=3)
        g = torch.Generator().manual_seed(3)
        emb = speech.get_input_embeddings()
        expected = sample_mean_cov(text.get_input_embeddings().weight, emb.weight.shape[0], g)
        pad = getattr(emb, "padding_idx", None)
        if pad is not None:  # the family's convention, as for embed_init=mean: the padding row is zero
            assert torch.count_nonzero(emb.weight[pad]) == 0
            expected[pad] = 0
        assert torch.equal(emb.weight, expected)
        if key == "gpt_neox":
            head = speech.get_output_embeddings().weight
            assert torch.equal(head, sample_mean_cov(text.get_output_embeddings().weight, head.shape[0], g))
        again = warm_start(text, contract, embed_init="mean_cov", seed=3)
        assert torch.equal(again.get_input_embeddings().weight, emb.weight)
        rnd = warm_start(text, contract, embed_init="random", seed=3)
        assert all(torch.equal(a, b) for a, b in zip(body(rnd).values(), body(speech).values()))


@pytest.mark.parametrize("embed_init", ["text_rows", "mean_cov"])
def test_the_exported_model_dir_records_the_embed_init(embed_init, make_node, contract, tmp_path):
    model = build_speech_lm(make_node("gpt_neox"), {"name": "warm", "embed_init": embed_init}, contract,
                            verbose=False)
    save_speech_lm(model, tmp_path / "lm", contract)
    meta = json.loads((tmp_path / "lm" / "config.json").read_text())["twist"]
    assert (meta["init"], meta["embed_init"]) == ("warm", embed_init)


def test_embed_init_choices_are_the_four_and_others_are_refused():
    for ok in ("random", "mean", "text_rows", "mean_cov"):
        assert InitConfig(embed_init=ok).embed_init == ok
    with pytest.raises(ConfigError, match="init.embed_init.*text_rows"):
        InitConfig(embed_init="text_row")
