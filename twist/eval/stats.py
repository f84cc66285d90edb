"""How sure is an accuracy: 95 % Wilson intervals, and an exact paired test between two models.

Every headline accuracy of the zero-shot suite (sWUGGY, sBLIMP, sSC, tSC) is a mean of
per-item scores in [0, 1]: a StoryCloze pair scores 1, 0.5 (tie) or 0; a ZeroSpeech 2021
item is an sWUGGY word id or an sBLIMP (type, subtype, id) group, and scores the mean of its
pairs over voices. Here "item" always means that unit, the thing the accuracy averages.

* :func:`wilson_interval` gives the 95 % score interval of Wilson (1927) for that mean over
  ``n`` items. For 0/1 items it is the usual binomial interval, good at small ``n`` and near
  0 or 1 where the normal interval fails. Items with fractional scores (ties, voice means)
  vary less than 0/1 items of the same mean (for x in [0, 1], Var x <= E x (1 - E x)), so
  the interval is then conservative (a little wide), never too narrow. It is closed-form and
  seedless: the same results give the same interval on every machine.
* :func:`paired_sign_test` compares two runs on the items they share: it counts the items
  each run scores higher and gives the exact two-sided binomial p-value of that split under
  "neither run is better" (p = 1/2). For 0/1 items this is McNemar's exact test; items both
  runs score the same carry no information about which is better and drop out, as in McNemar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

# The 0.975 quantile of the standard normal: a two-sided 95 % interval.
Z95 = 1.959963984540054


def wilson_interval(p_hat: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``p_hat`` observed over ``n`` items.

    Returns ``(nan, nan)`` when ``n`` is 0.

    Raises:
        ValueError: ``p_hat`` outside [0, 1] or ``n`` negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0 or (isinstance(p_hat, float) and math.isnan(p_hat)):
        return (math.nan, math.nan)
    if not -1e-9 <= p_hat <= 1.0 + 1e-9:
        raise ValueError(f"a proportion must be in [0, 1], got {p_hat}")
    p_hat = min(1.0, max(0.0, float(p_hat)))  # a mean of item scores may round a hair past an end
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p_hat + z2 / (2 * n)) / denom
    half = z * math.sqrt(p_hat * (1.0 - p_hat) / n + z2 / (4.0 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def mean_with_interval(scores: Sequence[float]) -> dict[str, float | int | list[float]]:
    """``{"accuracy", "ci95": [low, high], "n"}`` for per-item scores in [0, 1]."""
    n = len(scores)
    acc = math.fsum(float(s) for s in scores) / n if n else math.nan
    return {"accuracy": acc, "ci95": list(wilson_interval(acc, n)), "n": n}


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips.

    ``2 * P(X <= min(k, n - k))``, capped at 1. With p = 1/2 the distribution is symmetric,
    so this equals the "sum of all outcomes no more likely than the one seen" definition.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    m = min(k, n - k)
    # log-space so that n in the tens of thousands neither overflows nor loses the tail
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0) for i in range(m + 1)]
    top = max(logs)
    tail = math.exp(top) * math.fsum(math.exp(v - top) for v in logs)
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class PairedTest:
    """Two runs on their shared items: who scores higher on how many, and how surprising that is."""

    n: int  # items both runs scored
    a_better: int  # items run A scores higher than run B
    b_better: int  # items run B scores higher
    difference: float  # mean(A) - mean(B) over the shared items
    p_value: float  # exact two-sided sign test (McNemar's exact test for 0/1 items)
    n_only_a: int = 0  # items only run A has (left out of the test)
    n_only_b: int = 0  # items only run B has (left out of the test)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def paired_sign_test(a: Mapping[str, float], b: Mapping[str, float]) -> PairedTest:
    """Compare per-item scores of two runs, matched by item id.

    Items present in only one run are left out (and counted); the test uses the others.
    """
    shared = [k for k in a if k in b]
    diffs = [float(a[k]) - float(b[k]) for k in shared]
    a_better = sum(d > 0 for d in diffs)
    b_better = sum(d < 0 for d in diffs)
    mean_diff = math.fsum(diffs) / len(diffs) if diffs else math.nan
    return PairedTest(
        n=len(shared), a_better=a_better, b_better=b_better, difference=mean_diff,
        p_value=binomial_two_sided_p(a_better, a_better + b_better),
        n_only_a=len(a) - len(shared), n_only_b=sum(k not in a for k in b),
    )  # fmt: skip
