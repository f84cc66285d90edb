"""Scoring a pair benchmark (sWUGGY, sBLIMP, sSC, tSC): units, likelihoods, decisions, aggregates.

Every item's audio becomes units (cached; identical audio encoded once), every distinct item
is scored once by the :class:`~twist.eval.likelihood.LikelihoodScorer`, and each pair is
decided under every rule (the summed log-probability of TWIST and ZeroSpeech, the per-token
mean of SlamKit, and the length-only baseline, :mod:`twist.eval.rules`). ZR2021 splits are
aggregated as the official toolkit does (:mod:`twist.eval.zr2021`) and get a submission file;
StoryCloze sets are the mean over pairs. Each accuracy gets a Wilson interval.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from twist.contract import check_unit_range
from twist.errors import ConfigError
from twist.eval import zr2021
from twist.eval.inputs import PretokenizedUnits, final_units
from twist.eval.likelihood import Scores
from twist.eval.pairs import accuracy, decide
from twist.eval.registry import RunContext, Task, TaskResult
from twist.eval.rules import RULES, agreement, pair_items, rule_values, zr2021_items
from twist.eval.stats import wilson_interval


def resolve_units(task: Task, ctx: RunContext) -> dict[str, np.ndarray]:
    """Every item's final units: inline ones, pre-tokenized ones, or the tokenizer's (cached)."""
    ps = task.pairs
    if ps.units_final:
        for k, u in ps.inline.items():
            check_unit_range(u, ctx.contract.n_units, where=f"{task.name}: {k}")
        out = dict(ps.inline)
    else:
        out = {k: final_units(u, ctx.contract, name=f"{task.name}: {k}") for k, u in ps.inline.items()}
    paths = list(ps.paths.values())
    if not paths:
        return out
    if task.units:
        got = PretokenizedUnits(task.units, ctx.contract).units(paths, ps.root, ctx.rejects)
    else:
        if ctx.audio is None:
            raise ConfigError(f"benchmark {task.name} reads audio: set tokenizer_dir (or benchmarks.<name>.units)")
        got = ctx.audio.units(paths, ctx.rejects, desc=f"{task.name}: tokenizing")
    by_path = {str(p): k for k, p in ps.paths.items()}
    out.update({by_path[p]: u for p, u in got.items()})
    return out


def run_pairs(task: Task, ctx: RunContext) -> TaskResult:
    """Score one pair benchmark (a row runner of twist.eval.registry)."""
    t0 = time.perf_counter()
    units = resolve_units(task, ctx)
    t_units = time.perf_counter() - t0
    keys = list(units)
    scores = ctx.scorer.score_units([units[k] for k in keys], names=[f"{task.name}: {k}" for k in keys],
                                    desc=f"{task.name}: scoring")
    return decide_pairs(task, ctx, keys, scores, units, t_units)


def decide_pairs(task: Task, ctx: RunContext, keys: list[str], scores: Scores, lengths: dict[str, np.ndarray],
                 t_units: float) -> TaskResult:
    """Decide every pair of ``task`` from its scored items, under every rule, and aggregate them with
    their intervals: what every pair benchmark's runner ends with (cross-modal StoryCloze scores its
    items its own way, twist.eval.cross_modal).

    Args:
        keys: the item keys, in the order of ``scores``.
        lengths: per key, the tokens the length-only rule counts (the units; an ending's tokens).
        t_units: seconds spent turning inputs into tokens.
    """
    values = rule_values(keys, scores, lengths)
    detail = {k: (s, m, n, lengths[k].size) for k, s, m, n in zip(keys, scores.sum, scores.mean, scores.n_tokens)}
    if task.gold is not None:
        summary, rows, items, decisions = _zr2021_split(task, ctx, values, detail)
    else:
        summary, rows, items, decisions = _pair_set(task, ctx, values, detail)
    decide_by = ctx.decide_by
    summary["ci95"] = list(wilson_interval(summary["accuracy"], len(items[task.metric][decide_by])))
    for table in ("by_frequency", "by_length", "by_type", "by_subtype"):
        for row in summary.get(table) or []:
            row["ci95_low"], row["ci95_high"] = wilson_interval(row["score"], row["n"]) if row["n"] else (None, None)
    summary.update(n_items=len(keys), n_truncated=scores.n_truncated, units_seconds=round(t_units, 3),
                   score_seconds=round(scores.seconds, 4),
                   pairs_per_second=summary["n_pairs"] / scores.seconds if scores.seconds > 0 else None)
    metrics = {task.metric: summary["accuracy"]}
    if task.gold is not None and task.gold.task == "lexical":
        metrics[task.metric.replace("sWUGGY", "sWUGGY in-vocab")] = summary["in_vocab"]
    return TaskResult(summary, rows, metrics, items=items,
                      agree={r: agreement(decisions[r], decisions["length"]) for r in RULES},
                      n_pairs=summary["n_pairs"], score_seconds=summary["score_seconds"])


def _zr2021_split(task: Task, ctx: RunContext, values: dict, detail: dict) -> tuple:
    """A ZR2021 split aggregated as the toolkit does, under every rule, plus its submission file."""
    gold = task.gold
    by_rule = {r: zr2021.evaluate_split(gold, values[r]) for r in RULES}
    summary, rows = by_rule[ctx.decide_by]
    for r, (_, r_rows) in by_rule.items():
        for row, other in zip(rows, r_rows):
            row[f"{r}_score"] = other["score"]
    for row in rows:
        for side in ("positive", "negative"):
            s, m, n, u = detail[row[side]]
            row[f"{side}_logprob_sum"], row[f"{side}_logprob_mean"], row[f"{side}_n_tokens"] = float(s), float(m), int(n)
            row[f"{side}_n_units"] = int(u)
    sub = ctx.out_dir / "submission" / gold.task / f"{gold.split}.txt"
    summary["submission"] = str(sub)
    summary["submission_complete"] = zr2021.write_submission(sub, gold, values[ctx.decide_by])
    label = task.metric[len(task.metric.split(" (")[0]):]
    per_rule = {r: zr2021_items(gold.task, label, by_rule[r][1]) for r in RULES}
    items = {m: {r: per_rule[r][m] for r in RULES} for m in per_rule[ctx.decide_by]}
    return summary, rows, items, {r: [row["score"] for row in by_rule[r][1]] for r in RULES}


def _pair_set(task: Task, ctx: RunContext, values: dict, detail: dict) -> tuple:
    """A StoryCloze-style set: the mean pair score, pairs whose audio was rejected left out and counted."""
    ps = task.pairs
    chosen = values[ctx.decide_by]
    kept = [p for p in ps.pairs if p.positive in chosen and p.negative in chosen]
    decisions = {r: decide([values[r][p.positive] for p in kept], [values[r][p.negative] for p in kept]) for r in RULES}
    dec = decisions[ctx.decide_by]
    summary: dict[str, Any] = {"accuracy": accuracy(dec), "n_pairs": len(kept),
                               "n_pairs_skipped": len(ps.pairs) - len(kept), "layout": ps.layout}
    rows = []
    for i, (p, d) in enumerate(zip(kept, dec)):
        (ps_, pm, pn, pu), (ns, nm, nn, nu) = detail[p.positive], detail[p.negative]
        rows.append({"id": p.id, **p.meta, "positive": p.positive, "negative": p.negative,
                     "positive_logprob_sum": float(ps_), "negative_logprob_sum": float(ns),
                     "positive_logprob_mean": float(pm), "negative_logprob_mean": float(nm),
                     "positive_n_tokens": int(pn), "negative_n_tokens": int(nn),
                     "positive_n_units": int(pu), "negative_n_units": int(nu), "score": float(d),
                     **{f"{r}_score": float(decisions[r][i]) for r in RULES}})
    items = {task.metric: {r: pair_items([p.id for p in kept], decisions[r]) for r in RULES}}
    return summary, rows, items, decisions
