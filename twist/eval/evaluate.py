"""Run every configured benchmark on one speech LM and write the run directory.

The flow is: read and validate every benchmark first (a missing file or a bad gold.csv
fails in seconds, before any model time is spent), then run each benchmark's tasks through
its row of :mod:`twist.eval.registry` (pair benchmarks: units, likelihoods, the sum, mean and
length-only rules, aggregates, 95 % intervals; :mod:`twist.eval.pair_scoring`), and write
``results.json``/``results.md``/``items/``/``item_scores.json``/``submission/`` (see
:mod:`twist.eval.report`). Benchmarks follow the TWIST paper's zero-shot suite (§3.3): sWUGGY
and sBLIMP (ZeroSpeech 2021), sStoryCloze and tStoryCloze, and PPL; the generative metrics
come on top, and for a text+units model cross-modal StoryCloze (:mod:`twist.eval.cross_modal`).

:func:`evaluate_run` is what ``twist-eval`` runs; :func:`evaluate_model` scores a model
already in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from twist.atomic import atomic_write_text
from twist.contract import UnitContract
from twist.errors import ConfigError, MissingInputError
from twist.eval import report
from twist.eval.config import EvalRunConfig
from twist.eval.inputs import AudioUnits, default_cache_dir
from twist.eval.likelihood import LikelihoodScorer
from twist.eval.registry import BENCHMARKS, PlanContext, RunContext, Task
from twist.eval.rules import RULES
from twist.eval.stats import mean_with_interval
from twist.rejects import RejectsLog
from twist.schema import to_typed


def _typed(cfg: EvalRunConfig | Mapping[str, Any], out_dir: str | Path | None = None) -> EvalRunConfig:
    if isinstance(cfg, EvalRunConfig):
        return cfg
    plain = dict(cfg)
    plain.setdefault("out_dir", str(out_dir) if out_dir is not None else ".")
    return to_typed(EvalRunConfig, plain)


def plan_tasks(cfg: EvalRunConfig | Mapping[str, Any], contract: UnitContract) -> list[Task]:
    """Read and validate every configured benchmark; nothing is scored yet."""
    c = _typed(cfg)
    bench_root = Path(c.bench_root) if c.bench_root else None
    if bench_root is not None and not bench_root.is_dir():
        raise MissingInputError(f"bench_root {bench_root} does not exist")
    tasks: list[Task] = []
    for b in BENCHMARKS:
        ctx = PlanContext(b, contract, Path(c.zr2021_root) if c.zr2021_root else None, bench_root, c.tokenizer_dir,
                          planned=list(tasks))
        tasks += b.plan_fn()(getattr(c.benchmarks, b.key), ctx)
    if bench_root is not None and not any(t.from_root for t in tasks):
        raise MissingInputError(_nothing_under(bench_root))
    if not tasks:
        raise ConfigError("no benchmark configured: set zr2021_root, bench_root, or one of "
                          + ", ".join(f"benchmarks.{b.key}.{dataclasses.fields(b.settings)[0].name}" for b in BENCHMARKS))
    return tasks


def _nothing_under(root: Path) -> str:
    """The message for a ``bench_root`` in which no benchmark was found."""
    msg = (f"bench_root {root}: no benchmark found in it. Expected a twist-bench out_dir, holding "
           "lexical/<split>/gold.csv, syntactic/<split>/gold.csv (split: benchmarks.swuggy.splits / "
           "benchmarks.sblimp.splits, default [dev]), storycloze/sSC/, storycloze/tSC/ or their multi-speaker sSC_ms/, tSC_ms/ (or these directly)")
    if (root / "pairs.jsonl").is_file() or any(root.glob("*_correct.wav")):
        msg += f"; {root} is itself one StoryCloze set: pass it as benchmarks.ssc.path or benchmarks.tsc.path"
    elif (root / "gold.csv").is_file() or (root / "dev").is_dir() or (root / "test").is_dir():
        msg += f"; {root} looks like one ZR2021 task dir: pass it as benchmarks.swuggy.dir or benchmarks.sblimp.dir"
    return msg


def evaluate_model(
    cfg: EvalRunConfig | Mapping[str, Any],
    model: torch.nn.Module,
    contract: UnitContract,
    out_dir: str | Path,
    *,
    tokenizer: Any = None,
    tasks: list[Task] | None = None,
    text_tokenizer: Any = None,
) -> dict[str, Any]:
    """Score ``model`` on the benchmarks in ``cfg``; write and return the results dict.

    Args:
        cfg: eval settings (an :class:`EvalRunConfig`, or a mapping of its fields).
        model: the speech LM, on its device and dtype, in eval mode.
        contract: the model's unit contract.
        out_dir: the run directory.
        tokenizer: a ``UnitTokenizer`` (``.contract``, ``.encode_file``) for audio inputs.
        tasks: benchmarks already read by :func:`plan_tasks` (the CLI validates them before
            it spends time loading the model); read from ``cfg`` when omitted.
        text_tokenizer: a text+units model's own tokenizer (:func:`twist.lm.load_speech_tokenizer`
            of its directory), which cross-modal StoryCloze encodes the story texts with.
    """
    c = _typed(cfg, out_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        contract.check_same_units(tokenizer.contract, mine="model", theirs="tokenizer")
    if tasks is None:
        tasks = plan_tasks(c, contract)
    scorer = LikelihoodScorer(model, contract, batch_size=c.batch_size, max_batch_tokens=c.max_batch_tokens,
                              score_eos=c.score_eos, max_length=c.max_length, too_long=c.too_long,
                              progress=c.progress, pack_tokens=c.pack_tokens, attn_implementation=c.attn_implementation)
    audio = None
    if tokenizer is not None:
        cache = None if c.cache_dir == "off" else (c.cache_dir or default_cache_dir())
        audio = AudioUnits(tokenizer, cache_dir=cache, batch_size=c.tokenize_batch_size, progress=c.progress)
    results = _results_header(c, model, contract, scorer)
    item_scores: dict[str, dict[str, float]] = {}
    total_pairs, total_score_s = 0, 0.0
    # Each run finds every reject again, so the log starts empty rather than appending to a past run's.
    atomic_write_text(out_dir / "rejects.jsonl", "")
    with RejectsLog(out_dir / "rejects.jsonl", stage="eval", strict=c.strict) as rejects:
        ctx = RunContext(model, contract, scorer, audio, tokenizer, rejects, c.decide_by, out_dir,
                         model_key=str(c.model_path), progress=c.progress, text_tokenizer=text_tokenizer)
        for task in tasks:
            res = task.benchmark.run_fn()(task, ctx)
            results["benchmarks"][task.name] = res.summary
            results["metrics"].update(res.metrics)
            for metric, by_rule in res.items.items():
                per_rule = {r: mean_with_interval(list(by_rule[r].values())) for r in RULES}
                results["ci95"][metric] = per_rule[c.decide_by]["ci95"]
                results["rules"][metric] = {
                    "n_items": per_rule[c.decide_by]["n"],
                    **{r: {"accuracy": v["accuracy"], "ci95": v["ci95"]} for r, v in per_rule.items()},
                    "agree_with_length": {r: res.agree[r] for r in ("sum", "mean")},
                }
                item_scores[metric] = by_rule[c.decide_by]
            report.write_items(out_dir, task.name, res.rows)
            total_pairs += res.n_pairs
            total_score_s += res.score_seconds
        results["n_rejected"] = rejects.count
    results["pairs_per_second"] = total_pairs / total_score_s if total_score_s > 0 else None
    if audio is not None:
        results["tokenizer_cache"] = {"hits": audio.n_cache_hits, "encoded": audio.n_encoded,
                                      "same_content": audio.n_same_content,
                                      "dir": str(audio.cache_dir) if audio.cache_dir else None}
    report.write_item_scores(out_dir, c.decide_by, item_scores)
    report.write_results(out_dir, results)
    return results


def _results_header(c: EvalRunConfig, model: torch.nn.Module, contract: UnitContract,
                    scorer: LikelihoodScorer) -> dict[str, Any]:
    first = next(iter(model.parameters()), torch.zeros(0))
    return {
        "model_name": c.model_name or (Path(str(c.model_path)).name if c.model_path else "model"),
        "model_path": c.model_path,
        "tokenizer_dir": c.tokenizer_dir,
        "contract": contract.to_dict(),
        "decide_by": c.decide_by,
        "score_eos": scorer.score_eos,
        "batch_size": scorer.batch_size,
        "attn_implementation": scorer.attention.implementation,
        "device": str(first.device),
        "dtype": str(first.dtype).replace("torch.", ""),
        "metrics": {},
        "ci95": {},
        "rules": {},
        "benchmarks": {},
        # a text+units model is scored on speech alone (twist.eval.likelihood): say so beside the numbers
        **({"scored_over": "units and <eos> (text logits masked; sequences open <bos> <speech>)"}
           if contract.layout.has_text else {}),
    }


def evaluate_run(c: EvalRunConfig, *, on_start: Any = None) -> dict[str, Any]:
    """What ``twist-eval mode=eval`` does: check the cheap things first (the model's contract
    against the tokenizer's, every benchmark file), then load the weights and score.
    ``on_start`` is called once all of that passed, before the first write."""
    from twist.device import resolve_device, resolve_dtype
    from twist.lm import load_speech_lm, read_contract

    if not c.model_path:
        raise ConfigError("model_path is required in eval mode (a speech LM directory)")
    if not c.progress:
        from twist.console import quiet_third_party_progress

        quiet_third_party_progress()  # transformers draws its own "Loading weights" bar
    device = resolve_device(c.device)
    dtype = resolve_dtype(c.dtype, auto=torch.bfloat16 if device.type == "cuda" else torch.float32)
    contract = read_contract(c.model_path)
    tokenizer = None
    if c.tokenizer_dir:
        from twist.tokenizer import UnitTokenizer

        spec = UnitTokenizer.read_spec(c.tokenizer_dir)
        tok_contract = UnitContract.from_dict(spec["contract"], source=str(c.tokenizer_dir))
        contract.check_same_units(tok_contract, mine=f"speech LM {c.model_path}", theirs=f"tokenizer {c.tokenizer_dir}")
    tasks = plan_tasks(c, contract)
    text_tokenizer = None
    if contract.layout.has_text:  # checked against the contract now, before the weights load
        from twist.lm import load_speech_tokenizer

        text_tokenizer = load_speech_tokenizer(c.model_path)
    if c.tokenizer_dir:
        tokenizer = UnitTokenizer.load(c.tokenizer_dir, device=c.tokenizer_device)
    model, contract = load_speech_lm(c.model_path, expected=tokenizer.contract if tokenizer is not None else None,
                                     expected_name=f"tokenizer {c.tokenizer_dir}", device=device, dtype=dtype)
    if on_start is not None:
        on_start()
    results = evaluate_model(c, model, contract, c.out_dir, tokenizer=tokenizer, tasks=tasks,
                             text_tokenizer=text_tokenizer)
    from twist.eval.zr2021 import require_complete

    require_complete(results, allow=c.allow_incomplete)
    return results
