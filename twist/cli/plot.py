"""``twist-plot``: valid PPL against steps for several runs, as a PNG (thin Hydra entry point).

    twist-plot 'runs=[runs/twist-350m,runs/cold-350m]' out=ppl.png
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from twist.cli.common import user_errors


@user_errors("twist-plot")
def run(cfg: DictConfig) -> None:
    from twist.train.plot import plot_runs

    runs = cfg.runs
    runs = [runs] if isinstance(runs, str) else list(OmegaConf.to_container(runs, resolve=True))
    labels = list(cfg.labels) if cfg.get("labels") else None
    out = plot_runs(runs, cfg.out, metric=str(cfg.metric), labels=labels, title=cfg.get("title"),
                    log_y=bool(cfg.get("log_y")))
    print(f"twist-plot: wrote {out}")


@hydra.main(config_path="../configs", config_name="plot", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
