"""Eval outputs: ``results.json``, per-item score files, a markdown table, a model comparison.

A run directory holds::

    results.json        model, contract, settings, every benchmark's numbers and counts;
                        ``metrics``: the headline number of each benchmark; ``ci95``: its 95 %
                        interval; ``rules``: each accuracy under the sum, mean and length-only rules
    results.md          the same as markdown tables (headline row + rules + per-benchmark details)
    items/<bench>.jsonl one row per pair (or utterance for PPL) with both scores; <bench> is
                        spelt as in results.json: sSC, tSC, sWUGGY_dev, sBLIMP_test, PPL
    item_scores.json    the score of every item each headline accuracy averages (for paired tests)
    submission/         ZR2021 ``lexical/{dev,test}.txt`` and ``syntactic/{dev,test}.txt``
    rejects.jsonl       audio files that could not be used (empty when none)

:func:`compare_table` puts several runs side by side, rows = models and columns = metrics,
in the shape of the TWIST paper's Table 2 (PPL, sWUGGY, sBLIMP, sStoryCloze, tStoryCloze),
each accuracy with its 95 % interval, and below it a paired test for every two rows on the
items both runs scored (:mod:`twist.eval.stats`). Accuracies are shown in percent, as in
the paper.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twist.atomic import atomic_open, atomic_write_json, atomic_write_text
from twist.errors import ConfigError, InputError, MissingInputError
from twist.eval.registry import lower_is_better, metric_order
from twist.eval.stats import paired_sign_test

RESULTS = "results.json"
RESULTS_MD = "results.md"
ITEMS = "items"
ITEM_SCORES = "item_scores.json"
RULE_LABELS = {"sum": "sum", "mean": "mean", "length": "length-only"}
# Column order of the paper's tables (the registry's rows); unknown metrics go after these.
METRIC_ORDER = metric_order()
LOWER_IS_BETTER = lower_is_better()


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return _clean(obj.item())
    return obj


def write_items(out_dir: str | Path, name: str, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write per-item scores as ``items/<name>.jsonl`` (``/`` in the name becomes ``_``)."""
    path = Path(out_dir) / ITEMS / f"{name.replace('/', '_')}.jsonl"
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(_clean(dict(r))) + "\n")
    return path


def write_item_scores(out_dir: str | Path, decide_by: str, scores: Mapping[str, Mapping[str, float]]) -> Path:
    """Write ``item_scores.json``: ``{"decide_by", "metrics": {metric: {item id: score}}}``."""
    path = Path(out_dir) / ITEM_SCORES
    atomic_write_json(path, {"decide_by": decide_by, "metrics": _clean({m: dict(v) for m, v in scores.items()})},
                      indent=None)
    return path


def load_item_scores(run: str | Path) -> dict[str, dict[str, float]] | None:
    """The per-item scores of an eval run dir, or None for a run that has none (older runs)."""
    p = Path(run)
    p = p / ITEM_SCORES if p.is_dir() else p.with_name(ITEM_SCORES)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())["metrics"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{p} is not an item-scores file: {e}") from None


def _metric_base(name: str) -> str:
    return name.split(" (")[0]


def _sort_metrics(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))

    def key(n: str) -> tuple[int, int]:
        base = _metric_base(n)
        return (METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER), names.index(n))

    return sorted(names, key=key)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def format_metric(name: str, value: Any, ci: Sequence[Any] | None = None) -> str:
    """PPL as is, accuracies in % (with ``[low, high]`` when an interval is given)."""
    if not _finite(value):
        return "–"
    if _metric_base(name) in LOWER_IS_BETTER:
        return f"{value:.2f}"
    if ci is not None and len(ci) == 2 and all(_finite(c) for c in ci):
        return f"{100 * value:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"{100 * value:.1f}"


def _format_p(p: float) -> str:
    return "–" if not _finite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _header(name: str) -> str:
    return f"{name} {'↓' if _metric_base(name) in LOWER_IS_BETTER else '↑'}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping[str, Any]) -> str:
    """The headline row, the decision-rules table, and one detail table per benchmark."""
    metrics = results.get("metrics", {})
    ci95 = results.get("ci95", {})
    names = _sort_metrics(metrics)
    decide_by = results.get("decide_by", "sum")
    out = [f"# twist-eval: {results.get('model_name', '')}\n\n"]
    out.append(f"Pairs decided by the **{decide_by}** of token log-probs; accuracies in % with their 95 % "
               "Wilson interval over items in brackets; ties count 0.5; PPL over speech tokens.\n\n")
    out.append(markdown_table(["model"] + [_header(n) for n in names],
                              [[results.get("model_name", "")] + [format_metric(n, metrics[n], ci95.get(n))
                                                                  for n in names]]))
    rules = results.get("rules") or {}
    if rules:
        out.append("\n## Decision rules and the length-only baseline\n\n")
        out.append(f"Each accuracy under the sum rule (paper, ZeroSpeech 2021), the mean rule (SlamKit) and a "
                   f"baseline with no model, *length-only*: the item with fewer units wins. The headline uses "
                   f"**{decide_by}**. *agrees* = share of pairs a rule decides as length-only does.\n\n")
        header = ["metric", "items", *(f"{RULE_LABELS[r]} ↑" for r in RULE_LABELS), "sum agrees", "mean agrees"]
        table = []
        for m in _sort_metrics(rules):
            r = rules[m]
            agree = r.get("agree_with_length", {})
            table.append([m, r.get("n_items", "–"),
                          *(format_metric(m, (r.get(k) or {}).get("accuracy"), (r.get(k) or {}).get("ci95"))
                            for k in RULE_LABELS),
                          *(format_metric(m, agree.get(k)) for k in ("sum", "mean"))])  # fmt: skip
        out.append(markdown_table(header, table))
    for bname, b in results.get("benchmarks", {}).items():
        out.append(f"\n## {bname}\n\n")
        counts = {k: v for k, v in b.items() if not isinstance(v, (list, dict))}
        out.append(markdown_table(["field", "value"], [[k, _fmt(v)] for k, v in counts.items()]))
        for table_key in ("by_frequency", "by_length", "by_type", "by_seed"):
            if b.get(table_key):
                rows = b[table_key]
                cols = list(rows[0])
                out.append(f"\n{table_key.replace('_', ' ')}:\n\n")
                out.append(markdown_table(cols, [[_fmt(r[c]) for c in cols] for r in rows]))
    return "".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.4f}"
    return "–" if v is None else str(v)


def write_results(out_dir: str | Path, results: Mapping[str, Any]) -> None:
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / RESULTS, _clean(dict(results)))
    atomic_write_text(out_dir / RESULTS_MD, results_markdown(results))


def load_results(run: str | Path) -> dict[str, Any]:
    """Read ``results.json`` from an eval run dir (or the file itself)."""
    p = Path(run)
    p = p / RESULTS if p.is_dir() else p
    if not p.is_file():
        raise MissingInputError(f"no eval results at {p} (run twist-eval on that model first)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p} is not valid JSON: {e}") from None


def compare_table(
    runs: Sequence[Mapping[str, Any]],
    names: Sequence[str] | None = None,
    item_scores: Sequence[Mapping[str, Mapping[str, float]] | None] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Rows = models, columns = metrics (paper Table 2 shape), then paired tests between rows.

    Args:
        runs: ``results.json`` contents, one per row.
        names: row names (default: each run's ``model_name``).
        item_scores: per run, ``{metric: {item id: score}}`` (``item_scores.json``) or None.
            Two rows are tested on a metric when both have its item scores; items are
            matched by id, and items only one run has are left out of the test and counted.

    Returns:
        (markdown, json-able dict ``{"columns", "rows": [{"model", metric: value}],
        "ci95": [{metric: [low, high]}], "paired_tests": [...]}``)
    """
    if not runs:
        raise ConfigError("compare needs at least one eval run")
    if names is not None and len(names) not in (0, len(runs)):
        raise ConfigError(f"compare: {len(names)} names for {len(runs)} runs")
    if item_scores is not None and len(item_scores) != len(runs):
        raise ValueError(f"compare: item scores for {len(item_scores)} of {len(runs)} runs")
    labels = list(names) if names else [str(r.get("model_name") or f"model {i}") for i, r in enumerate(runs)]
    columns = _sort_metrics(m for r in runs for m in r.get("metrics", {}))
    rows, cis = [], []
    for label, r in zip(labels, runs):
        m = r.get("metrics", {})
        rows.append({"model": label, **{c: m.get(c) for c in columns}})
        cis.append({c: (r.get("ci95") or {}).get(c) for c in columns if (r.get("ci95") or {}).get(c)})
    md = markdown_table(["model"] + [_header(c) for c in columns],
                        [[row["model"]] + [format_metric(c, row[c], ci.get(c)) for c in columns]
                         for row, ci in zip(rows, cis)])  # fmt: skip
    tests = []
    scores = list(item_scores) if item_scores is not None else [None] * len(runs)
    for c in columns:
        if _metric_base(c) in LOWER_IS_BETTER:
            continue
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                a, b = (scores[i] or {}).get(c), (scores[j] or {}).get(c)
                if a is None or b is None:
                    continue
                t = paired_sign_test(a, b)
                tests.append({"metric": c, "a": labels[i], "b": labels[j], **t.to_dict()})
    if any(ci for ci in cis):
        md += "\nAccuracies in %, [95 % Wilson interval over items].\n"
    if tests:
        md += ("\nPaired tests: each two rows on the items both scored (matched by id). *A higher* / *B higher*: "
               "items one run scores above the other; p: exact two-sided sign test on those counts "
               "(McNemar's exact test for 0/1 items). Items only one run has are left out and counted.\n\n")
        md += markdown_table(
            ["metric", "A", "B", "A − B (points)", "items", "A higher", "B higher", "p", "only in A / B"],
            [[t["metric"], t["a"], t["b"], f"{100 * t['difference']:+.1f}" if _finite(t["difference"]) else "–",
              t["n"], t["a_better"], t["b_better"], _format_p(t["p_value"]), f"{t['n_only_a']} / {t['n_only_b']}"]
             for t in tests],
        )  # fmt: skip
    elif len(runs) > 1 and any(_metric_base(c) not in LOWER_IS_BETTER for c in columns):
        md += "\nNo paired tests: the runs have no item_scores.json (made before twist-eval wrote one).\n"
    return md, {"columns": columns, "rows": _clean(rows), "ci95": _clean(cis), "paired_tests": _clean(tests)}


def compare_runs(runs: Sequence[str | Path], names: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
    """:func:`compare_table` over eval run dirs (``results.json`` and ``item_scores.json`` each)."""
    md, table = compare_table([load_results(r) for r in runs], names, [load_item_scores(r) for r in runs])
    table["runs"] = [str(r) for r in runs]
    return md, table
