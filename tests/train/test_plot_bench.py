"""twist-plot draws valid PPL curves; the throughput benchmark runs small on CPU and prints a ratio."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _fake_run(d: Path, ppls: list[float], model: str, init: str) -> Path:
    d.mkdir(parents=True)
    recs = [{"step": 10 * (i + 1), "loss": 1.0} for i in range(len(ppls))]
    recs += [{"step": 10 * (i + 1), "valid_ppl": p} for i, p in enumerate(ppls)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 99, "torn')
    (d / "config.yaml").write_text(f"model:\n  name: {model}\ninit:\n  name: {init}\ndata:\n  fraction: 1.0\n")
    return d


def test_plot_runs_png(tmp_path, capsys):
    from omegaconf import OmegaConf

    from twist.cli.plot import main
    from twist.train.plot import run_curve, run_label

    a = _fake_run(tmp_path / "a", [30.0, 20.0, 15.0], "opt-350m", "warm")
    b = _fake_run(tmp_path / "b", [40.0, 35.0, 30.0], "opt-350m", "cold")
    assert run_curve(a) == ([10, 20, 30], [30.0, 20.0, 15.0])  # the torn last line is skipped
    assert run_label(b) == "opt-350m cold"
    out = tmp_path / "fig" / "ppl.png"
    main.run(OmegaConf.create({"runs": [str(a), str(b)], "out": str(out), "metric": "valid_ppl", "labels": None,
                          "title": None, "log_y": True}))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert "wrote" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    with pytest.raises(SystemExit) as e:
        main.run(OmegaConf.create({"runs": [str(empty)], "out": str(tmp_path / "x.png"), "metric": "valid_ppl"}))
    assert e.value.code == 2 and "no 'valid_ppl' records" in capsys.readouterr().err


def test_benchmark_runs_small_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--device", "cpu", "--steps", "1", "--warmup", "0", "--utterances", "30", "--batch", "2",
                    "--max-tokens", "64"])
    out = capsys.readouterr().out
    assert set(res) == {"utterance", "chunked"}  # both length distributions, each with its ratio
    for name, r in res.items():
        block = out.split(f"[{name}]")[1]
        assert re.search(r"plain HF loop .* tokens/s .*peak memory", block)
        assert re.search(r"twist trainer .* tokens/s .*peak memory", block)
        m = re.search(r"ratio twist / plain: ([0-9.]+)x", block)
        assert m and float(m.group(1)) == pytest.approx(r["ratio"], abs=0.01) and r["ratio"] > 0
