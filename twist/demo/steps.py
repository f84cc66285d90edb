"""Cached, named pipeline steps: the machinery behind ``twist-demo``.

A step is either a stage CLI run as a subprocess (so the demo exercises exactly what a user
types, and a failed step can be rerun alone with the printed command) or a small in-process
function. Each step leaves a stamp ``<out>/.twist-step.json`` holding a key derived from its
command/config and its inputs' keys, marked ``running`` when it starts and ``done`` when it
ends. A rerun skips a done step whose key matches (what makes a second ``make demo`` take
seconds), resumes a running one whose key matches (the stages resume themselves), and
wipes and rebuilds a step whose key changed, since a stage must not resume with other
settings. A step's directory holds only that step's output, so wiping it is safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twist.atomic import atomic_write_json
from twist.errors import ConfigError

STAMP = ".twist-step.json"


class StepFailed(RuntimeError):
    """A demo step failed; the message names the step and the command to rerun it alone."""

    def __init__(self, name: str, rerun: str, detail: str = "") -> None:
        self.name, self.rerun = name, rerun
        super().__init__(f"step '{name}' failed{': ' + detail if detail else ''}\n  rerun it alone with:\n    {rerun}")


@dataclass
class Step:
    """One cached unit of work.

    Attributes:
        name: short name, also what ``only=<name>`` selects.
        out: the step's output directory (holds its stamp).
        argv: a command to run as a subprocess, or ``None`` for ``fn``.
        fn: an in-process callable, used when ``argv`` is ``None``.
        config: what ``fn``'s result depends on (part of the cache key).
        depends: names of steps whose outputs this one reads; their keys are folded into this
            step's key, so rebuilding an input rebuilds what reads it.
        rerun: the command a user types to run this step alone (defaults to ``argv``).
    """

    name: str
    out: Path
    argv: list[str] | None = None
    fn: Callable[[], Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    depends: Sequence[str] = ()
    rerun: str | None = None

    def own_key(self) -> str:
        payload = json.dumps({"argv": self.argv, "config": self.config, "name": self.name}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def rerun_command(self) -> str:
        if self.rerun:
            return self.rerun
        return shlex.join(self.argv) if self.argv else f"twist-demo only={self.name}"


def read_stamp(out: Path) -> dict[str, Any] | None:
    p = Path(out) / STAMP
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_steps(
    steps: Sequence[Step],
    *,
    only: Sequence[str] | None = None,
    force: Sequence[str] = (),
    log_dir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run ``steps`` in order, skipping those whose stamp matches their key.

    Args:
        only: run just these steps (their inputs must already exist).
        force: rebuild these steps even when their stamp matches.
        log_dir: where each subprocess step's stdout/stderr is written (``<name>.log``).

    Returns:
        one record per step: name, status (``ran``/``cached``/``skipped``), seconds, out.

    Raises:
        StepFailed: naming the step and its rerun command.
    """
    names = [s.name for s in steps]
    for n in list(only or []) + list(force):
        if n not in names:
            raise ConfigError(f"unknown demo step {n!r}; steps are {names}")
    keys: dict[str, str] = {}
    records = []
    for step in steps:
        key = hashlib.sha256((step.own_key() + "".join(keys.get(d, "") for d in step.depends)).encode()).hexdigest()[:16]
        keys[step.name] = key
        if only and step.name not in only:
            records.append({"name": step.name, "status": "skipped", "seconds": 0.0, "out": str(step.out)})
            continue
        stamp = read_stamp(step.out)
        if stamp and stamp.get("key") == key and stamp.get("status") == "done" and step.name not in force:
            echo(f"[demo] {step.name:<12} cached ({stamp.get('seconds', 0):.0f} s when built)  {step.out}")
            records.append({"name": step.name, "status": "cached", "seconds": 0.0, "out": str(step.out)})
            continue
        if stamp and (stamp.get("key") != key or step.name in force):
            # built (or begun) with other settings: start clean rather than resume a mismatch
            shutil.rmtree(step.out, ignore_errors=True)
        elif stamp:
            echo(f"[demo] {step.name:<12} resuming an interrupted run")
        echo(f"[demo] {step.name:<12} running ...")
        step.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(step.out / STAMP, {"key": key, "status": "running", "started": time.time()})
        t0 = time.time()
        if step.argv is not None:
            _run_subprocess(step, log_dir)
        else:
            try:
                assert step.fn is not None
                step.fn()
            except Exception as e:
                raise StepFailed(step.name, step.rerun_command(), f"{type(e).__name__}: {e}") from e
        seconds = time.time() - t0
        step.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(step.out / STAMP, {"key": key, "status": "done", "seconds": round(seconds, 1), "finished": time.time()})
        echo(f"[demo] {step.name:<12} done in {seconds:.0f} s  {step.out}")
        records.append({"name": step.name, "status": "ran", "seconds": round(seconds, 1), "out": str(step.out)})
    return records


def _run_subprocess(step: Step, log_dir: Path | None) -> None:
    assert step.argv is not None
    log_path = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{step.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") if log_path else open(os.devnull, "w") as log:
        proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-15:]
            if line.strip() and not _looks_like_progress(line):
                sys.stdout.write(f"    {line.rstrip()[:160]}\n")
                sys.stdout.flush()
        rc = proc.wait()
    if rc != 0:
        detail = f"exit code {rc}" + (f"; log: {log_path}" if log_path else "")
        detail += "\n  last output:\n    " + "\n    ".join(tail[-8:])
        raise StepFailed(step.name, step.rerun_command(), detail)


def _looks_like_progress(line: str) -> bool:
    """tqdm redraws (echoed once per refresh when piped) are kept in the log, not echoed."""
    return "%|" in line or "it/s]" in line or "s/it]" in line
