"""Intervals and the paired test against values worked out by hand or published."""

from __future__ import annotations

import math

import pytest

from twist.eval.stats import binomial_two_sided_p, mean_with_interval, paired_sign_test, wilson_interval


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, score method
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_intervals(x, n, low, high):
    lo, hi = wilson_interval(x / n, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_by_hand_for_half_of_four():
    # p = 1/2, n = 4, z = 1.96: centre (0.5 + z^2/8) / (1 + z^2/4) = 0.5 exactly (symmetry);
    # half-width z * sqrt(1/16 + z^2/64) / (1 + z^2/4) = 1.96 * sqrt(0.0625 + 0.0600250) / 1.9604
    lo, hi = wilson_interval(0.5, 4, z=1.96)
    half = 1.96 * math.sqrt(0.0625 + 0.060025) / 1.9604
    assert lo == pytest.approx(0.5 - half, abs=1e-12) and hi == pytest.approx(0.5 + half, abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.1500, 0.8500)
    assert wilson_interval(1.0, 5)[1] == 1.0 and wilson_interval(0.0, 5)[0] == 0.0
    assert all(math.isnan(v) for v in wilson_interval(0.5, 0))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        wilson_interval(1.5, 3)


def test_mean_with_interval_counts_ties_as_half():
    got = mean_with_interval([1.0, 0.5, 0.0, 1.0])
    assert got["accuracy"] == 0.625 and got["n"] == 4
    assert got["ci95"] == list(wilson_interval(0.625, 4))


def test_binomial_p_by_hand():
    # 8 of 10 discordant items for A: P(X <= 2) = (1 + 10 + 45) / 1024, doubled
    assert binomial_two_sided_p(8, 10) == pytest.approx(112 / 1024, abs=1e-12)
    assert binomial_two_sided_p(2, 10) == pytest.approx(112 / 1024, abs=1e-12)
    assert binomial_two_sided_p(5, 10) == 1.0 and binomial_two_sided_p(0, 0) == 1.0
    assert binomial_two_sided_p(0, 20) == pytest.approx(2 / 2**20, rel=1e-9)
    # large n stays finite and symmetric
    assert binomial_two_sided_p(5200, 10000) == pytest.approx(binomial_two_sided_p(4800, 10000), rel=1e-9)
    assert 0.0 < binomial_two_sided_p(5200, 10000) < 1e-4


def test_paired_test_by_hand_matches_items_by_id():
    # 14 shared items: A wins 8 (one of them 1 vs 0.5), B wins 2, 4 agree; one item only in each run
    a = {f"i{k}": 1.0 for k in range(7)} | {"i7": 1.0, "i8": 0.0, "i9": 0.0} | {f"j{k}": 1.0 for k in range(4)}
    b = {f"i{k}": 0.0 for k in range(7)} | {"i7": 0.5, "i8": 1.0, "i9": 1.0} | {f"j{k}": 1.0 for k in range(4)}
    a["only_a"], b["only_b"] = 1.0, 0.0
    t = paired_sign_test(a, b)
    assert (t.n, t.a_better, t.b_better, t.n_only_a, t.n_only_b) == (14, 8, 2, 1, 1)
    assert t.difference == pytest.approx((7 * 1.0 + 0.5 - 2.0) / 14)
    assert t.p_value == pytest.approx(112 / 1024, abs=1e-12)
    # order of the arguments only flips the sides
    r = paired_sign_test(b, a)
    assert (r.a_better, r.b_better, r.p_value) == (2, 8, t.p_value) and r.difference == pytest.approx(-t.difference)
    same = paired_sign_test(a, dict(a))
    assert same.p_value == 1.0 and same.difference == 0.0
