"""What the demo reads off its runs: the paper's Fig. 2b number, seed spread, heard words.

* :func:`steps_to_reach`, :func:`warm_vs_cold`: TWIST's Fig. 2b shows the warm start reaching
  the cold start's final validation PPL in a fraction of the steps. For each cold run this
  finds the first validation step at which the warm run of the same seed is at or below the
  cold run's final valid PPL, or says that it never gets there.
* :func:`seed_table`: mean ± sd over seeds of every metric ``twist-eval`` wrote to each run's
  ``results.json`` (sample sd, n - 1), as a markdown table and a dict.
* :func:`write_train_text`: the transcripts of the training split, one per line, so the
  sWUGGY word list can count how often the model heard each word (its "in-vocab" words).
* :func:`dpo_report` (``dpo=true``): the warm model before and after Slam's DPO stage, side by
  side with twist-eval's intervals and paired tests (twist.eval.report.compare_table), DPO's own
  held-out pair accuracy with its interval, how many held-out pairs the LM heard whole in
  training, and the time the DPO steps took.
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


def _merged_results(runs: Sequence[str | Path]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Several eval runs of one model (different benchmarks) as one row: metrics, intervals, item scores."""
    from twist.eval.report import load_item_scores, load_results

    merged: dict[str, Any] = {"metrics": {}, "ci95": {}}
    items: dict[str, dict[str, float]] = {}
    for run in runs:
        r = load_results(run)
        merged.setdefault("model_name", r.get("model_name"))
        merged["metrics"].update(r.get("metrics") or {})
        merged["ci95"].update(r.get("ci95") or {})
        items.update(load_item_scores(run) or {})
    return merged, items


def dpo_report(before: Sequence[str | Path], after: str | Path, dpo_run: str | Path, pairs: str | Path,
               step_dirs: Mapping[str, str | Path], labels: Sequence[str] = ("warm", "warm + DPO"),
               train_text: str | Path | None = None) -> tuple[str, dict[str, Any]]:
    """The warm model before and after DPO, as markdown and a dict.

    Args:
        before: the eval runs of the starting model (the demo's eval of warm, and its eval on the
            held-out pairs), merged into one row.
        after: the eval run of the DPO model.
        dpo_run: the DPO training run (its ``metrics.jsonl``: TRL's ``eval_*`` names).
        pairs: the pair dataset DPO trained on (its ``valid`` split is the held-out one).
        step_dirs: step name -> output dir of each DPO step; their stamps give the time taken.
        train_text: the LM's training transcripts, one per line (counts held-out pairs heard whole).

    Returns:
        (markdown, ``{"table", "dpo_eval", "heard_in_training", "seconds"}``).
    """
    from twist.bench.storycloze import normalize_text
    from twist.eval.report import compare_table
    from twist.eval.stats import wilson_interval
    from twist.pairs import PairDataset
    from twist.train.loggers import read_metrics

    rows = [_merged_results(before), _merged_results([after])]
    md, table = compare_table([r for r, _ in rows], list(labels), [i for _, i in rows])

    # DPO's own validation at the exported (best) checkpoint
    records = read_metrics(dpo_run)
    end = next((r for r in reversed(records) if "best_step" in r), None)
    if end is None:
        raise InputError(f"{dpo_run}: metrics.jsonl has no end record (did DPO finish?)")
    evals = [r for r in records if "eval_rewards/accuracies" in r]
    at = next((r for r in evals if r.get("step") == end["best_step"]), evals[-1] if evals else None)
    ds = PairDataset(pairs)
    valid = ds.split("valid")
    dpo_eval: dict[str, Any] = {"step": end.get("step"), "best_step": end["best_step"], "n_pairs": len(valid)}
    lines = [md.rstrip(), ""]
    if at is not None:
        acc = float(at["eval_rewards/accuracies"])
        dpo_eval.update({k: at[k] for k in at if k.startswith("eval_")},
                        ci95=list(wilson_interval(acc, len(valid))), at_step=at.get("step"))
        lines.append(
            f"DPO's own held-out numbers (twist-train's validation on the {len(valid)} valid pairs, step "
            f"{at.get('step')} of {end.get('step')}, the exported one): eval_rewards/accuracies "
            f"{100 * acc:.1f} [{100 * dpo_eval['ci95'][0]:.1f}, {100 * dpo_eval['ci95'][1]:.1f}] % (0 before DPO by "
            f"construction: the policy starts equal to its reference, so every reward is 0), eval_loss "
            f"{at['eval_loss']:.4f} (ln 2 = {math.log(2):.4f} before), eval_rewards/margins "
            f"{at['eval_rewards/margins']:+.4f}.")

    heard = None
    if train_text is not None and Path(train_text).is_file():
        seen = {normalize_text(t) for t in Path(train_text).read_text(encoding="utf-8").splitlines()}
        heard = sum(normalize_text(f"{p.prompt_text} {p.chosen_text}") in seen for p in valid)
        lines.append(f"Held-out pairs whose whole sentence (prompt + chosen) is in the LM's training transcripts: "
                     f"{heard} of {len(valid)}.")

    seconds, line = _steps_time(step_dirs, "the DPO steps")
    lines.append(line)
    return "\n".join(lines) + "\n", {"table": table, "dpo_eval": dpo_eval, "heard_in_training": heard,
                                      "seconds": seconds}


def _steps_time(step_dirs: Mapping[str, str | Path], what: str) -> tuple[dict[str, Any], str]:
    """Each step's build time from its stamp, and the sentence that sums them."""
    from twist.demo.steps import read_stamp

    seconds = {name: (read_stamp(Path(d)) or {}).get("seconds") for name, d in step_dirs.items()}
    known = [v for v in seconds.values() if isinstance(v, (int, float))]
    parts = ", ".join(f"{n} {v:.0f} s" for n, v in seconds.items() if isinstance(v, (int, float)))
    return seconds, f"Time {what} took when built: {sum(known):.0f} s ({parts})."


def write_interleave_text(out: str | Path, units_dir: str | Path, transcripts: str | Path) -> int:
    """The interleaved run's text stream: the packaged sentences the corpus draws from
    (twist.bench.packaged_text), less those spoken in the valid or test split, one per line, so
    no held-out sentence is read as text. Returns the number of lines."""
    from twist.bench.packaged_text import read_sentences
    from twist.units import UnitDataset

    transcripts = Path(transcripts)
    by_stem: dict[str, str] = {}  # the corpus's ids are its wav stems, unique across voices
    for line in transcripts.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            by_stem[Path(row["path"]).stem] = str(row["text"])
    ds = UnitDataset(units_dir)
    rows = [r for s in ("valid", "test") for r in ds.split(s).rows]
    missing = [r["id"] for r in rows if Path(r["source"]).stem not in by_stem]
    if missing:
        raise InputError(f"{transcripts} has no transcript for held-out utterance {missing[0]!r} of {units_dir} "
                         f"({len(missing)} missing): the text stream could not leave it out")
    held = {by_stem[Path(r["source"]).stem] for r in rows}
    texts = [s for s in read_sentences() if s not in held]
    if not texts:
        raise InputError("no packaged sentence is left for the text stream once the held-out ones are removed")
    atomic_write_text(out, "".join(s + "\n" for s in texts))
    return len(texts)


def interleave_report(warm: str | Path, interleaved: str | Path, run: str | Path, step_dirs: Mapping[str, str | Path],
                      labels: Sequence[str] = ("warm", "interleaved")) -> tuple[str, dict[str, Any]]:
    """The unit-only warm model beside the interleaved one: every metric with its interval and
    the paired tests (speech-only benchmarks of both; cross-modal StoryCloze of the interleaved
    model), the mixture the run trained on, and the time the added steps took."""
    from twist.eval.report import compare_table

    rows = [_merged_results([warm]), _merged_results([interleaved])]
    md, table = compare_table([r for r, _ in rows], list(labels), [i for _, i in rows])
    lines = [md.rstrip(), ""]
    path = Path(run) / "mixture.json"
    counts = json.loads(path.read_text())["epoch0_documents"] if path.exists() else None
    mix = None
    if counts:
        mix = f"epoch 0 holds {', '.join(f'{n} {k}' for k, n in counts.items())} documents"
        lines.append(f"The interleaved run's mixture: {mix}.")
    seconds, line = _steps_time(step_dirs, "the interleaving steps")
    lines.append(line)
    return "\n".join(lines) + "\n", {"table": table, "mixture": mix, "seconds": seconds}


def write_interleave_report(out_dir: str | Path, **kwargs: Any) -> str:
    """:func:`interleave_report`, written to ``out_dir/interleave.{md,json}``; returns the markdown."""
    return _write_report(out_dir, "interleave", *interleave_report(**kwargs))


def write_dpo_report(out_dir: str | Path, **kwargs: Any) -> str:
    """:func:`dpo_report`, written to ``out_dir/dpo.{md,json}``; returns the markdown."""
    return _write_report(out_dir, "dpo", *dpo_report(**kwargs))


def _write_report(out_dir: str | Path, name: str, md: str, data: dict[str, Any]) -> str:
    """``out_dir/<name>.json`` and ``out_dir/<name>.md``; returns the markdown."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / f"{name}.json", data)
    atomic_write_text(out_dir / f"{name}.md", md)
    return md
