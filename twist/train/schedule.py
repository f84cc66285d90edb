"""Learning-rate schedules of the TWIST recipe (paper appendix A.1).

* ``inverse_sqrt``: linear warmup over ``warmup_steps`` (100 in the paper) from 0 to
  ``lr_max``, then ``lr_final + (lr_max - lr_final) * sqrt(warmup / step)``, which decays
  toward ``lr_final`` (fairseq's inverse-sqrt shape, with a floor).
* ``cosine``: linear warmup (500 steps for the LLaMA-7B recipe), then a half cosine from
  ``lr_max`` to ``lr_final`` at ``total_steps``, flat afterwards.
* ``constant``: warmup, then ``lr_max`` (for debugging).

``lr_max`` and ``lr_final`` come from the ``init/`` config (warm and cold starts use
different rates). The schedule is a pure function of the step, so its only state is the
step, saved in every checkpoint.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from twist.errors import ConfigError

if TYPE_CHECKING:
    from twist.train.config import TrainRunConfig

KINDS = ("inverse_sqrt", "cosine", "constant")


class LRSchedule:
    """Sets the optimiser's learning rate from the step number."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        kind: str,
        lr_max: float,
        lr_final: float,
        warmup_steps: int,
        total_steps: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(f"schedule.name: unknown schedule {kind!r}; choose one of {KINDS}")
        if kind == "cosine" and not total_steps:
            raise ConfigError("the cosine schedule needs the total number of steps (train.max_steps)")
        if lr_max <= 0 or lr_final < 0 or lr_final > lr_max:
            raise ConfigError(f"learning rates (init.lr_max/lr_final, or optim.lr_max/lr_final): need 0 <= lr_final <= lr_max "
                              f"and lr_max > 0; got lr_max={lr_max}, lr_final={lr_final}")
        self.optimizer = optimizer
        self.kind = kind
        self.lr_max, self.lr_final = float(lr_max), float(lr_final)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = total_steps
        self.step_num = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based: the first update is step 0)."""
        s = step + 1
        if self.warmup_steps and s <= self.warmup_steps:
            return self.lr_max * s / self.warmup_steps
        if self.kind == "constant":
            return self.lr_max
        if self.kind == "inverse_sqrt":
            w = max(1, self.warmup_steps)
            return self.lr_final + (self.lr_max - self.lr_final) * math.sqrt(w / s)
        assert self.total_steps is not None
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (s - self.warmup_steps) / span)
        return self.lr_final + 0.5 * (self.lr_max - self.lr_final) * (1 + math.cos(math.pi * t))

    @property
    def lr(self) -> float:
        return self.lr_at(self.step_num)

    def _apply(self) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr

    def step(self) -> None:
        """Advance after an optimiser update."""
        self.step_num += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step_num}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.step_num = int(d["step"])
        self._apply()


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainRunConfig) -> LRSchedule:
    """The run's schedule: ``schedule/``, the learning rates of ``init/`` (or ``optim``), and
    ``train.max_steps`` as the total unless ``schedule.total_steps`` is set."""
    s = cfg.schedule
    return LRSchedule(optimizer, kind=s.name, lr_max=cfg.lr_max, lr_final=cfg.lr_final, warmup_steps=s.warmup_steps,
                      total_steps=s.total_steps or cfg.train.max_steps)
