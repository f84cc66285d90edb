"""The rules that decide a pair, and the per-item scores each benchmark accuracy averages.

A pair benchmark (sWUGGY, sBLIMP, sSC, tSC) compares a positive and a negative item. Three
rules are reported side by side:

* ``sum``: the higher total log-probability wins: the TWIST paper's rule and the ZeroSpeech
  2021 baseline's. A sum of negative numbers favours the shorter sequence.
* ``mean``: the higher log-probability per scored token wins (SlamKit's rule).
* ``length``: the shorter unit sequence wins; no model is involved. This baseline shows how
  much of an accuracy length alone gives: when the sum rule agrees with it on most pairs,
  a high sum-rule score says little about the model.

Every accuracy is the mean of one score per *item*: a StoryCloze pair; an sWUGGY word id
(its pairs averaged over voices); an sBLIMP ``(type, subtype, id)`` group (averaged over
voices); for sWUGGY in-vocab, the word ids of the in-vocabulary frequency bands (the band
means weighted by band size are exactly the mean over those ids). The functions here turn
per-pair rows into those item scores, which give the confidence intervals
(:mod:`twist.eval.stats`) and let two runs be compared item by item.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from twist.eval import zr2021
from twist.eval.likelihood import Scores

RULES = ("sum", "mean", "length")


def rule_values(keys: Sequence[str], scores: Scores, units: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """For each rule, a higher-is-better value per item key (``length``: minus the unit count)."""
    return {
        "sum": dict(zip(keys, scores.sum.tolist())),
        "mean": dict(zip(keys, scores.mean.tolist())),
        "length": {k: -float(np.asarray(units[k]).size) for k in keys},
    }


def _mean_by(rows: Iterable[Mapping[str, Any]], key: Any) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(float(r["score"]))
    return {k: float(np.mean(v)) for k, v in groups.items()}


def zr2021_items(task: str, label: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Item scores of a ZR2021 split from :func:`twist.eval.zr2021.evaluate_split` rows.

    Args:
        task: ``lexical`` or ``syntactic``.
        label: the metric's split suffix, e.g. ``" (dev)"``.

    Returns:
        ``{metric name: {item id: score}}``: sWUGGY all and in-vocab, or sBLIMP.
    """
    if task == "lexical":
        every = _mean_by(rows, lambda r: str(r["id"]))
        frequency = {str(r["id"]): r.get("frequency") for r in rows}
        in_vocab = {k: v for k, v in every.items() if zr2021._band(frequency[k]) not in (None, "oov")}
        return {f"sWUGGY{label}": every, f"sWUGGY in-vocab{label}": in_vocab}
    return {f"sBLIMP{label}": _mean_by(rows, lambda r: f"{r['type']}/{r['subtype']}/{r['id']}")}


def pair_items(ids: Sequence[str], decisions: Sequence[float]) -> dict[str, float]:
    """StoryCloze: every pair is an item."""
    return {str(i): float(d) for i, d in zip(ids, decisions)}


def agreement(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of pairs two rules decide the same way (ties included); NaN for no pairs."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float((x == y).mean()) if x.size else float("nan")
