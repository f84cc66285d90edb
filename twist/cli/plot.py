"""``twist-plot``: valid PPL against steps for several runs, as a PNG (thin Hydra entry point).

    twist-plot 'runs=[runs/twist-350m,runs/cold-350m]' out=ppl.png
"""

from __future__ import annotations

from typing import Any

from twist.cli.common import hydra_cli
from twist.train.config import PlotConfig

PROG = "twist-plot"


def run(cfg: Any) -> None:
    from twist.schema import to_typed
    from twist.train.plot import plot_runs

    c = to_typed(PlotConfig, cfg)
    out = plot_runs(c.runs, c.out, metric=c.metric, labels=c.labels, title=c.title, log_y=c.log_y)
    print(f"{PROG}: wrote {out}")


main = hydra_cli(PROG, "plot", PlotConfig, run)

if __name__ == "__main__":
    main()
