"""Two gloo processes under torchrun train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from twist.checkpoint import load_checkpoint
from twist.train.loggers import read_metrics
from twist.train.trainer import Trainer

SCRIPT = """
import json, sys
from twist.train.trainer import Trainer
from twist.train.distributed import shutdown_distributed
Trainer(json.loads(open(sys.argv[1]).read())).fit()
shutdown_distributed()
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_equal_one(strategy, unit_data, tmp_path, make_cfg):
    """DDP, and FSDP2 (fully_shard) on gloo, against one process: same losses, PPLs, weights."""

    def cfg(out, micro):
        c = make_cfg(unit_data, out, max_steps=4, valid_every=2, save_every=2, micro_batch=micro, num_threads=1,
                     strategy=strategy)
        c["model"]["config"] = {**c["model"]["config"], "dropout": 0.0, "attention_dropout": 0.0}
        return c

    Trainer(cfg(tmp_path / "one", 2)).fit()  # 1 process x 2 micro-batches of 2
    (tmp_path / "cfg.json").write_text(json.dumps(cfg(tmp_path / "two", 1)))  # 2 processes x 2 micro-batches of 1
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(tmp_path / "run.py"), str(tmp_path / "cfg.json")],
        capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for key in ("loss", "valid_ppl"):
        a = {r["step"]: r[key] for r in one if key in r}
        b = {r["step"]: r[key] for r in two if key in r}
        assert a.keys() == b.keys() and a
        for s in a:
            assert b[s] == pytest.approx(a[s], abs=1e-5, rel=1e-5), (key, s)
    wa = load_checkpoint(tmp_path / "one" / "checkpoints" / "last")
    wb = load_checkpoint(tmp_path / "two" / "checkpoints" / "last")
    assert wb["world_size"] == 2 and len(wb["rng"]) == 2
    for k, v in wa["model"].items():
        assert torch.allclose(v, wb["model"][k], atol=1e-5), k
