"""The kill-and-resume script the resume tests run: a trainer that kills itself with SIGKILL.

``write_kill_script`` writes a script that trains the given config and, when the step in
``$KILL_AT`` is reached, logs that step as a real run would have and sends itself SIGKILL
(no cleanup, no final checkpoint). ``$KILL_AT=0`` (or unset) runs to the end, which is how
the tests resume it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

KILL_SCRIPT = """
import os, signal, json
from twist.train.trainer import Trainer

cfg = json.loads({cfg!r})
kill_at = int(os.environ.get("KILL_AT", "0"))

class Killable(Trainer):
    def train_step(self):
        m = super().train_step()
        if self.state.step == kill_at:
            self.logger.log({{**m, "tokens": 0}}, step=self.state.step)  # as a real run would have logged
            if {close_logger!r}:
                self.logger.close()  # the event file reaches the disk, as a long run's would have
            os.kill(os.getpid(), signal.SIGKILL)
        return m

Killable(cfg).fit()
"""


def write_kill_script(path: Path, cfg: Any, *, close_logger: bool = False) -> Path:
    """Write the script for ``cfg`` (a train config, structured or plain) to ``path``."""
    text = json.dumps(cfg, default=OmegaConf.to_container)
    path.write_text(textwrap.dedent(KILL_SCRIPT.format(cfg=text, close_logger=close_logger)))
    return path


def run_kill_script(script: Path, kill_at: int = 0, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script``, killed at step ``kill_at`` (0: run to the end)."""
    return subprocess.run([sys.executable, str(script)], env={**os.environ, "KILL_AT": str(kill_at)},
                          capture_output=True, text=True, timeout=timeout)


def kill_then_resume(script: Path, *, kill_at: int, saved_step: int, run_dir: Path) -> None:
    """Kill ``script``'s run with SIGKILL at step ``kill_at`` (its last checkpoint must be
    ``saved_step``), then rerun it to the end."""
    from twist.checkpoint import read_checkpoint_meta

    p = run_kill_script(script, kill_at=kill_at)
    assert p.returncode == -9, p.stderr[-2000:]
    assert read_checkpoint_meta(run_dir / "checkpoints" / "last")["step"] == saved_step
    p = run_kill_script(script)
    assert p.returncode == 0, p.stderr[-2000:]


def assert_bit_identical_runs(ref: Path, run: Path, steps: int) -> None:
    """Both runs logged the same loss at every step 1..``steps`` and end with the same weights, bit for bit."""
    import torch

    from twist.checkpoint import load_checkpoint
    from twist.train.loggers import read_metrics

    la = {r["step"]: r["loss"] for r in read_metrics(ref) if "loss" in r}
    lb = {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}
    assert sorted(lb) == list(range(1, steps + 1)) and la == lb
    wa, wb = (load_checkpoint(d / "checkpoints" / "last")["model"] for d in (ref, run))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

