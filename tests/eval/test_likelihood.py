"""The likelihood scorer: hand-computed log-probs, batch-size invariance, a trained preference."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from twist.contract import UnitContract, VocabLayout
from twist.eval.inputs import final_units
from twist.eval.likelihood import LikelihoodScorer
from twist.eval.pairs import accuracy, decide

K2 = UnitContract(encoder="fake", encoder_fingerprint="e", layer=None, frame_rate=50.0, n_units=2,
                  kmeans_fingerprint="k", dedup=True)


def _fixed_table() -> torch.Tensor:
    """K=2: ids 0,1 units; 2 bos; 3 eos; 4 pad; 5..63 alignment padding.

    Rows (previous token) over ids 0..4 (probabilities after the softmax over valid ids):
      bos: [log 3, 0, 0, 0, 0]          -> p(0)=3/7, p(1)=1/7, p(eos)=1/7
      0:   [0, log 2, 0, log 4, 0]      -> p(0)=1/9, p(1)=2/9, p(eos)=4/9
      1:   [log 6, 0, 0, log 2, 0]      -> p(0)=6/11, p(1)=1/11, p(eos)=2/11
    Alignment-padding columns get +20: if they were not masked every number would change.
    """
    V = VocabLayout(2).vocab_size
    t = torch.zeros(V, V)
    t[:, 5:] = 20.0
    t[2, 0] = math.log(3)
    t[0, 1], t[0, 3] = math.log(2), math.log(4)
    t[1, 0], t[1, 3] = math.log(6), math.log(2)
    return t


def test_fixed_logits_give_hand_computed_logprobs_and_decisions(ev):
    model = ev.FixedLogitsLM(_fixed_table())
    scorer = LikelihoodScorer(model, K2, batch_size=2)
    a, b, c = [0, 1], [1, 0], [1]
    s = scorer.score_units([np.array(a), np.array(b), np.array(c)])
    # bos 0 1 eos: p(0|bos) p(1|0) p(eos|1)
    want_a = math.log(3 / 7) + math.log(2 / 9) + math.log(2 / 11)
    # bos 1 0 eos: p(1|bos) p(0|1) p(eos|0)
    want_b = math.log(1 / 7) + math.log(6 / 11) + math.log(4 / 9)
    # bos 1 eos
    want_c = math.log(1 / 7) + math.log(2 / 11)
    np.testing.assert_allclose(s.sum, [want_a, want_b, want_c], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(s.n_tokens, [3, 3, 2])
    np.testing.assert_allclose(s.mean, [want_a / 3, want_b / 3, want_c / 2], atol=1e-5)

    # a positive that scores lower loses, higher wins, equal ties at 0.5
    assert decide(s.sum[0], s.sum[1]) == 0.0  # want_a < want_b
    assert decide(s.sum[1], s.sum[0]) == 1.0
    assert decide(s.sum[0], s.sum[0]) == 0.5
    # sum and mean decide (a vs c) differently: c is shorter, so its sum is higher but its mean is lower
    assert want_a < want_c and want_a / 3 > want_c / 2
    assert decide(s.pick("sum")[0], s.pick("sum")[2]) == 0.0
    assert decide(s.pick("mean")[0], s.pick("mean")[2]) == 1.0
    assert accuracy(decide(s.sum[[1, 0]], s.sum[[0, 2]])) == pytest.approx(0.5)


def test_eos_can_be_left_out_of_the_score(ev):
    scorer = LikelihoodScorer(ev.FixedLogitsLM(_fixed_table()), K2, score_eos=False)
    s = scorer.score_units([np.array([0, 1]), np.array([1, 0])])
    want = [math.log(3 / 7) + math.log(2 / 9), math.log(1 / 7) + math.log(6 / 11)]
    np.testing.assert_allclose(s.sum, want, atol=1e-5)
    np.testing.assert_array_equal(s.n_tokens, [2, 2])
    # without eos the decision flips: a now beats b
    assert decide(s.sum[0], s.sum[1]) == 1.0


def test_dedup_follows_the_contract():
    assert final_units(np.array([0, 0, 1, 1, 1, 0]), K2).tolist() == [0, 1, 0]
    raw = dataclasses.replace(K2, dedup=False)
    assert final_units(np.array([0, 0, 1]), raw).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="unit id 2 is outside"):
        final_units(np.array([0, 2]), K2)


def test_scores_do_not_depend_on_batch_size(ev, small_contract):
    model = ev.tiny_llama(small_contract)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, small_contract.n_units, size=int(n)) for n in rng.integers(1, 60, size=40)]
    one = LikelihoodScorer(model, small_contract, batch_size=1).score_units(seqs)
    many = LikelihoodScorer(model, small_contract, batch_size=32).score_units(seqs)
    capped = LikelihoodScorer(model, small_contract, batch_size=32, max_batch_tokens=100).score_units(seqs)
    np.testing.assert_allclose(many.sum, one.sum, rtol=0, atol=1e-4)
    np.testing.assert_allclose(many.mean, one.mean, rtol=0, atol=1e-4)
    np.testing.assert_allclose(capped.sum, one.sum, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(many.n_tokens, [len(x) + 1 for x in seqs])
    # and equal to a direct, unpadded, unbatched computation
    layout = small_contract.layout
    ids = torch.from_numpy(layout.encode(seqs[3]))[None]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logits[:, layout.n_real:] = float("-inf")
    direct = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).sum().item()
    assert one.sum[3] == pytest.approx(direct, abs=1e-4)


@pytest.mark.parametrize("attn", ["eager", "sdpa", "twist_flex"])
def test_packed_scores_equal_one_at_a_time(attn, ev, small_contract):
    """pack_tokens: sequences share rows under a document mask (additive, dense bool, or a
    flex BlockMask); each score equals the score of the sequence alone, also where a row holds
    one whole sequence (under flex: the plain-causal path)."""
    model = ev.tiny_llama(small_contract)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, small_contract.n_units, size=int(n)) for n in rng.integers(1, 60, size=40)]
    seqs.append(rng.integers(0, small_contract.n_units, size=126))  # with bos/eos: exactly one row
    one = LikelihoodScorer(model, small_contract, batch_size=1, attn_implementation="eager").score_units(seqs)
    for rows_per_batch, score_eos in ((4, True), (4, False), (1, True)):  # 1: a lone full row runs plain causal
        scorer = LikelihoodScorer(model, small_contract, batch_size=rows_per_batch, pack_tokens=128,
                                  score_eos=score_eos, attn_implementation=attn)
        assert model.config._attn_implementation == attn
        rows = [r for batch in scorer._packed_rows(np.asarray([len(x) + 2 for x in seqs])) for r in batch]
        assert len(rows) < len(seqs) / 2  # sequences really share rows
        packed = scorer.score_units(seqs)
        ref = one if score_eos else LikelihoodScorer(model, small_contract, batch_size=1, score_eos=False,
                                                     attn_implementation="eager").score_units(seqs)
        np.testing.assert_allclose(packed.sum, ref.sum, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(packed.n_tokens, ref.n_tokens)
    with pytest.raises(ValueError, match="longer than max_length=128"):
        scorer.score_units([np.zeros(130, dtype=np.int64)])


def test_a_model_trained_on_a_pattern_wins_the_pairs_that_contain_it(ev, small_contract):
    """Train on cycles 0 1 2 .. 7 0 1 ..; the cycle must beat a shuffle of the same units."""
    k = small_contract.n_units
    layout = VocabLayout(k)
    model = ev.tiny_llama(small_contract, seed=1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(60):
        batch = np.stack([layout.encode((int(rng.integers(k)) + np.arange(16)) % k) for _ in range(16)])
        ids = torch.from_numpy(batch)
        logits = model(input_ids=ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    pos, neg = [], []
    for _ in range(20):
        p = (int(rng.integers(k)) + np.arange(12)) % k
        n = rng.permutation(p)
        while (np.diff(n) == 0).any() or np.array_equal(n, p):  # keep dedup from shortening it
            n = rng.permutation(p)
        pos.append(p)
        neg.append(n)
    scorer = LikelihoodScorer(model, small_contract, batch_size=8)
    sp, sn = scorer.score_units(pos), scorer.score_units(neg)
    assert accuracy(decide(sp.sum, sn.sum)) == 1.0
    assert accuracy(decide(sp.mean, sn.mean)) == 1.0
    # the preference was learnt: an untrained model of the same shape has a far smaller margin
    fresh = LikelihoodScorer(ev.tiny_llama(small_contract, seed=1), small_contract)
    fresh_margin = float(np.mean(fresh.score_units(pos).sum - fresh.score_units(neg).sum))
    assert float(np.mean(sp.sum - sn.sum)) > 5 * abs(fresh_margin)


def test_too_long_sequences_error_or_truncate(ev, small_contract):
    model = ev.tiny_llama(small_contract, max_positions=16)
    seqs = [np.zeros(5, dtype=np.int64), np.arange(20) % 8]
    with pytest.raises(ValueError, match="item-b: 22 tokens is longer than max_length=16"):
        LikelihoodScorer(model, small_contract).score_units(seqs, names=["item-a", "item-b"])
    s = LikelihoodScorer(model, small_contract, too_long="truncate").score_units(seqs)
    assert s.n_truncated == 1 and s.n_tokens.tolist() == [6, 15]


def test_errors_name_the_item(ev, small_contract):
    scorer = LikelihoodScorer(ev.tiny_llama(small_contract), small_contract, score_eos=False)
    with pytest.raises(ValueError, match="story-7: no token left"):
        scorer.score_units([np.array([1]), np.array([], dtype=np.int64)], names=["story-1", "story-7"])
    with pytest.raises(ValueError, match="story-2: unit id 9 is outside"):
        scorer.score_units([np.array([9])], names=["story-2"])


def test_bf16_weights_score_close_to_fp32(ev, small_contract):
    """The GPU path runs bf16 weights; log-softmax stays fp32, so scores stay close."""
    import copy

    model = ev.tiny_llama(small_contract)
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, small_contract.n_units, size=int(n)) for n in rng.integers(5, 40, size=12)]
    fp32 = LikelihoodScorer(model, small_contract, batch_size=4).score_units(seqs)
    bf16 = LikelihoodScorer(copy.deepcopy(model).to(torch.bfloat16), small_contract, batch_size=4).score_units(seqs)
    assert bf16.sum.dtype == np.float64
    np.testing.assert_allclose(bf16.mean, fp32.mean, atol=0.05)


def test_scoring_takes_the_attention_setting_training_takes(ev, small_contract):
    """attn_implementation picks the kernel as train.attn_implementation does (auto: sdpa on
    CPU), and packed scoring builds its masks in that kernel's form."""
    model = ev.tiny_llama(small_contract)  # built with eager attention
    scorer = LikelihoodScorer(model, small_contract)
    assert model.config._attn_implementation == "sdpa" and scorer.attention.implementation == "sdpa"
    scorer = LikelihoodScorer(model, small_contract, attn_implementation="eager", pack_tokens=64)
    assert model.config._attn_implementation == "eager"
    assert (scorer.attention.packing, scorer.attention.mask) == ("packed", "additive")
    scorer = LikelihoodScorer(model, small_contract, attn_implementation="flex", pack_tokens=64)  # forward only: CPU is fine
    assert scorer.attention.mask == "block"
    with pytest.raises(ValueError, match="attn_implementation must be one of auto, flex"):
        LikelihoodScorer(model, small_contract, attn_implementation="fast")


def test_packing_under_flash_attention_is_refused_as_in_training(ev, small_contract):
    """flash_attention_2 takes no document mask: packed rows would attend across sequences."""
    from twist.errors import ConfigError
    from twist.eval.config import EvalRunConfig

    model = ev.tiny_llama(small_contract)
    with pytest.raises(ConfigError, match="pack_tokens cannot be used with attn_implementation=flash_attention_2"):
        LikelihoodScorer(model, small_contract, pack_tokens=64, attn_implementation="flash_attention_2")
    with pytest.raises(ConfigError, match="pack_tokens cannot be used with attn_implementation=flash_attention_2"):
        EvalRunConfig(out_dir="x", pack_tokens=64, attn_implementation="flash_attention_2")
    EvalRunConfig(out_dir="x", attn_implementation="flash_attention_2")  # padded buckets: fine
