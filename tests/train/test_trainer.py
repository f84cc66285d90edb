"""The trainer: the loss falls, kill -9 + resume is exact, best export, safe saves, clear errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.kill_resume import run_kill_script, write_kill_script
from tests.model_shapes import tiny_node
from twist.checkpoint import load_checkpoint, read_checkpoint_meta
from twist.errors import DiskFullError
from twist.lm.config import ModelConfig
from twist.train.loggers import read_metrics
from twist.train.trainer import Trainer


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out) if "loss" in r}


def _valid(out: Path) -> dict[int, float]:
    return {r["step"]: r["valid_ppl"] for r in read_metrics(out) if "valid_ppl" in r}


def test_loss_falls(make_cfg, make_units, unit_data, tmp_path):
    result = Trainer(make_cfg(unit_data, tmp_path / "run", max_steps=12, valid_every=6, save_every=0)).fit()
    losses = _losses(tmp_path / "run")
    assert len(losses) == 12 and result.step == 12
    first, last = sum(list(losses.values())[:3]) / 3, sum(list(losses.values())[-3:]) / 3
    assert last < first - 0.3, (first, last)
    v = _valid(tmp_path / "run")
    assert v[12] < v[6]


def test_kill_and_resume_is_bit_identical(make_cfg, make_units, unit_data, tmp_path):
    """kill -9 after step 5 (last checkpoint: step 3); the resumed run repeats steps 4.. exactly."""
    common = {"max_steps": 8, "valid_every": 0, "save_every": 3, "num_threads": 1}
    ref = tmp_path / "ref"
    Trainer(make_cfg(unit_data, ref, **common)).fit()
    run = tmp_path / "run"
    script = write_kill_script(tmp_path / "train_kill.py", make_cfg(unit_data, run, **common))
    p = run_kill_script(script, kill_at=5)
    assert p.returncode == -9, p.stderr[-2000:]
    assert read_checkpoint_meta(run / "checkpoints" / "last")["step"] == 3
    assert max(_losses(run)) == 5  # the killed run got past its checkpoint
    p = run_kill_script(script)
    assert p.returncode == 0, p.stderr[-2000:]
    a, b = _losses(ref), _losses(run)
    assert sorted(b) == list(range(1, 9))  # the killed run's steps 4-5 were replaced, not duplicated
    assert [a[s] for s in range(1, 9)] == [b[s] for s in range(1, 9)]  # bit-identical floats
    wa = load_checkpoint(ref / "checkpoints" / "last")["model"]
    wb = load_checkpoint(run / "checkpoints" / "last")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_export_is_the_best_valid_checkpoint(make_cfg, make_units, unit_data, tmp_path, monkeypatch):
    # Real validation: the exported model's PPL is the lowest one logged, at the logged step.
    out = tmp_path / "real"
    cfg = make_cfg(unit_data, out, max_steps=6, valid_every=2, save_every=0)
    cfg["init"]["lr_max"] = 3e-2  # large steps: PPL need not improve monotonically
    Trainer(cfg).fit()
    v = _valid(out)
    best_step = min(v, key=v.get)
    assert read_checkpoint_meta(out / "checkpoints" / "best")["best_step"] == best_step
    from twist.lm import load_speech_lm
    from twist.lm.packing import token_loss_sum
    from twist.train.data import open_split, valid_batches

    model, contract = load_speech_lm(out / "speech_lm")
    total = count = 0.0
    with torch.no_grad():
        for b, _ in valid_batches(open_split(unit_data, "valid"), max_tokens=64, micro_batch=2):
            total += float(token_loss_sum(model(**b.model_inputs()).logits, b.targets, contract.layout))
            count += b.n_targets
    assert torch.exp(torch.tensor(total / count)).item() == pytest.approx(v[best_step], rel=1e-5)

    # Scripted validation PPLs: the best (step 4) is neither the first nor the last.
    scripted = iter([5.0, 3.0, 4.0, 6.0])
    monkeypatch.setattr(Trainer, "validate", lambda self: {"valid_ppl": next(scripted)})
    out2 = tmp_path / "scripted"
    Trainer(make_cfg(unit_data, out2, max_steps=8, valid_every=2, save_every=0)).fit()
    best = load_checkpoint(out2 / "checkpoints" / "best")
    assert best["state"]["step"] == 4 and best["state"]["best_value"] == 3.0
    from safetensors.torch import load_file

    exported = load_file(out2 / "speech_lm" / "model.safetensors")
    last = load_checkpoint(out2 / "checkpoints" / "last")["model"]
    # the export leaves the alignment-padding rows of embedding and head out: compare the rows it keeps
    assert all(torch.equal(exported[k], best["model"][k][: exported[k].shape[0]]) for k in exported)
    assert any(not torch.equal(exported[k], last[k][: exported[k].shape[0]]) for k in exported)


FILLING_DISK = """
import errno, io, os, sys
import twist.checkpoint as ck

class FillingDisk(io.FileIO):
    # the disk fills up part-way through the second checkpoint: torch's writer then masks the
    # ENOSPC with its own "unexpected pos" RuntimeError, as on a real full disk
    saves = 0

    def __init__(self, path, mode="wb"):
        super().__init__(path, mode)
        FillingDisk.saves += 1
        self.room = 4096 if FillingDisk.saves == 2 else 1 << 40

    def write(self, b):
        if len(memoryview(b)) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(memoryview(b))
        return super().write(b)

ck.open = FillingDisk
from twist.cli.train import main
sys.argv = ["twist-train", *sys.argv[1:]]
main()
"""


def test_a_disk_that_fills_up_during_a_training_checkpoint_is_one_line_exit_2_and_the_last_checkpoint_stays(
        make_units, contract, tmp_path):
    data = make_units(tmp_path / "units", contract)
    out = tmp_path / "run"
    script = tmp_path / "filling_disk.py"
    script.write_text(FILLING_DISK)
    p = subprocess.run([sys.executable, str(script), "+model=tiny", "+init=cold", f"data.path={data}", f"out_dir={out}",
                        "data.max_tokens=64", "train.global_batch=4", "train.micro_batch=2", "train.save_every=2",
                        "train.valid_every=0", "train.max_steps=6", "logger=jsonl", "train.progress=false",
                        "train.device=cpu"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-3000:]
    err = [line for line in p.stderr.splitlines() if "error" in line.lower()]
    assert err == [f"twist-train: error: cannot write {out / 'checkpoints' / 'last'}: No space left on device; "
                   "the previous checkpoint there is intact; free space and rerun the same command to resume"], p.stderr
    assert "Traceback" not in p.stderr and "unexpected pos" not in p.stderr
    assert load_checkpoint(out / "checkpoints" / "last")["state"]["step"] == 2  # the one before the full disk
    assert sorted(q.name for q in (out / "checkpoints").iterdir()) == ["last"]  # no half-written leftovers


@pytest.mark.parametrize("fmt", ["full", "sharded"])
def test_failed_save_keeps_previous_checkpoint(fmt, make_cfg, make_units, unit_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = Trainer(make_cfg(unit_data, out, max_steps=3, valid_every=0, save_every=3, checkpoint_format=fmt))
    trainer.fit()
    before = load_checkpoint(out / "checkpoints" / "last")
    trainer.train_step()

    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(b"\x80\x02partial")  # a torn write, then the disk is full
        else:  # sharded writes serialise small objects into a buffer first
            f.write(b"\x80\x02partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError, match="No space") as err:  # one line for the user, either format
        trainer.save(("last",))
    assert str(out / "checkpoints") in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(torch, "save", real_save)
    after = load_checkpoint(out / "checkpoints" / "last")
    assert after["state"]["step"] == before["state"]["step"] == 3
    if fmt == "full":
        assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "last"]  # no half-written leftovers
    # and the run resumes from it
    t2 = Trainer(make_cfg(unit_data, out, max_steps=4, valid_every=0, save_every=0, checkpoint_format=fmt))
    assert t2.state.step == 3


# ---------------------------------------------------------------------------------------
# bad input: one clear line, exit code 2 (the CLI body, in process)
# ---------------------------------------------------------------------------------------
def _cli_error(cfg: dict, capsys) -> str:
    from twist.cli.train import main

    capsys.readouterr()  # drop earlier output
    with pytest.raises(SystemExit) as e:
        main.run(OmegaConf.create(cfg))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("twist-train: error:") and "Traceback" not in err
    return err


def test_empty_dataset_message(make_cfg, make_units, tmp_path, contract, capsys):
    from twist.units import UnitShardWriter, merge_shards

    UnitShardWriter(tmp_path / "empty", contract).close()
    merge_shards(tmp_path / "empty")
    err = _cli_error(make_cfg(tmp_path / "empty", tmp_path / "out"), capsys)
    assert "empty" in err and str(tmp_path / "empty") in err
    # a dataset whose train split at this fraction is empty
    small = make_units(tmp_path / "small", contract, n=3)
    cfg = make_cfg(small, tmp_path / "out2")
    cfg["data"]["fraction"] = 0.001
    assert "no units" in _cli_error(cfg, capsys)


def test_contract_mismatch_message(make_cfg, make_units, unit_data, tmp_path, contract, capsys):
    import dataclasses

    other = dataclasses.replace(contract, n_units=30, kmeans_fingerprint="other-kmeans")
    other_data = make_units(tmp_path / "other", other)
    cfg = make_cfg(unit_data, tmp_path / "out")
    cfg["data"]["valid_paths"] = [str(other_data)]
    err = _cli_error(cfg, capsys)
    assert "mismatch" in err and str(other_data) in err and str(unit_data) in err
    # resuming a run on data from another tokenizer
    run = tmp_path / "run"
    Trainer(make_cfg(unit_data, run, max_steps=1, valid_every=0, save_every=1)).fit()
    err = _cli_error(make_cfg(other_data, run, max_steps=2), capsys)
    assert "mismatch" in err and "n_units" in err and "checkpoint" in err


def test_unit_id_out_of_range_message(make_cfg, make_units, tmp_path, contract, capsys):
    ds = make_units(tmp_path / "bad", contract, bad_id="utt0007", valid=0.0)
    err = _cli_error(make_cfg(ds, tmp_path / "out"), capsys)
    assert "utt0007" in err and "unit id 20 is outside [0, 20)" in err


def test_model_and_init_choices(capsys):
    """A run must name its text LM and its start; an unknown choice lists the files."""
    from twist.cli.common import check_command_line
    from twist.train.config import TrainRunConfig

    def error(*argv: str) -> str:
        with pytest.raises(SystemExit) as e:
            check_command_line("twist-train", "train", TrainRunConfig, list(argv))
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        return err

    err = error("+init=cold", "data.path=/x", "out_dir=/y")
    assert "+model=" in err and "opt-350m" in err and "tiny" in err
    err = error("+model=tiny", "data.path=/x", "out_dir=/y")
    assert "+init=" in err and "warm" in err and "cold" in err
    assert "out_dir" in error("+model=tiny", "+init=cold", "data.path=/x")
    err = error("+model=opt-9b", "+init=warm", "data.path=/x", "out_dir=/y")
    assert "unknown model 'opt-9b'" in err and "opt-350m" in err
    check_command_line("twist-train", "train", TrainRunConfig, ["+model=tiny", "+init=cold", "data.path=/x", "out_dir=/y"])


def test_cli_end_to_end(unit_data, tmp_path):
    """The design card's command shape, on the tiny model, as a subprocess."""
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "twist.cli.train", "+model=tiny", "+init=warm", f"data.path={unit_data}",
           f"out_dir={out}", "data.max_tokens=64", "train.global_batch=4", "train.micro_batch=2",
           "train.max_steps=3", "train.valid_every=3", "logger=jsonl", "train.progress=false"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "speech_lm" / "model.safetensors").exists() and (out / "config.yaml").exists()
    assert OmegaConf.load(out / "config.yaml").model.name == "tiny"
    assert not (tmp_path / "outputs").exists()


def test_stops_by_tokens_and_by_time(make_cfg, make_units, unit_data, tmp_path):
    r = Trainer(make_cfg(unit_data, tmp_path / "tok", max_steps=None, max_train_tokens=500, valid_every=0,
                         save_every=0)).fit()
    assert r.stop_reason == "max_train_tokens" and r.tokens >= 500
    steps = [rec for rec in read_metrics(tmp_path / "tok") if "loss" in rec]
    assert steps[-2]["tokens"] < 500 <= steps[-1]["tokens"]  # stopped at the first step past the budget
    r = Trainer(make_cfg(unit_data, tmp_path / "time", max_steps=None, max_time="00:00:00.000001",
                         valid_every=0, save_every=0)).fit()
    assert r.stop_reason == "max_time" and (tmp_path / "time" / "speech_lm").is_dir()


@pytest.mark.parametrize("family,packing", [("bloom", "packed"),  # through document ALiBi
                                            ("imagegpt", "padded")])
def test_families_without_the_attention_registry_train(family, packing, make_cfg, unit_data, tmp_path):
    cfg = make_cfg(unit_data, tmp_path / family, max_steps=3, valid_every=3, save_every=0)
    cfg.model = ModelConfig(**tiny_node(family))
    trainer = Trainer(cfg)
    assert trainer.objective.packing == packing
    result = trainer.fit()
    assert result.step == 3 and math.isfinite(result.best_value)
    if family == "imagegpt":  # it flattens any mask to 2D: a document mask cannot reach its attention
        cfg["data"]["packing"] = "packed"
        cfg["out_dir"] = str(tmp_path / "forced")
        with pytest.raises(ValueError, match="data.packing=packed is not supported"):
            Trainer(cfg)


def test_resumed_warm_run_exports_its_warm_provenance(make_cfg, unit_data, tmp_path):
    """A resume rebuilds the architecture without the text LM; the export must still say warm."""
    cfg = make_cfg(unit_data, tmp_path / "run", max_steps=2, valid_every=0, save_every=0)
    cfg.init.merge_with({"name": "warm", "embed_init": "mean"})
    Trainer(cfg).fit()
    cfg["train"]["max_steps"] = 3
    assert Trainer(cfg).fit().step == 3  # resumed
    meta = json.loads((tmp_path / "run" / "speech_lm" / "config.json").read_text())["twist"]
    assert meta["init"] == "warm" and meta["embed_init"] == "mean"


@pytest.mark.slow
def test_gpu_recipe_switches_run_on_cpu(make_cfg, unit_data, tmp_path):
    """bf16 autocast, fused AdamW and torch.compile (the GPU recipe's switches) on CPU: they take
    effect, train like the fp32 eager run within bf16 rounding, and keep checkpoint names, so a
    compiled run's checkpoint resumes in an eager run."""
    common = {"max_steps": 4, "valid_every": 2, "save_every": 2}
    Trainer(make_cfg(unit_data, tmp_path / "eager", **common)).fit()
    cfg = make_cfg(unit_data, tmp_path / "fast", compile=True, precision="bf16", **common)
    cfg["optim"]["fused"] = True
    trainer = Trainer(cfg)
    assert trainer.objective.forward_loss.autocast == torch.bfloat16
    assert all(g["fused"] for g in trainer.optimizer.param_groups)
    assert trainer.objective.forward_loss.compile  # forward + loss compiled together
    trainer.fit()
    a, b = _losses(tmp_path / "eager"), _losses(tmp_path / "fast")
    assert a.keys() == b.keys()
    assert a != b  # bf16 rounding shows: autocast was on
    for s in a:
        assert b[s] == pytest.approx(a[s], abs=0.02), s
    eager_keys = load_checkpoint(tmp_path / "eager" / "checkpoints" / "last")["model"].keys()
    assert load_checkpoint(tmp_path / "fast" / "checkpoints" / "last")["model"].keys() == eager_keys
    cfg = make_cfg(unit_data, tmp_path / "fast", max_steps=5, valid_every=0, save_every=0)  # eager fp32 resume
    assert Trainer(cfg).fit().step == 5


SIGNAL_SCRIPT = """
import json, sys
from twist.train.trainer import Trainer
result = Trainer(json.loads(open(sys.argv[1]).read())).fit()
print("STOP", result.stop_reason, result.step, result.export_dir)
"""


def test_sigterm_saves_and_the_rerun_continues_exactly(make_cfg, unit_data, tmp_path):
    """Pre-emption: SIGTERM mid-run finishes the step, saves `last` and exits 0; running the
    same command again continues bit-identically to a run that was never stopped."""
    import signal
    import time

    common = {"valid_every": 0, "save_every": 0, "num_threads": 1}
    run = tmp_path / "run"
    (tmp_path / "cfg.json").write_text(json.dumps(make_cfg(unit_data, run, max_steps=100_000, **common), default=OmegaConf.to_container))
    (tmp_path / "train.py").write_text(SIGNAL_SCRIPT)
    p = subprocess.Popen([sys.executable, str(tmp_path / "train.py"), str(tmp_path / "cfg.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len(_losses(run)) >= 3):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    stopped = int(out.split("STOP signal SIGTERM ")[1].split()[0])
    assert read_checkpoint_meta(run / "checkpoints" / "last")["step"] == stopped >= 3
    assert "None" in out.split("STOP")[1]  # no export: the run is not finished
    assert any(r.get("event") == "stopped" for r in read_metrics(run))

    total = stopped + 3
    Trainer(make_cfg(unit_data, run, max_steps=total, **common)).fit()  # the same run, resumed
    ref = tmp_path / "ref"
    Trainer(make_cfg(unit_data, ref, max_steps=total, **common)).fit()
    a, b = _losses(ref), _losses(run)
    assert sorted(b) == list(range(1, total + 1))
    assert [a[s] for s in a] == [b[s] for s in a]  # bit-identical floats
    assert (run / "speech_lm").is_dir()


def test_unknown_stop_signal_is_named(make_cfg, unit_data, tmp_path):
    with pytest.raises(ValueError, match=r"train.stop_signals: unknown signal\(s\) \['SIGNOPE'\]"):
        Trainer(make_cfg(unit_data, tmp_path / "run", max_steps=1, stop_signals=["SIGNOPE"])).fit()


def test_sharded_checkpoints_resume_exactly_and_export(make_cfg, unit_data, tmp_path):
    """checkpoint_format=sharded (torch.distributed.checkpoint files): a run stopped at step 2
    and resumed matches an uninterrupted run bit for bit, and exports the same speech LM."""
    from twist.checkpoint import shards_dir
    from twist.lm import load_speech_lm

    common = {"valid_every": 2, "save_every": 2}
    ref, run = tmp_path / "ref", tmp_path / "run"
    Trainer(make_cfg(unit_data, ref, max_steps=4, **common)).fit()
    Trainer(make_cfg(unit_data, run, max_steps=2, checkpoint_format="sharded", **common)).fit()
    for name in ("last", "best"):
        assert shards_dir(run / "checkpoints" / name) is not None
        assert "model" not in load_checkpoint(run / "checkpoints" / name)  # weights live in the shards
    assert read_checkpoint_meta(run / "checkpoints" / "last")["format"] == "sharded"
    Trainer(make_cfg(unit_data, run, max_steps=4, checkpoint_format="sharded", **common)).fit()
    assert _losses(ref) == _losses(run) and _valid(ref) == _valid(run)  # bit-identical floats
    (a, _), (b, _) = load_speech_lm(ref / "speech_lm"), load_speech_lm(run / "speech_lm")
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    with pytest.raises(ValueError, match="train.checkpoint_format: 'zip' is not one of full, sharded"):
        Trainer(make_cfg(unit_data, tmp_path / "x", max_steps=1, checkpoint_format="zip"))


def test_activation_checkpointing_changes_memory_not_the_run(make_cfg, unit_data, tmp_path):
    common = {"max_steps": 3, "valid_every": 3, "save_every": 0}
    Trainer(make_cfg(unit_data, tmp_path / "plain", **common)).fit()
    trainer = Trainer(make_cfg(unit_data, tmp_path / "ckpt", activation_checkpointing=True, **common))
    assert trainer.model.is_gradient_checkpointing
    trainer.fit()
    a, b = _losses(tmp_path / "plain"), _losses(tmp_path / "ckpt")
    assert a.keys() == b.keys()
    for s in a:
        assert b[s] == pytest.approx(a[s], abs=1e-6), s


def test_nonfinite_gradient_skips_the_update_then_stops(make_cfg, unit_data, tmp_path):
    """A NaN gradient leaves the weights untouched and the run goes on; more than
    train.skip_nonfinite such steps in a row stop it with an error naming the step."""
    trainer = Trainer(make_cfg(unit_data, tmp_path / "run", max_steps=10, valid_every=0, save_every=0,
                               skip_nonfinite=1))
    real, poison = trainer.objective.forward_loss, {2}

    def loss_sum(batch):
        ls = real(batch)
        return ls * float("nan") if trainer.state.step + 1 in poison else ls

    trainer.objective.forward_loss = loss_sum
    trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    m = trainer.train_step()  # step 2: NaN
    assert math.isnan(m["grad_norm"]) and trainer.state.step == 2 and trainer.state.skipped_steps == 1
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    m = trainer.train_step()  # step 3: finite again, training goes on
    assert math.isfinite(m["loss"]) and not torch.equal(trainer.model.state_dict()[k := next(iter(before))], before[k])
    poison.update({4, 5})
    trainer.train_step()  # one in a row: skipped
    with pytest.raises(FloatingPointError, match=r"step 5: gradient norm is nan for 2 step\(s\) in a row"):
        trainer.train_step()
