"""Why the training loop stops: its budgets (steps, tokens, time) and stop signals.

A scheduler's SIGTERM (pre-emption, ``scancel``) or a chosen signal before a time limit
(SLURM ``--signal``) becomes a flag the training loop polls. The loop then finishes its step,
saves ``checkpoints/last`` and returns, so the same command resumes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

import torch

from twist.dist import all_reduce_sum
from twist.train.config import TrainLoopConfig


class StopSignals:
    """Turn the named signals (e.g. ``SIGTERM``) into :attr:`received` while the block runs.

    Handlers are installed only in the main thread (Python's rule) and restored on exit.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = [str(n) for n in names]
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    @property
    def active(self) -> bool:
        """Whether handlers are installed (polling is only needed then)."""
        return bool(self._old)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for n in self.names:
                num = getattr(signal, n)
                self._old[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for num, old in self._old.items():
            signal.signal(num, old)
        self._old.clear()


def stop_reason(t: TrainLoopConfig, progress: Any, signals: StopSignals, started: float,
                device: torch.device) -> str:
    """Why the loop stops before the next step ("" to go on); every rank agrees.

    Args:
        t: the ``train`` settings (``max_steps``, ``max_train_tokens``, ``max_time``).
        progress: the run's progress so far (its ``step`` and ``tokens``: the trainer's state).
        signals: the stop signals being watched.
        started: ``time.monotonic()`` when this process started training (``max_time`` counts from it).
        device: where the ranks compare notes.
    """
    if t.max_steps is not None and progress.step >= t.max_steps:
        return "max_steps"
    if t.max_train_tokens is not None and progress.tokens >= t.max_train_tokens:
        return "max_train_tokens"
    if t.max_time is None and not signals.active:
        return ""
    # every rank stops at the same step, even if only some got the signal or ran late
    late, signalled = all_reduce_sum(
        [float(t.max_time is not None and time.monotonic() - started >= t.max_time),
         float(signals.received is not None)], device)
    if signalled > 0:
        return f"signal {signals.received or 'on another rank'}"
    return "max_time" if late > 0 else ""
