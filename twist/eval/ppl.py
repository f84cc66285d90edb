"""Speech-token perplexity on a unit dataset split (the PPL column of the TWIST paper's tables).

PPL = exp(total negative log-likelihood / total scored tokens), pooled over utterances
(token-weighted, not a mean of per-utterance PPLs). Each utterance is scored as its own
``<bos> units <eos>`` sequence with the model's unit contract; the dataset's contract must
match the model's. As in the paper, PPL is only comparable between models that share a
tokenizer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from twist.contract import UnitContract
from twist.errors import InputError
from twist.eval.likelihood import LikelihoodScorer
from twist.units import UnitDataset


def load_split(dataset: str | Path, split: str, contract: UnitContract, *, max_utterances: int | None = None) -> UnitDataset:
    """Open a unit dataset split and check it against the model's contract."""
    ds = UnitDataset(dataset)
    contract.check_same_units(ds.contract, mine="model", theirs=f"unit dataset {dataset}")
    view = ds.split(split) if split not in (None, "all") else ds
    if len(view) == 0:
        raise InputError(f"unit dataset {dataset}: split {split!r} holds no utterances")
    if max_utterances:
        view = view.subset(range(min(int(max_utterances), len(view))))
    return view


def perplexity(scorer: LikelihoodScorer, view: UnitDataset) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every utterance of ``view``; return the summary and per-utterance rows."""
    units = [np.asarray(view[i], dtype=np.int64) for i in range(len(view))]
    ids = view.ids
    scores = scorer.score_units(units, names=[f"utterance {u!r}" for u in ids], desc="ppl: scoring")
    n_tok = int(scores.n_tokens.sum())
    nll = float(-scores.sum.sum())
    summary = {
        "ppl": math.exp(nll / n_tok),
        "nll_per_token": nll / n_tok,
        "n_utterances": len(ids),
        "n_tokens": n_tok,
        "n_truncated": scores.n_truncated,
        "seconds": round(scores.seconds, 3),
        "tokens_per_second": n_tok / scores.seconds if scores.seconds > 0 else None,
    }
    rows = [
        {"id": u, "n_tokens": int(k), "logprob_sum": float(s), "logprob_mean": float(m)}
        for u, k, s, m in zip(ids, scores.n_tokens, scores.sum, scores.mean)
    ]
    return summary, rows


def plan(settings: Any, ctx: Any) -> list[Any]:
    """PPL: ``benchmarks.ppl.dataset``'s split, checked against the model's contract."""
    from twist.eval.registry import Task

    if not settings.dataset:
        return []
    view = load_split(settings.dataset, settings.split, ctx.contract, max_utterances=settings.max_utterances)
    return [Task("PPL", "PPL", ctx.benchmark, data=view)]


def run(task: Any, ctx: Any) -> Any:
    from twist.eval.registry import TaskResult

    summary, rows = perplexity(ctx.scorer, task.data)
    return TaskResult(summary, rows, {task.metric: summary["ppl"]})
