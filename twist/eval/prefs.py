"""Spoken preference pairs as a benchmark: how often a model prefers the chosen continuation.

Slam (Maimon et al. 2025, "Slamming") aligns a speech LM with DPO on spoken preference pairs
(prompt, chosen, rejected; :mod:`twist.pairs`, built by ``twist-bench task=prefs``). DPO's own
held-out number, ``eval_rewards/accuracies``, says how often the policy moved a pair towards the
chosen side *relative to its reference*: it is 0 for the starting model by construction, so it
cannot compare a model before and after DPO. This benchmark asks the plain question of any speech
LM instead: on a split of a pair dataset (``valid`` by default, the pairs DPO held out), does the
model give the chosen continuation a higher likelihood than the rejected one?

A pair is scored as a StoryCloze pair (:mod:`twist.eval.pair_scoring`): positive = prompt + chosen,
negative = prompt + rejected, each laid out ``<bos> units <eos>`` and scored whole. The prompt's
log-probability is the same on both sides, so under the sum rule (``decide_by=sum``) the pair is
decided by ``log p(chosen <eos> | <bos> prompt)`` against ``log p(rejected <eos> | <bos> prompt)``:
the same tokens and the same numbers DPO's loss reads (twist.train.dpo; tested equal). The units
are already in the contract's final form, each segment deduplicated on its own, so they are not
deduplicated again across the prompt/continuation boundary. Intervals, the sum/mean/length rules
and paired tests between models come with the pair runner.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twist.errors import ConfigError
from twist.eval.pairs import Pair
from twist.eval.storycloze import PairSet


def plan(settings: Any, ctx: Any) -> list[Any]:
    """``benchmarks.prefs.path``: a pair dataset, read and checked against the model's contract."""
    from twist.eval.registry import Task
    from twist.pairs import PairDataset

    if not settings.path:
        return []
    ds = PairDataset(settings.path, expected=ctx.contract, expected_name="the model")
    rows = list(ds) if settings.split == "all" else ds.split(settings.split)
    if not rows:
        raise ConfigError(f"benchmarks.prefs: pair dataset {settings.path} has no {settings.split} pairs ({ds.counts})")
    name = f"{ctx.benchmark.label} ({settings.split})"
    return [Task(f"{ctx.benchmark.label}/{settings.split}", name, ctx.benchmark, pairs=pair_set(rows, ds.root, name))]


def pair_set(rows: list[Any], root: Any, name: str) -> PairSet:
    """Preference pairs as a StoryCloze-style pair set with inline, already final units."""
    pairs, inline = [], {}
    for p in rows:
        pos, neg = f"{p.id}#chosen", f"{p.id}#rejected"
        inline[pos] = np.concatenate([p.prompt, p.chosen]).astype(np.int64)
        inline[neg] = np.concatenate([p.prompt, p.rejected]).astype(np.int64)
        pairs.append(Pair(id=p.id, positive=pos, negative=neg,
                          meta={"voice": p.voice, "prompt_units": int(len(p.prompt)), "chosen_text": p.chosen_text,
                                "rejected_text": p.rejected_text}))
    return PairSet(name=name, root=root, pairs=pairs, inline=inline, layout="pairs", units_final=True)
