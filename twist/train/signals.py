"""Stop signals: a scheduler's SIGTERM (pre-emption, ``scancel``) or a chosen signal before a time
limit (SLURM ``--signal``) becomes a flag the training loop polls. The loop then finishes its
step, saves ``checkpoints/last`` and returns, so the same command resumes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from typing import Any


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
