"""Speech-only scoring of a text+units model: text logits masked, found from the contract.

A speech-only sequence is ``<bos> <speech> units <eos>``; each unit (and eos) is scored by the
model's distribution renormalised over the units and eos (what speech can continue with).
The ``<speech>`` marker is context, not a target.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from twist.contract import TEXT_UNITS_LAYOUT, UnitContract
from twist.eval.likelihood import LikelihoodScorer

K2 = UnitContract(encoder="fake", encoder_fingerprint="e", layer=None, frame_rate=50.0, n_units=2,
                  kmeans_fingerprint="k", dedup=True)
# text ids 0..3 (pad 0, bos 1, eos 2), units 4 and 5, <speech> 6, <text> 7, alignment padding 8..63
TU2 = dataclasses.replace(K2, layout_name=TEXT_UNITS_LAYOUT, text_vocab=4, text_bos_id=1, text_eos_id=2,
                          text_pad_id=0, text_tokenizer="four-words", text_tokenizer_fingerprint="f")


def _fixed_table() -> torch.Tensor:
    """Rows: the previous token; columns: the next. Over the units and eos (the speech support):

      <speech>: u0 log 3, u1 0, eos 0         -> p(u0)=3/5, p(u1)=1/5, p(eos)=1/5
      u0:       u0 0, u1 log 2, eos log 4     -> 1/7, 2/7, 4/7
      u1:       u0 log 6, u1 0, eos log 2     -> 6/9, 1/9, 2/9

    Text ids and markers get large logits (log 50, log 100, log 30) and the alignment padding
    +20: unmasked, every number would change.
    """
    lay = TU2.layout
    t = torch.zeros(lay.vocab_size, lay.vocab_size)
    t[:, lay.n_real:] = 20.0
    s, u0, u1, eos = lay.speech_id, lay.unit_offset, lay.unit_offset + 1, lay.eos_id
    t[s, 3], t[s, u0] = math.log(50), math.log(3)
    t[u0, 0], t[u0, u1], t[u0, eos] = math.log(100), math.log(2), math.log(4)
    t[u1, lay.text_id], t[u1, u0], t[u1, eos] = math.log(30), math.log(6), math.log(2)
    t[u1, lay.speech_id] = math.log(30)
    return t


def _renormalised(table: torch.Tensor, seq: list[int], support: torch.Tensor, scored: set[int]) -> float:
    """sum over scored targets of log p(t | prev) - log sum_{s in support} p(s | prev), from the
    full softmax: scoring renormalised over the speech support, computed the long way."""
    total = 0.0
    for prev, t in zip(seq[:-1], seq[1:]):
        if t not in scored:
            continue
        p = torch.softmax(table[prev].double(), -1)
        total += math.log(p[t] / p[support].sum())
    return total


def test_masked_scoring_equals_scoring_renormalised_over_units_on_a_hand_computed_case(ev):
    lay = TU2.layout
    table = _fixed_table()
    model = ev.FixedLogitsLM(table)
    scorer = LikelihoodScorer(model, TU2, batch_size=2)
    assert scorer.token_ids(np.array([0, 1])).tolist() == [1, 6, 4, 5, 2]  # <bos> <speech> units <eos>
    s = scorer.score_units([np.array([0, 1]), np.array([1])])
    want = [math.log(3 / 5) + math.log(2 / 7) + math.log(2 / 9), math.log(1 / 5) + math.log(2 / 9)]
    np.testing.assert_allclose(s.sum, want, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(s.n_tokens, [3, 2])  # units and eos; the marker is not a target
    support = lay.speech_support()
    scored = {*range(lay.unit_offset, lay.unit_offset + lay.n_units), lay.eos_id}
    long_way = [_renormalised(table, scorer.token_ids(np.array(u)).tolist(), support, scored) for u in ([0, 1], [1])]
    np.testing.assert_allclose(s.sum, long_way, rtol=0, atol=1e-5)

    no_eos = LikelihoodScorer(model, TU2, batch_size=2, score_eos=False).score_units([np.array([0, 1])])
    # the same distribution (eos stays in the support), its eos term left out
    np.testing.assert_allclose(no_eos.sum, [math.log(3 / 5) + math.log(2 / 7)], rtol=0, atol=1e-5)
    assert no_eos.n_tokens.tolist() == [2]


@pytest.mark.parametrize("pack", [None, 48])
def test_a_text_units_model_is_scored_over_units_packed_or_padded(pack, ev):
    """A random tiny Llama with the text+units vocabulary: the scorer's numbers are its logits'
    log-softmax over the units and eos, read from the contract with no setting."""
    tu = dataclasses.replace(TU2, n_units=20, text_vocab=40)
    lay = tu.layout
    model = ev.tiny_llama(tu, seed=3)
    rng = np.random.default_rng(0)
    units = [rng.integers(0, 20, size=int(n)) for n in rng.integers(1, 15, size=9)]
    got = LikelihoodScorer(model, tu, batch_size=4, pack_tokens=pack).score_units(units)
    support = lay.speech_support()
    want = []
    for u in units:
        ids = torch.from_numpy(lay.encode(u))[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].double()
        lp = logits.masked_fill(~support, -math.inf).log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
        want.append(float(lp[1:].sum()))  # the first target is <speech>
    np.testing.assert_allclose(got.sum, want, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(got.n_tokens, [len(u) + 1 for u in units])
    unmasked = LikelihoodScorer(model, dataclasses.replace(K2, n_units=20), batch_size=4)
    assert unmasked.layout.n_real < lay.n_real  # (a units-first reading of the same model is another thing)


def test_ppl_of_a_text_units_model_on_a_units_first_dataset(tmp_path, ev):
    """The unit dataset's contract fits the model's (same units), and PPL is the masked one."""
    from twist.eval.ppl import load_split, perplexity
    from twist.units import UnitShardWriter, merge_shards

    tu = dataclasses.replace(TU2, n_units=20, text_vocab=40)
    data = dataclasses.replace(tu, layout_name=K2.layout_name, **{f: None for f in (
        "text_vocab", "text_bos_id", "text_eos_id", "text_pad_id", "text_tokenizer", "text_tokenizer_fingerprint")})
    rng = np.random.default_rng(1)
    with UnitShardWriter(tmp_path / "units", data) as w:
        for i in range(6):
            w.add(f"u{i}", rng.integers(0, 20, size=int(rng.integers(3, 12))), raw=False)
    merge_shards(tmp_path / "units", split={"seed": 0, "valid": 0.0, "test": 0.0})
    view = load_split(tmp_path / "units", "all", tu)
    scorer = LikelihoodScorer(ev.tiny_llama(tu, seed=4), tu, batch_size=3)
    summary, rows = perplexity(scorer, view)
    manual = scorer.score_units([np.asarray(view[i]) for i in range(len(view))])
    assert summary["n_tokens"] == int(manual.n_tokens.sum()) == sum(len(view[i]) + 1 for i in range(len(view)))
    assert summary["ppl"] == pytest.approx(math.exp(-manual.sum.sum() / manual.n_tokens.sum()), rel=1e-9)


def test_a_context_is_not_scored_and_an_ending_is_scored_over_its_own_modality(ev):
    """Cross-modal StoryCloze's two layouts, hand-computed: only the tokens from ``score_from`` on
    are targets; a spoken ending is renormalised over the units and eos, a text ending over the
    text ids. The markers and the context are context."""
    lay = TU2.layout
    t = _fixed_table()
    w3, text, speech, eos, u0, u1 = 3, lay.text_id, lay.speech_id, lay.eos_id, lay.unit_offset, lay.unit_offset + 1
    # after <text>: over the text ids {pad, bos, eos, w3} = (1, 1, 1, 3)  -> p(w3) = 3/6
    t[text, w3], t[text, u0], t[text, speech] = math.log(3), math.log(50), math.log(40)
    # after w3: (1, 1, 4, 1) -> p(eos) = 4/7; a unit is by far likelier, but not a text id
    t[w3, eos], t[w3, u1] = math.log(4), math.log(60)
    scorer = LikelihoodScorer(ev.FixedLogitsLM(t), TU2, batch_size=2)
    s2t = [1, speech, u0, u1, text, w3, eos]  # spoken context, then the text ending "w3"
    t2s = [1, text, w3, speech, u0, u1, eos]  # text context, then the spoken ending u0 u1
    text_end = scorer.score_token_ids([np.array(s2t)], score_from=[5], support="text")
    np.testing.assert_allclose(text_end.sum, [math.log(3 / 6) + math.log(4 / 7)], rtol=0, atol=1e-5)
    assert text_end.n_tokens.tolist() == [2]
    speech_end = scorer.score_token_ids([np.array(t2s), np.array(t2s[:-2] + [eos])], score_from=[4, 4])
    np.testing.assert_allclose(speech_end.sum, [math.log(3 / 5) + math.log(2 / 7) + math.log(2 / 9),
                                                math.log(3 / 5) + math.log(4 / 7)], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(speech_end.n_tokens, [3, 2])
    np.testing.assert_allclose(speech_end.mean, speech_end.sum / [3, 2])
    no_eos = LikelihoodScorer(ev.FixedLogitsLM(t), TU2, score_eos=False)
    np.testing.assert_allclose(no_eos.score_token_ids([np.array(s2t)], score_from=[5], support="text").sum,
                               [math.log(3 / 6)], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="support must be one of"):
        scorer.score_token_ids([np.array(s2t)], support="words")


@pytest.mark.parametrize("support", ["speech", "text"])
def test_scoring_from_a_position_is_the_same_packed_or_padded_and_equals_the_logits(support, ev):
    """A random tiny Llama: each sequence's score from its own start position, over one support,
    equals its logits' log-softmax over that support summed from there, packed or padded."""
    tu = dataclasses.replace(TU2, n_units=20, text_vocab=40)
    lay = tu.layout
    model = ev.tiny_llama(tu, seed=5)
    rng = np.random.default_rng(2)
    seqs, starts = [], []
    for n in rng.integers(2, 12, size=7):
        ctx = rng.integers(lay.unit_offset, lay.unit_offset + 20, size=int(rng.integers(1, 6)))
        end = rng.integers(3, 40, size=int(n)) if support == "text" else rng.integers(lay.unit_offset, lay.unit_offset + 20, size=int(n))
        marker = lay.text_id if support == "text" else lay.speech_id
        seqs.append(np.array([lay.bos_id, lay.speech_id, *ctx, marker, *end, lay.eos_id]))
        starts.append(len(ctx) + 3)
    mask = lay.text_support() if support == "text" else lay.speech_support()
    want = []
    for s, at in zip(seqs, starts):
        ids = torch.from_numpy(s)[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].double()
        lp = logits.masked_fill(~mask, -math.inf).log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
        want.append(float(lp[at - 1 :].sum()))
    for pack in (None, 48):
        got = LikelihoodScorer(model, tu, batch_size=3, pack_tokens=pack).score_token_ids(seqs, score_from=starts,
                                                                                        support=support)
        np.testing.assert_allclose(got.sum, want, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(got.n_tokens, [len(s) - at for s, at in zip(seqs, starts)])
