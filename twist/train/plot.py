"""Validation perplexity against training steps for several runs, as one PNG.

The paper's Fig. 2b compares warm (TWIST) and cold starts by plotting validation PPL over
training; this draws the same figure from the ``metrics.jsonl`` of any set of run
directories written by ``twist-train``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from twist.atomic import atomic_path
from twist.errors import ConfigError, InputError
from twist.train.loggers import read_metrics


def run_curve(run_dir: str | Path, metric: str = "valid_ppl") -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``metric`` in a run's metrics.jsonl (later records win)."""
    by_step: dict[int, float] = {}
    for rec in read_metrics(run_dir):
        if metric in rec and isinstance(rec[metric], (int, float)):
            by_step[int(rec["step"])] = float(rec[metric])
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def run_label(run_dir: Path) -> str:
    """A readable label: the run's model and init from its config.yaml, else its dir name."""
    cfg = run_dir / "config.yaml"
    if cfg.exists():
        from omegaconf import OmegaConf

        c = OmegaConf.load(cfg)
        model = OmegaConf.select(c, "model.name")
        init = OmegaConf.select(c, "init.name")
        if model and init:
            frac = OmegaConf.select(c, "data.fraction")
            return f"{model} {init}" + (f" ({100 * float(frac):g}% data)" if frac not in (None, 1.0) else "")
    return run_dir.name


def plot_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    metric: str = "valid_ppl",
    labels: Sequence[str] | None = None,
    title: str | None = None,
    log_y: bool = False,
) -> Path:
    """Draw ``metric`` against steps for every run in ``runs`` into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise ConfigError("no runs to plot: pass runs=[dir1,dir2,...]")
    if labels is not None and len(labels) != len(runs):
        raise ConfigError(f"{len(labels)} labels for {len(runs)} runs")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    drawn = 0
    for i, r in enumerate(runs):
        r = Path(r)
        steps, values = run_curve(r, metric)
        if not steps:
            raise InputError(f"run {r} has no {metric!r} records in metrics.jsonl (did it validate?)")
        ax.plot(steps, values, marker="o", markersize=3, label=labels[i] if labels else run_label(r))
        drawn += 1
    ax.set_xlabel("training step")
    ax.set_ylabel("validation PPL" if metric == "valid_ppl" else metric)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title or "Validation perplexity (cf. TWIST Fig. 2b)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
