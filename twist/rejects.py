"""The per-item rejects log: bad inputs are recorded and skipped, never silently dropped.

One JSON object per line: ``{"item": ..., "reason": ..., "stage": ...}``. Each line is
flushed as it is written, so a killed run keeps every reject it found. In ``strict`` mode
the first reject raises instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twist.errors import InputError


class RejectedItemError(InputError):
    """Raised for a bad item in strict mode."""


class RejectsLog:
    def __init__(self, path: str | Path | None, *, stage: str, strict: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.stage = stage
        self.strict = strict
        self.count = 0
        self.held: list[tuple[Any, str, dict[str, Any]]] = []  # with no path: kept for replay()
        self._fh = None

    def add(self, item: Any, reason: str, **extra: Any) -> None:
        if self.strict:
            raise RejectedItemError(f"{self.stage}: rejected {item}: {reason}")
        self.count += 1
        if self.path is None:
            self.held.append((item, reason, extra))
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # only once there is something to log
            self._fh = open(self.path, "a", encoding="utf-8")
        rec = {"item": str(item), "reason": reason, "stage": self.stage, **extra}
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()

    def replay(self, other: RejectsLog) -> None:
        """Log the rejects ``other`` held (found before this log's directory could be written)."""
        for item, reason, extra in other.held:
            self.add(item, reason, **extra)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RejectsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        path = Path(path)
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line torn by kill -9 mid-write
        return out
