"""twist-train under torchrun: 2 gloo processes equal 1, two "nodes", resume across strategies, signals, SLURM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.model_shapes import tiny_node
from twist.checkpoint import load_checkpoint
from twist.lm.config import ModelConfig
from twist.train.loggers import read_metrics
from twist.train.trainer import Trainer


def _clean_env() -> dict[str, str]:
    """This process's environment without torchrun's variables (pytest may itself run under one)."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _assert_same_curves(one: list[dict], two: list[dict], label: str = "") -> None:
    """Training loss and valid PPL logged at the same steps, equal within 1e-5."""
    for key in ("loss", "valid_ppl"):
        a = {r["step"]: r[key] for r in one if key in r}
        b = {r["step"]: r[key] for r in two if key in r}
        assert a.keys() == b.keys() and a, (label, key)
        for step in a:
            assert b[step] == pytest.approx(a[step], abs=1e-5, rel=1e-5), (label, key, step)


SCRIPT = """
import json, sys
from twist.train.trainer import Trainer
from twist.dist import shutdown_distributed
Trainer(json.loads(open(sys.argv[1]).read())).fit()
shutdown_distributed()
"""

def run_on_two_gloo(cfg, tmp_path: Path, timeout: float = 300) -> None:
    """Train ``cfg`` (a train config) on 2 gloo processes under torchrun, in ``tmp_path``."""
    (tmp_path / "cfg.json").write_text(json.dumps(cfg, default=OmegaConf.to_container))
    (tmp_path / "run.py").write_text(SCRIPT)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(tmp_path / "run.py"), str(tmp_path / "cfg.json")], capture_output=True, text=True,
                       timeout=timeout, env={**_clean_env(), "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]


# SCRIPT, recording on each rank whether the speech LMs it built held real weights or were
# laid out on the meta device
SPY_SCRIPT = """
import json, os, sys
import twist.lm
from twist.train.trainer import Trainer
from twist.dist import shutdown_distributed
real, built = twist.lm.build_speech_lm, []
def spy(*args, **kwargs):
    model = real(*args, **kwargs)
    built.append("meta" if next(model.parameters()).is_meta else "real")
    return model
twist.lm.build_speech_lm = spy
Trainer(json.loads(open(sys.argv[1]).read())).fit()
open(f"built_rank{os.environ['RANK']}.json", "w").write(json.dumps(built))
shutdown_distributed()
"""


TINY_LLAMA = ModelConfig(**tiny_node("llama"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy,family", [("ddp", "opt"), ("fsdp", "opt"), ("fsdp", "llama")])
def test_two_processes_equal_one(strategy, family, unit_data, tmp_path, make_cfg):
    """DDP, and FSDP2 (fully_shard) on gloo, against one process: same losses, PPLs, weights.
    LLaMA has non-persistent buffers (rotary inv_freq), which the FSDP2 start must broadcast."""

    def cfg(out, micro):
        c = make_cfg(unit_data, out, max_steps=4, valid_every=2, save_every=2, micro_batch=micro, num_threads=1,
                     strategy=strategy)
        if family == "llama":
            c.model = TINY_LLAMA
        else:
            c["model"]["config"] = {**c["model"]["config"], "dropout": 0.0, "attention_dropout": 0.0}
        return c

    Trainer(cfg(tmp_path / "one", 2)).fit()  # 1 process x 2 micro-batches of 2
    (tmp_path / "cfg.json").write_text(json.dumps(cfg(tmp_path / "two", 1), default=OmegaConf.to_container))  # 2 processes x 2 micro-batches of 1
    (tmp_path / "run.py").write_text(SPY_SCRIPT)
    env = _clean_env()
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(tmp_path / "run.py"), str(tmp_path / "cfg.json")],
        capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    _assert_same_curves(one, two)
    wa = load_checkpoint(tmp_path / "one" / "checkpoints" / "last")
    wb = load_checkpoint(tmp_path / "two" / "checkpoints" / "last")
    assert wb["world_size"] == 2 and len(wb["rng"]) == 2
    # the exported speech LM (under FSDP2: rebuilt on the meta device from the best checkpoint)
    from twist.lm import load_speech_lm

    (ea, _), (eb, _) = load_speech_lm(tmp_path / "one" / "speech_lm"), load_speech_lm(tmp_path / "two" / "speech_lm")
    for (k, v), (k2, v2) in zip(ea.state_dict().items(), eb.state_dict().items()):
        assert k == k2 and torch.allclose(v, v2, atol=1e-5), k
    assert dict(ea.named_buffers()).keys() == dict(eb.named_buffers()).keys()
    for k, v in ea.named_buffers():
        assert torch.equal(v, dict(eb.named_buffers())[k]), k
    built = [json.loads((tmp_path / f"built_rank{r}.json").read_text()) for r in range(2)]
    if strategy == "fsdp":  # only rank 0 holds full weights; rank 1 gets its shards by broadcast
        assert built[0][0] == "real" and set(built[1]) == {"meta"}, built
    else:
        assert set(built[0]) == set(built[1]) == {"real"}, built
    for k, v in wa["model"].items():
        assert torch.allclose(v, wb["model"][k], atol=1e-5), k


PHASES_SCRIPT = """
import json, shutil, sys
from pathlib import Path
import torch.distributed as dist
from twist.train.trainer import Trainer
from twist.dist import shutdown_distributed
for phase in json.loads(open(sys.argv[1]).read()):
    if phase.get("copy"):  # rank 0 copies a finished run's directory, the others wait
        src, dst = phase["copy"]
        if not dist.is_initialized() or dist.get_rank() == 0:
            shutil.copytree(src, dst)
        if dist.is_initialized():
            dist.barrier()
        continue
    Trainer(phase).fit()
shutdown_distributed()
"""


def _torchrun(tmp_path, phases, nproc=2):
    (tmp_path / "phases.json").write_text(json.dumps(phases, default=OmegaConf.to_container))
    (tmp_path / "phases.py").write_text(PHASES_SCRIPT)
    env = _clean_env()
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
         str(tmp_path / "phases.py"), str(tmp_path / "phases.json")],
        capture_output=True, text=True, timeout=400, env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]


@pytest.mark.slow
def test_resume_across_strategies_and_world_sizes(unit_data, tmp_path, make_cfg):
    """A checkpoint written by one layout resumes under another: 1 process -> FSDP2,
    FSDP2 -> DDP, FSDP2 (2 processes) -> 1 process. Every continuation matches an
    uninterrupted single-process run, step for step."""

    def cfg(out, *, steps, strategy="auto", micro=2):
        c = make_cfg(unit_data, out, max_steps=steps, valid_every=2, save_every=2, micro_batch=micro, num_threads=1,
                     strategy=strategy)
        c["model"]["config"] = {**c["model"]["config"], "dropout": 0.0, "attention_dropout": 0.0}
        return c

    Trainer(cfg(tmp_path / "ref", steps=4)).fit()  # uninterrupted, 1 process
    Trainer(cfg(tmp_path / "single", steps=2)).fit()  # stops at step 2
    shutil.copytree(tmp_path / "single", tmp_path / "single_to_fsdp")
    # an older checkpoint: optimiser state keyed by position, as Optimizer.state_dict() writes it
    shutil.copytree(tmp_path / "single", tmp_path / "positional_to_fsdp")
    old = tmp_path / "positional_to_fsdp" / "checkpoints" / "last" / "state.pt"
    ck = torch.load(old, weights_only=True)
    names = [n for g in ck["optimizer"]["param_groups"] for n in g["params"]]
    pos = {n: i for i, n in enumerate(names)}
    ck["optimizer"] = {"state": {pos[n]: v for n, v in ck["optimizer"]["state"].items()},
                       "param_groups": [{**g, "params": [pos[n] for n in g["params"]]}
                                        for g in ck["optimizer"]["param_groups"]]}
    torch.save(ck, old)
    _torchrun(tmp_path, [
        cfg(tmp_path / "single_to_fsdp", steps=4, strategy="fsdp", micro=1),
        cfg(tmp_path / "positional_to_fsdp", steps=4, strategy="fsdp", micro=1),
        cfg(tmp_path / "fsdp", steps=2, strategy="fsdp", micro=1),
        {"copy": [str(tmp_path / "fsdp"), str(tmp_path / "fsdp_to_single")]},
        {"copy": [str(tmp_path / "fsdp"), str(tmp_path / "fsdp_to_ddp")]},
        cfg(tmp_path / "fsdp_to_ddp", steps=4, strategy="ddp", micro=1),
    ])
    Trainer(cfg(tmp_path / "fsdp_to_single", steps=4)).fit()

    ref = read_metrics(tmp_path / "ref")
    for run in ("single_to_fsdp", "positional_to_fsdp", "fsdp_to_ddp", "fsdp_to_single"):
        got = read_metrics(tmp_path / run)
        _assert_same_curves(ref, got, run)
        wa = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last")
        wb = load_checkpoint(tmp_path / run / "checkpoints" / "last")
        for k, v in wa["model"].items():
            assert torch.allclose(v, wb["model"][k], atol=1e-5), (run, k)


def test_optimizer_state_is_keyed_by_name_and_older_positional_state_loads():
    from twist.dist import DistInfo
    from twist.train.parallelize import Strategy

    one_process = Strategy(DistInfo(0, 1, 0, torch.device("cpu")))

    def setup(fused):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        o = torch.optim.AdamW([{"params": [m[0].weight, m[1].weight]}, {"params": [m[0].bias, m[1].bias]}],
                              fused=fused)
        return m, o

    m, o = setup(None)
    m(torch.randn(3, 4)).sum().backward()
    o.step()
    model_sd, optim_sd = one_process.full_state(m, o)
    assert set(optim_sd["state"]) == {"0.weight", "1.weight", "0.bias", "1.bias"}
    for saved in (optim_sd, o.state_dict()):  # by name (now) and by position (older checkpoints)
        m2, o2 = setup(True)  # this run steps with fused kernels; the checkpoint's flag must not undo that
        one_process.load_full_state(m2, o2, model_sd, saved)
        assert torch.equal(o2.state[m2[1].weight]["exp_avg"], o.state[m[1].weight]["exp_avg"])
        assert all(g["fused"] for g in o2.param_groups)


@pytest.mark.slow
def test_sharded_checkpoints_under_fsdp_resume_and_reshard(unit_data, tmp_path, make_cfg):
    """checkpoint_format=sharded under FSDP2: each rank writes its shards; the run resumes on 2
    processes, and the same files resume on 1 process (resharded on load); both match an
    uninterrupted single-process run."""
    from twist.checkpoint import shards_dir

    def cfg(out, *, steps, strategy="auto", micro=2):
        c = make_cfg(unit_data, out, max_steps=steps, valid_every=2, save_every=2, micro_batch=micro, num_threads=1,
                     strategy=strategy, checkpoint_format="sharded")
        c.model = TINY_LLAMA  # rotary buffers too
        return c

    Trainer(cfg(tmp_path / "ref", steps=4)).fit()
    _torchrun(tmp_path, [
        cfg(tmp_path / "fsdp", steps=2, strategy="fsdp", micro=1),
        {"copy": [str(tmp_path / "fsdp"), str(tmp_path / "fsdp_to_single")]},
        cfg(tmp_path / "fsdp", steps=4, strategy="fsdp", micro=1),
    ])
    assert shards_dir(tmp_path / "fsdp_to_single" / "checkpoints" / "last") is not None
    assert len(list((tmp_path / "fsdp_to_single" / "checkpoints" / "last" / "shards").glob("*.distcp"))) == 2
    Trainer(cfg(tmp_path / "fsdp_to_single", steps=4)).fit()
    ref = read_metrics(tmp_path / "ref")
    for run in ("fsdp", "fsdp_to_single"):
        _assert_same_curves(ref, read_metrics(tmp_path / run), run)
    from twist.lm import load_speech_lm

    (a, _), (b, _) = load_speech_lm(tmp_path / "ref" / "speech_lm"), load_speech_lm(tmp_path / "fsdp" / "speech_lm")
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.allclose(v, v2, atol=1e-5), k


MP_SCRIPT = """
import json, os, sys
from twist.train.trainer import Trainer
from twist.dist import shutdown_distributed
trainer = Trainer(json.loads(open(sys.argv[1]).read()))
block = next(m for m in trainer.model.modules() if type(m).__name__.startswith("FSDP") and m is not trainer.model)
policy = block._get_fsdp_state()._mp_policy
open(f"policy{os.environ['RANK']}", "w").write(f"{policy.param_dtype}|{policy.reduce_dtype}")
trainer.fit()
del trainer
shutdown_distributed()
"""


@pytest.mark.slow
def test_fsdp_bf16_all_gathers_train_like_one_bf16_process(unit_data, tmp_path, make_cfg):
    """precision=bf16 under FSDP2: parameters are all-gathered and used in bf16, gradients are
    reduced in fp32 (fsdp_param_dtype=auto); the run tracks a single bf16-autocast process."""

    def cfg(out, strategy, micro):
        c = make_cfg(unit_data, out, max_steps=4, valid_every=2, save_every=0, micro_batch=micro, num_threads=1,
                     strategy=strategy, precision="bf16")
        c["model"]["config"] = {**c["model"]["config"], "dropout": 0.0, "attention_dropout": 0.0}
        return c

    Trainer(cfg(tmp_path / "one", "auto", 2)).fit()
    (tmp_path / "cfg.json").write_text(json.dumps(cfg(tmp_path / "two", "fsdp", 1), default=OmegaConf.to_container))
    (tmp_path / "run.py").write_text(MP_SCRIPT)
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(tmp_path / "run.py"), str(tmp_path / "cfg.json")],
        capture_output=True, text=True, timeout=300, env={**_clean_env(), "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert (tmp_path / "policy0").read_text() == "torch.bfloat16|torch.float32"
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    a = {r["step"]: r["loss"] for r in one if "loss" in r}
    b = {r["step"]: r["loss"] for r in two if "loss" in r}
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=0.02), step  # bf16 rounding, not a different run


@pytest.mark.slow
def test_two_node_rendezvous_equals_one_process(unit_data, tmp_path, make_cfg):
    """The README's multi-node command, with two "nodes" on this machine: one torchrun agent per
    node, c10d rendezvous on the head node's endpoint, one process each. It trains like one
    process with the same global batch."""
    import socket

    def cfg(out, micro):
        c = make_cfg(unit_data, out, max_steps=2, valid_every=2, save_every=2, micro_batch=micro, num_threads=1)
        c["model"]["config"] = {**c["model"]["config"], "dropout": 0.0, "attention_dropout": 0.0}
        return c

    Trainer(cfg(tmp_path / "one", 2)).fit()
    (tmp_path / "cfg.json").write_text(json.dumps(cfg(tmp_path / "nodes", 1), default=OmegaConf.to_container))
    (tmp_path / "run.py").write_text(SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _clean_env()
    agents = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
             "--rdzv-id=twist-test", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
             *(["--rdzv-conf=is_host=true"] if node == 0 else ["--rdzv-conf=is_host=false"]),
             str(tmp_path / "run.py"), str(tmp_path / "cfg.json")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
            env={**env, "OMP_NUM_THREADS": "1"},
        )
        for node in range(2)
    ]
    outs = [a.communicate(timeout=300)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], "\n".join(o[-3000:] for o in outs)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "nodes")
    _assert_same_curves(one, two)
    assert load_checkpoint(tmp_path / "nodes" / "checkpoints" / "last")["world_size"] == 2


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint(unit_data, tmp_path, make_cfg):
    """torchrun forwards SIGTERM to its workers; under FSDP2 both ranks agree on the step,
    save `last` together and exit; the run then resumes."""
    import signal
    import time

    run = tmp_path / "run"
    cfg = make_cfg(unit_data, run, max_steps=100_000, valid_every=0, save_every=0, micro_batch=1, strategy="fsdp")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg, default=OmegaConf.to_container))
    # each rank writes its own stop record (their stdout lines would interleave in one pipe)
    (tmp_path / "run.py").write_text(
        SCRIPT.replace("Trainer(json", "r = Trainer(json").replace(
            ".fit()", ".fit(); import os; open(f\"stop{os.environ['RANK']}\", 'w').write(f'{r.stop_reason}|{r.step}')"))
    env = _clean_env()
    p = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(tmp_path / "run.py"), str(tmp_path / "cfg.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (
        (run / "metrics.jsonl").exists() and sum("loss" in r for r in read_metrics(run)) >= 2
    ):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    stops = [(tmp_path / f"stop{r}").read_text() if (tmp_path / f"stop{r}").exists() else None for r in range(2)]
    assert stops[0] is not None and stops[0] == stops[1], (stops, out[-2000:] + err[-3000:])  # both ranks, same step
    reason, step = stops[0].split("|")
    step = int(step)
    assert reason == "signal SIGTERM"
    assert load_checkpoint(run / "checkpoints" / "last")["state"]["step"] == step
    cfg["train"]["max_steps"] = step + 1
    cfg["train"]["strategy"] = "auto"
    assert Trainer(cfg).fit().step == step + 1  # resumed, in one process


@pytest.mark.slow
def test_slurm_script_runs_twist_train_under_torchrun(unit_data, tmp_path):
    """scripts/train.sbatch with stand-ins for `srun` and `scontrol` (one node, 2 CPU processes):
    the script's torchrun line starts the `twist-train` console script, which trains and exports."""
    import socket
    from pathlib import Path

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nexec "$@"\n')  # one node: run the step here
    (bin_dir / "scontrol").write_text('#!/bin/bash\necho 127.0.0.1\n')  # `show hostnames`
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _clean_env()
    env.update(PATH=f"{bin_dir}:{Path(sys.executable).parent}:{env.get('PATH', '')}", SLURM_NNODES="1",
               SLURM_JOB_NODELIST="node001", SLURM_JOB_ID="4242", GPUS_PER_NODE="2", TWIST_RDZV_PORT=str(port),
               OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    script = Path(__file__).resolve().parents[2] / "scripts" / "train.sbatch"
    p = subprocess.run(
        ["bash", str(script), "+model=tiny", "+init=cold", f"data.path={unit_data}", f"out_dir={out}",
         "data.max_tokens=64", "train.global_batch=4", "train.micro_batch=1", "train.max_steps=2",
         "train.valid_every=2", "train.num_threads=1", "logger=jsonl", "train.progress=false"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert load_checkpoint(out / "checkpoints" / "last")["world_size"] == 2
    assert (out / "speech_lm" / "model.safetensors").exists()
