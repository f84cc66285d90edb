"""Eval outputs: ``results.json``, per-item score files, a markdown table, a model comparison.

A run directory holds::

    results.json        model, contract, settings, every benchmark's numbers and counts,
                        and ``metrics``: the headline number of each benchmark
    results.md          the same as markdown tables (headline row + per-benchmark details)
    items/<bench>.jsonl one row per pair (or utterance for PPL) with both scores
    submission/         ZR2021 ``lexical/{dev,test}.txt`` and ``syntactic/{dev,test}.txt``
    rejects.jsonl       audio files that could not be used

:func:`compare_table` puts several runs side by side, rows = models and columns = metrics,
in the shape of the TWIST paper's Table 2 (PPL, sWUGGY, sBLIMP, sStoryCloze, tStoryCloze).
Accuracies are shown in percent, as in the paper.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twist.atomic import atomic_open, atomic_write_json, atomic_write_text

RESULTS = "results.json"
RESULTS_MD = "results.md"
ITEMS = "items"
# Column order of the paper's tables; unknown metrics go after these.
METRIC_ORDER = ("PPL", "sWUGGY", "sWUGGY in-vocab", "sBLIMP", "sSC", "tSC", "GenPPL", "auto-BLEU", "distinct-2")
LOWER_IS_BETTER = ("PPL", "GenPPL", "auto-BLEU")


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


def _metric_base(name: str) -> str:
    return name.split(" (")[0]


def _sort_metrics(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))

    def key(n: str) -> tuple[int, int]:
        base = _metric_base(n)
        return (METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER), names.index(n))

    return sorted(names, key=key)


def format_metric(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if _metric_base(name) in LOWER_IS_BETTER:
        return f"{value:.2f}"
    return f"{100 * value:.1f}"


def _header(name: str) -> str:
    return f"{name} {'↓' if _metric_base(name) in LOWER_IS_BETTER else '↑'}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping[str, Any]) -> str:
    """The headline row plus one detail table per benchmark."""
    metrics = results.get("metrics", {})
    names = _sort_metrics(metrics)
    out = [f"# twist-eval: {results.get('model_name', '')}\n\n"]
    out.append(f"Pairs decided by the **{results.get('decide_by', 'sum')}** of token log-probs; "
               "accuracies in %, ties count 0.5; PPL over speech tokens.\n\n")
    out.append(markdown_table(["model"] + [_header(n) for n in names],
                              [[results.get("model_name", "")] + [format_metric(n, metrics[n]) for n in names]]))
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
        raise FileNotFoundError(f"no eval results at {p} (run twist-eval on that model first)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON: {e}") from None


def compare_table(runs: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
    """Rows = models, columns = metrics (paper Table 2 shape).

    Returns:
        (markdown, json-able dict ``{"columns": [...], "rows": [{"model", metric: value}]}``)
    """
    if not runs:
        raise ValueError("compare needs at least one eval run")
    if names is not None and len(names) not in (0, len(runs)):
        raise ValueError(f"compare: {len(names)} names for {len(runs)} runs")
    labels = list(names) if names else [str(r.get("model_name") or f"model {i}") for i, r in enumerate(runs)]
    columns = _sort_metrics(m for r in runs for m in r.get("metrics", {}))
    rows = []
    for label, r in zip(labels, runs):
        m = r.get("metrics", {})
        rows.append({"model": label, **{c: m.get(c) for c in columns}})
    md = markdown_table(["model"] + [_header(c) for c in columns],
                        [[row["model"]] + [format_metric(c, row[c]) for c in columns] for row in rows])
    return md, {"columns": columns, "rows": _clean(rows)}
