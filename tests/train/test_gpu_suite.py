"""benchmarks/gpu_suite.py --cpu-smoke: every section of the GPU suite runs at toy size on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_suite_cpu_smoke_runs_every_section(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--cpu-smoke", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_suite.json").read_text())
    sections = res["sections"]
    assert set(sections) == {"env", "correctness", "train", "tokenize", "score", "vocoder", "compile"}
    for name, sec in sections.items():
        assert "error" not in sec and "skipped" not in sec, (name, sec.get("error"), sec.get("traceback"))
    assert sections["correctness"]["equivalence_pass"]
    assert sections["compile"]["recompiles_after_warmup"] == 0
    assert not sections["compile"]["graph_breaks"], sections["compile"]["graph_breaks"]
    runs = sections["train"]["runs"]
    assert {r["distribution"] for r in runs} == {"utterance", "chunked"}
    assert all(r["ratio"] > 0 and r["twist_tokens_per_s"] > 0 for r in runs)
    assert sections["tokenize"]["files_with_identical_units"] == "4/4"
    assert sections["score"]["packed_max_abs_diff_vs_bucketed"] < 1e-3  # the same scores, packed or not
    md = (tmp_path / "gpu_suite.md").read_text()
    for heading in ("Training throughput", "Tokenization", "Scoring", "Vocoder", "Correctness", "Compiled step"):
        assert heading in md
    # a section can be chosen alone, and an unknown one is refused
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--cpu-smoke", "--sections",
                        "nope"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert p.returncode == 2 and "unknown section" in p.stderr


def test_a_failing_section_is_recorded_and_the_suite_goes_on(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    suite = mod.Suite(tmp_path, budget_s=100.0, mode="smoke")

    def broken(s):
        raise RuntimeError("CUDA out of memory (simulated)")

    suite.run("train", broken, 0)
    suite.run("vocoder", lambda s: {"batch_1": {"rtf": 0.5, "x_real_time": 2.0, "audio_seconds": 1.0}}, 0)
    suite.run("score", lambda s: {}, 1e9)  # not enough time left: skipped, not started
    res = json.loads((tmp_path / "gpu_suite.json").read_text())["sections"]
    assert "simulated" in res["train"]["error"] and "RuntimeError" in res["train"]["traceback"]
    assert res["vocoder"]["batch_1"]["rtf"] == 0.5
    assert "time budget" in res["score"]["skipped"]
    md = (tmp_path / "gpu_suite.md").read_text()
    assert "train: RuntimeError: CUDA out of memory" in md and "score: time budget" in md
    # the failure (not the skip) sets the exit status
    assert mod.failed_sections(json.loads((tmp_path / "gpu_suite.json").read_text())) == ["train"]
