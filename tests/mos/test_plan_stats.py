"""The rater order generator and the small statistics library behind the scores."""

from __future__ import annotations

import importlib.util
import math

import pytest

from twist.mos.plan import XorShift32, fnv1a32, rater_plan
from twist.mos.stats import incomplete_beta, mean_ci, paired_t_p, pearson, sign_test_p, t_cdf, t_quantile

ITEMS = [(f"{s}-{p}", p) for s in ("a", "b", "c") for p in range(6)]


def test_hash_and_generator_match_their_published_definitions():
    assert fnv1a32("") == 0x811C9DC5 and fnv1a32("a") == 0xE40C292C and fnv1a32("foobar") == 0xBF9CF968
    rng = XorShift32(1)
    rng.state = 1
    assert [rng.next_u32() for _ in range(2)] == [270369, 67634689]  # Marsaglia's xorshift32 from state 1


def test_each_rater_hears_every_item_once_plus_one_repeat_later_in_a_seeded_order():
    plan = rater_plan(0, ITEMS, "alice")
    assert plan == rater_plan(0, ITEMS, "alice")  # reproducible
    assert [s.item for s in plan] != [s.item for s in rater_plan(0, ITEMS, "bob")]
    assert [s.item for s in plan] != [s.item for s in rater_plan(1, ITEMS, "alice")]
    first = [s.item for s in plan if not s.repeat]
    assert sorted(first) == sorted(i for i, _ in ITEMS)
    (at,) = [k for k, s in enumerate(plan) if s.repeat]
    assert first.index(plan[at].item) < len(first) / 2 <= at  # heard in the first half, again in the second
    assert not any(s.repeat for s in rater_plan(0, ITEMS, "alice", repeat=False))
    # a sample of prompts keeps every system's clip of each chosen prompt
    some = rater_plan(0, ITEMS, "alice", prompts_per_rater=2)
    prompts = {p for i, p in ITEMS if i in {s.item for s in some}}
    assert len(prompts) == 2 and len(some) == 2 * 3 + 1


def test_t_distribution_and_intervals_against_tables():
    assert t_quantile(0.975, 4) == pytest.approx(2.7764451051977987, abs=1e-10)
    assert t_quantile(0.975, 11) == pytest.approx(2.200985160082949, abs=1e-10)
    assert t_quantile(0.025, 30) == pytest.approx(-2.0422724563012373, abs=1e-10)
    assert t_cdf(0.0, 7) == pytest.approx(0.5)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    assert incomplete_beta(2, 3, 0.4) == pytest.approx(0.5248)  # 1 - sum_{k<2} C(4,k) .4^k .6^(4-k)
    mean, sd, half = mean_ci([1, 2, 3, 4, 5])
    assert (mean, sd) == (3, pytest.approx(math.sqrt(2.5))) and half == pytest.approx(2.7764451051977987 * math.sqrt(0.5))
    assert math.isnan(mean_ci([4.0])[2])
    assert sign_test_p(9, 1) == pytest.approx(2 * 11 / 1024) and sign_test_p(0, 0) == 1.0
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)
    assert math.isnan(pearson([3, 3, 3], [1, 2, 3]))


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy absent (an optional cross-check)")
def test_t_distribution_equals_scipy():
    from scipy import stats

    for df in (1, 2, 3, 7, 12, 40, 500):
        for q in (0.6, 0.9, 0.975, 0.995, 0.9999):
            assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-9)
        for t in (-4.0, -1.3, 0.2, 2.5, 9.0):
            assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)
    d = [0.5, 1.0, -0.5, 1.5, 2.0, 0.0, 1.0]
    assert paired_t_p(d) == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-9)
    assert sign_test_p(3, 11) == pytest.approx(stats.binomtest(3, 14).pvalue, rel=1e-12)
