"""What a resumed or unvalidated run tells the user, and what it leaves in its logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.kill_resume import run_kill_script, write_kill_script
from twist.errors import ConfigError
from twist.train.trainer import Trainer


def _tb_loss_steps(run: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), purge_orphaned_data=True)
    acc.Reload()
    return [e.step for e in acc.Scalars("loss")]


def test_tensorboard_holds_each_step_once_after_a_resume(make_cfg, unit_data, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    cfg = make_cfg(unit_data, run, max_steps=7, valid_every=0, save_every=3)
    cfg["logger"]["tensorboard"] = True
    script = write_kill_script(tmp_path / "train_kill.py", cfg, close_logger=True)
    p = run_kill_script(script, kill_at=5)
    assert p.returncode == -9, p.stderr[-2000:]
    assert _tb_loss_steps(run) == [1, 2, 3, 4, 5]  # steps 4-5 are past the checkpoint at 3
    p = run_kill_script(script)
    assert p.returncode == 0, p.stderr[-2000:]
    assert _tb_loss_steps(run) == [1, 2, 3, 4, 5, 6, 7]


def test_resuming_with_a_changed_model_shape_is_refused_naming_the_field(make_cfg, unit_data, tmp_path):
    run = tmp_path / "run"
    Trainer(make_cfg(unit_data, run, max_steps=3, valid_every=0, save_every=3)).fit()
    cfg = make_cfg(unit_data, run, max_steps=6, valid_every=0, save_every=3)
    cfg["model"]["config"] = {**cfg["model"]["config"], "ffn_dim": 48}
    with pytest.raises(ConfigError) as e:
        Trainer(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "ffn_dim" in msg and "64" in msg and "48" in msg and str(run) in msg


def test_cli_reports_the_resume_and_a_run_without_validation_and_keeps_a_log(make_units, contract, tmp_path):
    data = make_units(tmp_path / "units", contract, valid=0.0)  # no valid split: nothing to select on
    out = tmp_path / "cli"
    base = [sys.executable, "-m", "twist.cli.train", "+model=tiny", "+init=cold", f"data.path={data}",
            f"out_dir={out}", "data.max_tokens=64", "train.global_batch=4", "train.micro_batch=2",
            "train.save_every=2", "logger=jsonl", "train.progress=false"]
    first = subprocess.run([*base, "train.max_steps=2"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "PPL inf" not in first.stdout and "step -1" not in first.stdout
    assert "no validation" in first.stdout
    second = subprocess.run([*base, "train.max_steps=4"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    resume = [line for line in second.stdout.splitlines() if "resuming from step 2" in line]
    assert resume and str(out / "checkpoints" / "last") in resume[0]
    log = (out / "train.log").read_text()
    assert "resuming from step 2" in log and "max_steps at step 4" in log


@pytest.mark.parametrize("value", [0, -5])
def test_max_steps_of_zero_or_less_is_refused_naming_the_setting(make_cfg, unit_data, tmp_path, value):
    with pytest.raises(ConfigError, match=rf"^train\.max_steps: must be > 0, got {value}$"):
        make_cfg(unit_data, tmp_path / "run", max_steps=value)


def test_a_resume_whose_max_steps_is_below_the_checkpoints_step_says_so_in_one_line(make_cfg, unit_data, tmp_path):
    run = tmp_path / "run"
    Trainer(make_cfg(unit_data, run, max_steps=4, valid_every=0, save_every=2)).fit()
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError) as e:
        Trainer(make_cfg(unit_data, run, max_steps=3, valid_every=0, save_every=2))
    msg = str(e.value)
    assert "\n" not in msg and "train.max_steps=3" in msg and "step 4" in msg and str(run / "checkpoints" / "last") in msg
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing touched
    assert Trainer(make_cfg(unit_data, run, max_steps=4, valid_every=0, save_every=2)).state.step == 4  # equal is fine
