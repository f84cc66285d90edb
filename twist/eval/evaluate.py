"""Run every configured benchmark on one speech LM and write the run directory.

The flow is: read and validate every benchmark first (a missing file or a bad gold.csv
fails in seconds, before any model time is spent), then turn each benchmark's audio into
units (cached), score every distinct item once with :class:`LikelihoodScorer`, decide the
pairs, aggregate, and write ``results.json``/``results.md``/``items/``/``submission/``
(see :mod:`twist.eval.report`). Benchmarks follow the TWIST paper's zero-shot suite (§3.3):
sWUGGY and sBLIMP (ZeroSpeech 2021), sStoryCloze and tStoryCloze, and PPL.

``cfg`` is a plain mapping with the fields of ``twist/configs/eval.yaml``; the CLI is a thin
wrapper around :func:`evaluate_model`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.contract import UnitContract
from twist.eval import ppl as ppl_mod
from twist.eval import report, zr2021
from twist.eval.inputs import AudioUnits, PretokenizedUnits, default_cache_dir, final_units
from twist.eval.likelihood import SCORE_KINDS, LikelihoodScorer
from twist.eval.pairs import accuracy, decide
from twist.eval.storycloze import PairSet, load_pairs
from twist.rejects import RejectsLog


@dataclass
class _Task:
    name: str  # e.g. "swuggy/dev", "ssc"
    metric: str  # headline metric name, e.g. "sWUGGY (dev)"
    pairs: PairSet | None = None
    gold: zr2021.GoldSplit | None = None
    units: str | None = None  # pre-tokenized source
    ppl_view: Any = None


def _get(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    v = cfg.get(key, default) if cfg is not None else default
    return default if v is None else v


def plan_tasks(cfg: Mapping[str, Any], contract: UnitContract) -> list[_Task]:
    """Read and validate every configured benchmark; nothing is scored yet."""
    b = _get(cfg, "benchmarks", {})
    zr_root = cfg.get("zr2021_root")
    bench_root = Path(cfg["bench_root"]) if cfg.get("bench_root") else None
    if bench_root is not None and not bench_root.is_dir():
        raise FileNotFoundError(f"bench_root {bench_root} does not exist")
    tasks: list[_Task] = []
    for key, task, label in (("swuggy", "lexical", "sWUGGY"), ("sblimp", "syntactic", "sBLIMP")):
        spec = _get(b, key, {})
        d = spec.get("dir") or (str(Path(zr_root) / task) if zr_root else None)
        discovered = False
        if not d and bench_root is not None and (bench_root / task).is_dir():
            d, discovered = str(bench_root / task), True
        if not d:
            continue
        for split in _get(spec, "splits", ["dev"]):
            if discovered and not (Path(d) / split).is_dir():
                continue  # a twist-bench dir may hold only some splits
            gold = zr2021.load_split(d, split, task)
            pairs = zr2021.make_pairs(gold)
            ps = PairSet(name=f"{key}/{split}", root=gold.dir, pairs=pairs, paths=dict(gold.audio), layout="zr2021")
            tasks.append(_Task(f"{key}/{split}", f"{label} ({split})", pairs=ps, gold=gold, units=spec.get("units")))
    for key, label in (("ssc", "sSC"), ("tsc", "tSC")):
        spec = _get(b, key, {})
        path = spec.get("path")
        if not path and bench_root is not None:
            # twist-bench writes <root>/storycloze/{sSC,tSC}; a hand-made root may hold them directly
            for cand in (bench_root / label, bench_root / "storycloze" / label):
                if cand.is_dir():
                    path = str(cand)
                    break
        if not path:
            continue
        tasks.append(_Task(key, label, pairs=load_pairs(path, name=key), units=spec.get("units")))
    spec = _get(b, "ppl", {})
    if spec.get("dataset"):
        view = ppl_mod.load_split(spec["dataset"], _get(spec, "split", "test"), contract,
                                  max_utterances=spec.get("max_utterances"))
        tasks.append(_Task("ppl", "PPL", ppl_view=view))
    if not tasks:
        raise ValueError(
            "no benchmark configured: set zr2021_root, benchmarks.swuggy.dir, benchmarks.sblimp.dir, "
            "benchmarks.ssc.path, benchmarks.tsc.path or benchmarks.ppl.dataset"
        )
    return tasks


def _resolve_units(task: _Task, contract: UnitContract, audio: AudioUnits | None,
                   rejects: RejectsLog) -> dict[str, np.ndarray]:
    ps = task.pairs
    assert ps is not None
    out = {k: final_units(u, contract, name=f"{task.name}: {k}") for k, u in ps.inline.items()}
    paths = list(ps.paths.values())
    if not paths:
        return out
    if task.units:
        got = PretokenizedUnits(task.units, contract).units(paths, ps.root, rejects)
    else:
        if audio is None:
            raise ValueError(f"benchmark {task.name} reads audio: set tokenizer_dir (or benchmarks.<name>.units)")
        got = audio.units(paths, rejects)
    by_path = {str(p): k for k, p in ps.paths.items()}
    out.update({by_path[p]: u for p, u in got.items()})
    return out


def evaluate_model(
    cfg: Mapping[str, Any],
    model: torch.nn.Module,
    contract: UnitContract,
    out_dir: str | Path,
    *,
    tokenizer: Any = None,
    tasks: list[_Task] | None = None,
) -> dict[str, Any]:
    """Score ``model`` on the benchmarks in ``cfg``; write and return the results dict.

    Args:
        cfg: eval settings (``twist/configs/eval.yaml`` as a mapping).
        model: the speech LM, on its device and dtype, in eval mode.
        contract: the model's unit contract.
        out_dir: the run directory.
        tokenizer: a ``UnitTokenizer`` (``.contract``, ``.encode_file``) for audio inputs.
        tasks: benchmarks already read by :func:`plan_tasks` (the CLI validates them before
            it spends time loading the model); read from ``cfg`` when omitted.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decide_by = _get(cfg, "decide_by", "sum")
    if decide_by not in SCORE_KINDS:
        raise ValueError(f"decide_by must be one of {SCORE_KINDS}, got {decide_by!r}")
    if tokenizer is not None:
        contract.check_compatible(tokenizer.contract, mine="model", theirs="tokenizer")
    if tasks is None:
        tasks = plan_tasks(cfg, contract)
    progress = bool(_get(cfg, "progress", True))
    scorer = LikelihoodScorer(
        model, contract,
        batch_size=int(_get(cfg, "batch_size", 32)),
        max_batch_tokens=cfg.get("max_batch_tokens"),
        score_eos=bool(_get(cfg, "score_eos", True)),
        max_length=cfg.get("max_length"),
        too_long=_get(cfg, "too_long", "error"),
        progress=progress,
        pack_tokens=cfg.get("pack_tokens"),
    )
    audio = None
    if tokenizer is not None:
        cache = cfg.get("cache_dir")
        cache = None if cache == "off" else (cache or default_cache_dir())
        audio = AudioUnits(tokenizer, cache_dir=cache, batch_size=int(_get(cfg, "tokenize_batch_size", 16)),
                           progress=progress)
    results: dict[str, Any] = {
        "model_name": cfg.get("model_name") or (Path(str(cfg.get("model_path"))).name if cfg.get("model_path") else "model"),
        "model_path": cfg.get("model_path"),
        "tokenizer_dir": cfg.get("tokenizer_dir"),
        "contract": contract.to_dict(),
        "decide_by": decide_by,
        "score_eos": scorer.score_eos,
        "batch_size": scorer.batch_size,
        "device": str(next(iter(model.parameters()), torch.zeros(0)).device),
        "dtype": str(next(iter(model.parameters()), torch.zeros(0)).dtype).replace("torch.", ""),
        "metrics": {},
        "benchmarks": {},
    }
    total_pairs, total_score_s = 0, 0.0
    with RejectsLog(out_dir / "rejects.jsonl", stage="eval", strict=bool(_get(cfg, "strict", False))) as rejects:
        for task in tasks:
            if task.ppl_view is not None:
                summary, rows = ppl_mod.perplexity(scorer, task.ppl_view)
                results["benchmarks"][task.name] = summary
                results["metrics"][task.metric] = summary["ppl"]
                report.write_items(out_dir, task.name, rows)
                continue
            summary, rows = _run_pairs(task, scorer, contract, audio, rejects, decide_by, out_dir)
            results["benchmarks"][task.name] = summary
            results["metrics"][task.metric] = summary["accuracy"]
            if task.gold is not None and task.gold.task == "lexical":
                results["metrics"][task.metric.replace("sWUGGY", "sWUGGY in-vocab")] = summary["in_vocab"]
            report.write_items(out_dir, task.name, rows)
            total_pairs += summary["n_pairs"]
            total_score_s += summary["score_seconds"]
        results["n_rejected"] = rejects.count
    results["pairs_per_second"] = total_pairs / total_score_s if total_score_s > 0 else None
    if audio is not None:
        results["tokenizer_cache"] = {"hits": audio.n_cache_hits, "encoded": audio.n_encoded,
                                      "dir": str(audio.cache_dir) if audio.cache_dir else None}
    report.write_results(out_dir, results)
    return results


def _run_pairs(task: _Task, scorer: LikelihoodScorer, contract: UnitContract, audio: AudioUnits | None,
               rejects: RejectsLog, decide_by: str, out_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ps = task.pairs
    assert ps is not None
    t0 = time.perf_counter()
    units = _resolve_units(task, contract, audio, rejects)
    t_units = time.perf_counter() - t0
    keys = list(units)
    scores = scorer.score_units([units[k] for k in keys], names=[f"{task.name}: {k}" for k in keys])
    chosen = dict(zip(keys, scores.pick(decide_by).tolist()))
    detail = {k: (s, m, n) for k, s, m, n in zip(keys, scores.sum, scores.mean, scores.n_tokens)}
    if task.gold is not None:
        summary, rows = zr2021.evaluate_split(task.gold, chosen)
        for r in rows:
            for side in ("positive", "negative"):
                s, m, n = detail[r[side]]
                r[f"{side}_logprob_sum"], r[f"{side}_logprob_mean"], r[f"{side}_n_tokens"] = float(s), float(m), int(n)
        sub = out_dir / "submission" / task.gold.task / f"{task.gold.split}.txt"
        summary["submission"] = str(sub)
        summary["submission_complete"] = zr2021.write_submission(sub, task.gold, chosen)
    else:
        kept = [p for p in ps.pairs if p.positive in chosen and p.negative in chosen]
        dec = decide([chosen[p.positive] for p in kept], [chosen[p.negative] for p in kept])
        summary = {"accuracy": accuracy(dec), "n_pairs": len(kept), "n_pairs_skipped": len(ps.pairs) - len(kept),
                   "layout": ps.layout}
        rows = []
        for p, d in zip(kept, dec):
            (ps_, pm, pn), (ns, nm, nn) = detail[p.positive], detail[p.negative]
            rows.append({"id": p.id, **p.meta, "positive": p.positive, "negative": p.negative,
                         "positive_logprob_sum": float(ps_), "negative_logprob_sum": float(ns),
                         "positive_logprob_mean": float(pm), "negative_logprob_mean": float(nm),
                         "positive_n_tokens": int(pn), "negative_n_tokens": int(nn), "score": float(d)})
    summary.update(
        n_items=len(keys),
        n_truncated=scores.n_truncated,
        units_seconds=round(t_units, 3),
        score_seconds=round(scores.seconds, 4),
        pairs_per_second=summary["n_pairs"] / scores.seconds if scores.seconds > 0 else None,
    )
    return summary, rows
