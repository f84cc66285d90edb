"""What the demo reads off its runs: the paper's Fig. 2b number, seed spread, heard words.

* :func:`steps_to_reach`, :func:`warm_vs_cold`: TWIST's Fig. 2b shows the warm start reaching
  the cold start's final validation PPL in a fraction of the steps. For each cold run this
  finds the first validation step at which the warm run of the same seed is at or below the
  cold run's final valid PPL, or says that it never gets there.
* :func:`seed_table`: mean ± sd over seeds of every metric ``twist-eval`` wrote to each run's
  ``results.json`` (sample sd, n - 1), as a markdown table and a dict.
* :func:`write_train_text`: the transcripts of the training split, one per line, so the
  sWUGGY word list can count how often the model heard each word (its "in-vocab" words).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twist.atomic import atomic_write_json, atomic_write_text
from twist.errors import InputError


def steps_to_reach(steps: Sequence[int], values: Sequence[float], target: float) -> int | None:
    """The first step whose value is at or below ``target``, or ``None`` if none is."""
    for s, v in zip(steps, values):
        if v <= target:
            return int(s)
    return None


def warm_vs_cold(warm_dir: str | Path, cold_dirs: Mapping[str, str | Path]) -> list[dict[str, Any]]:
    """For each cold run: its final valid PPL, and the step at which warm first reaches it.

    Returns:
        one row per cold run: ``run``, ``cold_steps``, ``cold_final_ppl``, ``warm_steps``
        (the warm run's last validated step) and ``warm_reaches_at`` (``None`` = never).
    """
    from twist.train.plot import run_curve

    w_steps, w_vals = run_curve(warm_dir)
    if not w_steps:
        raise InputError(f"{warm_dir} has no valid_ppl records in metrics.jsonl")
    rows = []
    for name, d in cold_dirs.items():
        c_steps, c_vals = run_curve(d)
        if not c_steps:
            raise InputError(f"{d} has no valid_ppl records in metrics.jsonl")
        rows.append({
            "run": name, "cold_steps": c_steps[-1], "cold_final_ppl": c_vals[-1], "warm_steps": w_steps[-1],
            "warm_reaches_at": steps_to_reach(w_steps, w_vals, c_vals[-1]),
        })  # fmt: skip
    return rows


def describe_warm_vs_cold(row: Mapping[str, Any], warm_label: str = "warm") -> str:
    """One sentence for a :func:`warm_vs_cold` row."""
    ppl = f"{row['cold_final_ppl']:.2f}"
    if row["warm_reaches_at"] is None:
        return (f"{warm_label} never reaches {row['run']}'s final valid PPL {ppl} "
                f"(after {row['cold_steps']} steps) within its {row['warm_steps']} steps")
    frac = row["warm_reaches_at"] / max(row["cold_steps"], 1)
    return (f"{warm_label} reaches {row['run']}'s final valid PPL {ppl} (after {row['cold_steps']} steps) "
            f"at step {row['warm_reaches_at']}, {100 * frac:.0f}% of the steps")


def write_warm_vs_cold(out_dir: str | Path, by_seed: Mapping[int, tuple[str | Path, Mapping[str, str | Path]]],
                       labels: Mapping[str, str] | None = None) -> str:
    """:func:`warm_vs_cold` for every seed, written to ``out_dir/warm_vs_cold.{json,md}``; returns the text."""
    labels = dict(labels or {})
    out_dir = Path(out_dir)
    rows, lines = [], []
    for seed, (warm, colds) in sorted(by_seed.items()):
        for r in warm_vs_cold(warm, colds):
            r = {"seed": seed, **r}
            rows.append(r)
            named = {**r, "run": labels.get(r["run"], r["run"])}
            lines.append(f"seed {seed}: " + describe_warm_vs_cold(named, labels.get("warm", "warm")))
    text = "\n".join(lines)
    atomic_write_json(out_dir / "warm_vs_cold.json", {"rows": rows})
    atomic_write_text(out_dir / "warm_vs_cold.md", text + "\n")
    return text


def _mean_sd(xs: Sequence[float]) -> tuple[float, float | None]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def seed_table(runs: Mapping[str, Sequence[str | Path]]) -> tuple[str, dict[str, Any]]:
    """Mean ± sd over seeds of each metric in the runs' ``results.json``.

    Args:
        runs: a row label -> the eval run directories of its seeds.

    Returns:
        (markdown, ``{"columns": [...], "rows": [{"model", "seeds", metric: {"mean", "sd", "n"}}]}``).
        Accuracies are shown in percent, PPL as is, as in twist-eval's tables.
    """
    from twist.eval.report import LOWER_IS_BETTER, load_results, markdown_table

    per_run: dict[str, list[dict[str, Any]]] = {k: [load_results(d).get("metrics", {}) for d in v] for k, v in runs.items()}
    columns = list(dict.fromkeys(m for ms in per_run.values() for r in ms for m in r))  # twist-eval's order
    rows, table = [], []
    for label, results in per_run.items():
        row: dict[str, Any] = {"model": label, "seeds": len(results)}
        cells = [label, str(len(results))]
        for c in columns:
            xs = [float(r[c]) for r in results if isinstance(r.get(c), (int, float)) and math.isfinite(r[c])]
            if not xs:
                row[c], cell = None, "–"
            else:
                m, sd = _mean_sd(xs)
                row[c] = {"mean": m, "sd": sd, "n": len(xs)}
                scale, fmt = (1.0, ".2f") if c.split(" (")[0] in LOWER_IS_BETTER else (100.0, ".1f")
                cell = f"{scale * m:{fmt}}" + (f" ± {scale * sd:{fmt}}" if sd is not None else "")
            cells.append(cell)
        rows.append(row)
        table.append(cells)
    header = ["model", "seeds"] + [f"{c} {'↓' if c.split(' (')[0] in LOWER_IS_BETTER else '↑'}" for c in columns]
    return markdown_table(header, table), {"columns": columns, "rows": rows}


def write_seed_table(out_dir: str | Path, runs: Mapping[str, Sequence[str | Path]]) -> str:
    md, data = seed_table(runs)
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "seeds.json", data)
    atomic_write_text(out_dir / "seeds.md", md)
    return md


def write_train_text(units_dir: str | Path, transcripts: str | Path, out: str | Path) -> int:
    """Write the transcript of every training-split utterance of a unit dataset, one per line.

    Utterances are matched to ``transcripts.jsonl`` rows by their audio file. Returns the
    number of lines written.
    """
    from twist.units import UnitDataset

    transcripts = Path(transcripts)
    by_file: dict[str, str] = {}
    for line in transcripts.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            by_file[str((transcripts.parent / row["path"]).resolve())] = str(row["text"])
    train = UnitDataset(units_dir).split("train")
    texts = [by_file[str(Path(r["source"]).resolve())] for r in train.rows if str(Path(r["source"]).resolve()) in by_file]
    if not texts:
        raise InputError(f"no training utterance of {units_dir} has a transcript in {transcripts}")
    atomic_write_text(out, "".join(t + "\n" for t in texts))
    return len(texts)
