"""The demo's step cache: skip what is done, rebuild what changed, name a failed step."""

import sys

import pytest

from twist.demo.steps import Step, StepFailed, read_stamp, run_steps


def _steps(tmp_path, calls, text="a"):
    def make():
        calls.append("make")
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "a" / "out.txt").write_text(text)

    return [
        Step("make", tmp_path / "a", fn=make, config={"text": text}),
        Step(
            "copy",
            tmp_path / "b",
            argv=[sys.executable, "-c", f"import shutil,os; os.makedirs({str(tmp_path / 'b')!r}, exist_ok=True); "
                  f"shutil.copy({str(tmp_path / 'a' / 'out.txt')!r}, {str(tmp_path / 'b' / 'out.txt')!r})"],
            depends=["make"],
        ),
    ]  # fmt: skip


def test_second_run_is_cached_and_a_config_change_rebuilds_dependents(tmp_path):
    calls = []
    recs = run_steps(_steps(tmp_path, calls), echo=lambda s: None)
    assert [r["status"] for r in recs] == ["ran", "ran"] and calls == ["make"]
    recs = run_steps(_steps(tmp_path, calls), echo=lambda s: None)
    assert [r["status"] for r in recs] == ["cached", "cached"] and calls == ["make"]
    (tmp_path / "a" / "stray.txt").write_text("from the old settings")
    recs = run_steps(_steps(tmp_path, calls, text="b"), echo=lambda s: None)
    assert [r["status"] for r in recs] == ["ran", "ran"]  # the dependent is rebuilt too
    assert (tmp_path / "b" / "out.txt").read_text() == "b"
    assert not (tmp_path / "a" / "stray.txt").exists()  # a changed step starts clean


def test_only_and_force(tmp_path):
    calls = []
    run_steps(_steps(tmp_path, calls), echo=lambda s: None)
    recs = run_steps(_steps(tmp_path, calls), only=["copy"], force=["copy"], echo=lambda s: None)
    assert [r["status"] for r in recs] == ["skipped", "ran"] and calls == ["make"]
    with pytest.raises(ValueError, match="unknown demo step 'nope'.*make"):
        run_steps(_steps(tmp_path, calls), only=["nope"], echo=lambda s: None)


def test_failure_names_the_step_and_the_rerun_command(tmp_path):
    steps = [Step("boom", tmp_path / "x", argv=[sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"])]
    with pytest.raises(StepFailed) as e:
        run_steps(steps, log_dir=tmp_path / "logs", echo=lambda s: None)
    msg = str(e.value)
    assert "step 'boom' failed" in msg and "exit code 3" in msg and "bad input" in msg
    assert "rerun it alone with" in msg and sys.executable in msg
    assert read_stamp(tmp_path / "x")["status"] == "running"  # not marked done
    assert "bad input" in (tmp_path / "logs" / "boom.log").read_text()


def test_interrupted_step_with_same_settings_resumes_in_place(tmp_path):
    def crash():
        (tmp_path / "w" / "part1").write_text("x")  # what the interrupted run had finished
        raise RuntimeError("killed")

    def finish():
        (tmp_path / "w" / "part2").write_text("y")

    with pytest.raises(StepFailed, match="killed"):
        run_steps([Step("work", tmp_path / "w", fn=crash)], echo=lambda s: None)
    run_steps([Step("work", tmp_path / "w", fn=finish)], echo=lambda s: None)  # same name, same key
    assert (tmp_path / "w" / "part1").exists() and (tmp_path / "w" / "part2").exists()
    assert read_stamp(tmp_path / "w")["status"] == "done"


def test_demo_cli_force_rebuilds_an_early_step_once(tmp_path, monkeypatch):
    """`twist-demo force=tokenize` rebuilds tokenize once, not once per pass of the CLI."""
    import twist.demo.pipeline as pipeline
    from twist.cli import demo as demo_cli

    calls = []

    def fake_steps(cfg):
        def fn(name):
            return lambda: calls.append(name)

        return [Step(n, tmp_path / n, fn=fn(n), config={"n": n}) for n in ("corpus", "tokenize", "train_warm")]

    monkeypatch.setattr(pipeline, "build_steps", fake_steps)
    monkeypatch.setattr(pipeline, "summarize", lambda out: "")
    for argv in ([], ["force=tokenize"]):
        monkeypatch.setattr(sys, "argv", ["twist-demo", f"out_dir={tmp_path}", *argv])
        demo_cli.main()
    assert calls == ["corpus", "tokenize", "train_warm", "tokenize"]
