"""What the demo reads off its runs: Fig. 2b's step count, mean ± sd over seeds, heard words, seeds wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from twist.contract import UnitContract
from twist.demo.analysis import (
    describe_warm_vs_cold,
    seed_table,
    steps_to_reach,
    warm_vs_cold,
    write_train_text,
    write_warm_vs_cold,
)
from twist.errors import ConfigError


def _curve(run: Path, points: dict[int, float]) -> Path:
    run.mkdir(parents=True)
    recs = [{"step": s, "train_loss": 1.0} for s in points] + [{"step": s, "valid_ppl": v} for s, v in points.items()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return run


def test_steps_to_reach():
    assert steps_to_reach([20, 40, 60], [30.0, 20.0, 15.0], 20.0) == 40  # at or below counts
    assert steps_to_reach([20, 40, 60], [30.0, 20.0, 15.0], 14.9) is None


def test_warm_reaches_each_cold_runs_final_ppl_or_never(tmp_path):
    warm = _curve(tmp_path / "warm", {20: 40.0, 40: 25.0, 60: 19.0, 80: 18.0})
    cold = _curve(tmp_path / "cold", {20: 60.0, 40: 40.0, 60: 30.0, 80: 24.0})
    cold_lr = _curve(tmp_path / "cold_lr", {20: 45.0, 40: 22.0, 60: 18.5, 80: 17.5})
    rows = {r["run"]: r for r in warm_vs_cold(warm, {"cold": cold, "cold_lr": cold_lr})}
    assert rows["cold"]["warm_reaches_at"] == 60 and rows["cold"]["cold_final_ppl"] == 24.0
    assert rows["cold_lr"]["warm_reaches_at"] is None
    assert "at step 60, 75% of the steps" in describe_warm_vs_cold(rows["cold"])
    assert "never reaches cold_lr's final valid PPL 17.50" in describe_warm_vs_cold(rows["cold_lr"])
    text = write_warm_vs_cold(tmp_path / "out", {0: (warm, {"cold": cold})}, {"cold": "cold: random", "warm": "W"})
    assert text.startswith("seed 0: W reaches cold: random's final valid PPL 24.00")
    assert json.loads((tmp_path / "out" / "warm_vs_cold.json").read_text())["rows"][0]["seed"] == 0


def test_seed_table_mean_and_sample_sd(tmp_path):
    def result(d: Path, ppl: float, blimp: float) -> Path:
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"metrics": {"PPL": ppl, "sBLIMP (test)": blimp}}))
        return d

    runs = {"warm": [result(tmp_path / f"w{i}", p, b) for i, (p, b) in enumerate([(10, 0.5), (12, 0.6), (14, 0.7)])],
            "cold": [result(tmp_path / "c0", 20.0, 0.55)]}  # fmt: skip
    md, data = seed_table(runs)
    warm = data["rows"][0]
    assert warm["PPL"]["mean"] == pytest.approx(12.0) and warm["PPL"]["sd"] == pytest.approx(2.0)
    assert warm["sBLIMP (test)"]["sd"] == pytest.approx(0.1) and warm["seeds"] == 3
    assert data["rows"][1]["PPL"]["sd"] is None  # one seed: no spread to report
    assert "| warm | 3 | 12.00 ± 2.00 | 60.0 ± 10.0 |" in md and "| cold | 1 | 20.00 | 55.0 |" in md


def test_train_text_is_the_training_splits_transcripts(tmp_path):
    from twist.units import UnitDataset, UnitShardWriter, merge_shards

    audio = tmp_path / "corpus" / "audio"
    audio.mkdir(parents=True)
    rows, contract = [], UnitContract("logmel", "x", None, 50.0, 10, "y")
    with UnitShardWriter(tmp_path / "units", contract) as w:
        for i in range(40):
            rel = f"audio/v/v-s{i:03d}.wav"
            (tmp_path / "corpus" / rel).parent.mkdir(parents=True, exist_ok=True)
            rows.append({"id": f"v-s{i:03d}", "path": rel, "text": f"sentence number {i}"})
            w.add(f"v/v-s{i:03d}", np.arange(5), source=str(tmp_path / "corpus" / rel))
    merge_shards(tmp_path / "units", split={"valid": 0.2, "test": 0.2})
    (tmp_path / "corpus" / "transcripts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    n = write_train_text(tmp_path / "units", tmp_path / "corpus" / "transcripts.jsonl", tmp_path / "train.txt")
    train_ids = UnitDataset(tmp_path / "units").split("train").ids
    assert 0 < n == len(train_ids) < 40
    want = sorted(f"sentence number {int(i.split('-s')[1])}" for i in train_ids)
    assert sorted((tmp_path / "train.txt").read_text().splitlines()) == want


def _demo_cfg(tmp_path: Path, *overrides: str):
    """The demo's config from its schema, with command-line style overrides."""
    from twist.demo.config import DemoConfig
    from twist.schema import to_typed

    return to_typed(DemoConfig, OmegaConf.from_dotlist([f"out_dir={tmp_path / 'demo'}", *overrides]))


def test_seeds_repeat_every_training_run_with_its_own_seed(tmp_path):
    from twist.demo.pipeline import build_steps

    one = {s.name: s for s in build_steps(_demo_cfg(tmp_path))}
    assert "seeds" not in one and "train_warm_seed1" not in one and "warm_vs_cold" in one
    assert "seed=0" in one["train_cold"].argv and "tokenizer=whisper-tiny-50hz-100" in one["tokenize"].argv
    three = {s.name: s for s in build_steps(_demo_cfg(tmp_path, "seeds=3"))}
    for run in ("warm", "cold", "cold_lr"):
        for k in (1, 2):
            assert f"seed={k}" in three[f"train_{run}_seed{k}"].argv
            assert f"train_{run}_seed{k}" in three[f"eval_{run}_seed{k}"].depends
    assert set(three["seeds"].depends) == {f"eval_{r}{s}" for r in ("warm", "cold", "cold_lr")
                                           for s in ("", "_seed1", "_seed2")}  # fmt: skip
    # seed 0 keeps its names and settings, so a 1-seed demo's outputs are reused by a 3-seed one
    assert three["train_warm"].argv == one["train_warm"].argv
    with pytest.raises(ConfigError, match="seeds: must be > 0, got 0"):
        _demo_cfg(tmp_path, "seeds=0")  # refused by the schema, before any step is built
