"""Pair decisions: a model "wins" a pair when the positive item scores higher.

Every likelihood benchmark of the TWIST paper (sWUGGY, sBLIMP, sStoryCloze, tStoryCloze)
is a set of (positive, negative) pairs. A pair is worth 1 when the positive item's score is
strictly higher, 0.5 on an exact tie and 0 otherwise, as the ZeroSpeech 2021 toolkit scores
them (``zerospeech2021/lexical.py``, ``syntactic.py``: ``0.5 * (a == b) + (a > b)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Pair:
    """One benchmark pair; ``positive``/``negative`` are item keys into a score table."""

    id: str
    positive: str
    negative: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def decide(positive: np.ndarray | float, negative: np.ndarray | float) -> np.ndarray:
    """1 where positive > negative, 0.5 where equal, 0 where lower (elementwise)."""
    p = np.asarray(positive, dtype=np.float64)
    n = np.asarray(negative, dtype=np.float64)
    return 0.5 * (p == n) + 1.0 * (p > n)


def accuracy(decisions: np.ndarray) -> float:
    """Mean pair score; NaN for no pairs."""
    d = np.asarray(decisions, dtype=np.float64)
    return float(d.mean()) if d.size else float("nan")
