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
from twist.eval.stats import wilson_interval


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


def test_dpo_is_opt_in_and_only_adds_steps(tmp_path):
    """dpo=true keeps every default step as it is (so it reuses a default run's outputs) and adds
    pairs -> DPO from warm -> eval like the others -> the before/after report."""
    from twist.demo.pipeline import build_steps

    out = tmp_path / "demo"
    default = {s.name: s for s in build_steps(_demo_cfg(tmp_path))}
    steps = build_steps(_demo_cfg(tmp_path, "dpo=true"))
    named = {s.name: s for s in steps}
    added = [s.name for s in steps if s.name not in default]
    assert not {"prefs", "train_dpo", "eval_dpo", "eval_warm_prefs", "dpo"} & set(default)
    assert added == ["prefs", "train_dpo", "eval_dpo", "eval_warm_prefs", "dpo"]
    for name, s in default.items():  # same commands, configs and inputs: the same cache keys
        assert (named[name].argv, named[name].config, list(named[name].depends)) == (s.argv, s.config, list(s.depends))

    prefs = named["prefs"].argv
    assert {"task=prefs", f"out_dir={out / 'prefs'}", f"tokenizer_dir={out / 'units' / 'tokenizer'}",
            "prefs.builtin_pairs=600", "prefs.valid=0.2"} <= set(prefs)
    train = named["train_dpo"].argv
    assert {"+objective=dpo", f"dpo.policy={out / 'train' / 'warm' / 'speech_lm'}",
            f"data.path={out / 'prefs' / 'prefs'}", f"out_dir={out / 'train' / 'dpo'}", "logger=jsonl",
            "train.max_steps=60", "train.valid_every=0", "schedule.warmup_steps=5", "seed=0"} <= set(train)
    assert not [a for a in train if a.startswith(("+model", "+init"))]  # the policy dir is the model
    assert set(named["train_dpo"].depends) == {"train_warm", "prefs"}
    # the DPO model is evaluated exactly as the others, plus its preference on the held-out pairs
    swap = {f"model_path={out / 'train' / 'warm' / 'speech_lm'}": f"model_path={out / 'train' / 'dpo' / 'speech_lm'}",
            "model_name=warm": "model_name=dpo", f"out_dir={out / 'eval' / 'warm'}": f"out_dir={out / 'eval' / 'dpo'}"}
    pairs_arg = f"benchmarks.prefs.path={out / 'prefs' / 'prefs'}"
    assert [a for a in named["eval_dpo"].argv if a != pairs_arg] == [swap.get(a, a) for a in default["eval_warm"].argv]
    assert pairs_arg in named["eval_dpo"].argv and pairs_arg in named["eval_warm_prefs"].argv
    assert f"model_path={out / 'train' / 'warm' / 'speech_lm'}" in named["eval_warm_prefs"].argv
    assert set(named["dpo"].depends) == {"eval_warm", "eval_warm_prefs", "eval_dpo", "train_text"}
    # the DPO stage's overrides are checked against twist-train's schema like every other stage's
    with pytest.raises(ConfigError, match="dpo_train.*max_stepz"):
        _demo_cfg(tmp_path, "dpo=true", "dpo_train.train.max_stepz=3")


def test_interleave_is_opt_in_and_only_adds_steps(tmp_path):
    """interleave=true keeps every default step as it is and adds aligned units -> the text stream ->
    a warm text+units run with the warm run's budget -> eval like the others -> the comparison."""
    from twist.demo.pipeline import build_steps

    out = tmp_path / "demo"
    default = {s.name: s for s in build_steps(_demo_cfg(tmp_path))}
    steps = build_steps(_demo_cfg(tmp_path, "interleave=true"))
    named = {s.name: s for s in steps}
    added = [s.name for s in steps if s.name not in default]
    assert added == ["tokenize_aligned", "interleave_text", "train_interleaved", "eval_interleaved", "interleave"]
    for name, s in default.items():
        assert (named[name].argv, named[name].config, list(named[name].depends)) == (s.argv, s.config, list(s.depends))
    tok = named["tokenize_aligned"].argv
    assert {"mode=apply", "align=tts", f"tokenizer_dir={out / 'units' / 'tokenizer'}",
            f"out_dir={out / 'units_aligned'}"} <= set(tok)
    train = named["train_interleaved"].argv
    assert {"+init=warm_interleaved", f"data.path={out / 'units_aligned'}", "data.interleave.ratios.text=0.3",
            "data.interleave.ratios.interleaved=0.5", f"data.interleave.text=['{out / 'interleave_text' / 'text.txt'}']",
            "seed=0"} <= set(train)
    # the warm run's budget and model, only the init and the data differ
    same = {a for a in default["train_warm"].argv if not a.startswith(("+init", "data.path", "out_dir"))}
    assert same <= set(train)
    swap = {f"model_path={out / 'train' / 'warm' / 'speech_lm'}": f"model_path={out / 'train' / 'interleaved' / 'speech_lm'}",
            "model_name=warm": "model_name=interleaved",
            f"out_dir={out / 'eval' / 'warm'}": f"out_dir={out / 'eval' / 'interleaved'}"}
    assert named["eval_interleaved"].argv == [swap.get(a, a) for a in default["eval_warm"].argv]
    assert set(named["interleave"].depends) == {"eval_warm", "eval_interleaved"}
    with pytest.raises(ConfigError, match="interleave_train.*ratioz"):
        _demo_cfg(tmp_path, "interleave=true", "interleave_train.data.interleave.ratioz.text=1")


def test_the_text_stream_leaves_out_the_held_out_sentences(tmp_path, contract):
    from twist.bench.packaged_text import read_sentences
    from twist.demo.analysis import write_interleave_text
    from twist.units import UnitShardWriter, merge_shards

    sentences = read_sentences()[:30]
    rows = [{"id": f"s{i}", "path": f"audio/s{i}.wav", "text": s} for i, s in enumerate(sentences)]
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "transcripts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with UnitShardWriter(tmp_path / "units", contract) as w:
        for r in rows:
            w.add(f"v/{r['id']}", np.arange(5), raw=False, source=str(tmp_path / "corpus" / r["path"]))
    merge_shards(tmp_path / "units", split={"seed": 0, "valid": 0.2, "test": 0.2})
    from twist.units import UnitDataset

    held = {rows[int(r["id"].split("s")[-1])]["text"] for s in ("valid", "test")
            for r in UnitDataset(tmp_path / "units").split(s).rows}
    assert held
    n = write_interleave_text(tmp_path / "text.txt", tmp_path / "units", tmp_path / "corpus" / "transcripts.jsonl")
    lines = (tmp_path / "text.txt").read_text().splitlines()
    assert n == len(lines) == len(read_sentences()) - len(held) and not held & set(lines)


def test_interleave_report_puts_the_models_side_by_side_with_tests_mixture_and_time(tmp_path):
    from twist.demo.analysis import write_interleave_report
    from twist.demo.steps import STAMP

    warm = _eval_run(tmp_path / "eval" / "warm", {"PPL": 5.0, "sSC": 0.5}, {"sSC": {f"s{i}": float(i % 2) for i in range(40)}})
    inter = _eval_run(tmp_path / "eval" / "interleaved", {"PPL": 6.0, "sSC": 0.55, "sSC (T→S)": 0.6},
                      {"sSC": {f"s{i}": float(i % 2 or i < 8) for i in range(40)},
                       "sSC (T→S)": {f"s{i}": float(i < 24) for i in range(40)}})
    run = tmp_path / "train" / "interleaved"
    run.mkdir(parents=True)
    (run / "mixture.json").write_text(json.dumps({"epoch0_documents": {"text": 10, "interleaved": 20, "speech": 15}}))
    for d, s in ((run, 100.0), (inter, 50.0)):
        (d / STAMP).write_text(json.dumps({"key": "k", "status": "done", "seconds": s}))
    md = write_interleave_report(tmp_path / "report", warm=warm, interleaved=inter, run=run,
                                 step_dirs={"train_interleaved": run, "eval_interleaved": inter},
                                 labels=("warm", "interleaved"))
    data = json.loads((tmp_path / "report" / "interleave.json").read_text())
    rows = {r["model"]: r for r in data["table"]["rows"]}
    assert rows["interleaved"]["sSC (T→S)"] == 0.6 and rows["warm"].get("sSC (T→S)") is None
    tests = {t["metric"]: t for t in data["table"]["paired_tests"]}
    assert (tests["sSC"]["a_better"], tests["sSC"]["b_better"]) == (0, 4)
    assert data["mixture"] == "epoch 0 holds 10 text, 20 interleaved, 15 speech documents"
    assert "Time the interleaving steps took when built: 150 s" in md and "| interleaved |" in md


def _eval_run(run: Path, metrics: dict, items: dict) -> Path:
    from twist.eval.report import write_item_scores
    from twist.eval.stats import mean_with_interval

    run.mkdir(parents=True)
    ci = {m: mean_with_interval(list(items[m].values()))["ci95"] for m in items}
    (run / "results.json").write_text(json.dumps({"model_name": run.name, "metrics": metrics, "ci95": ci}))
    write_item_scores(run, "sum", items)
    return run


def test_dpo_report_compares_before_and_after_with_intervals_paired_tests_and_time(tmp_path, contract):
    from twist.demo.analysis import write_dpo_report
    from twist.demo.steps import STAMP
    from twist.pairs import PreferencePair, write_pair_dataset

    ssc_before = {f"s{i}": float(i % 2) for i in range(40)}
    ssc_after = {f"s{i}": 1.0 for i in range(40)}  # 20 stories won, none lost: p = 2 * 0.5^20
    prefs_before = {f"p{i}": float(i < 5) for i in range(10)}
    prefs_after = {f"p{i}": float(i < 6) for i in range(10)}
    warm = _eval_run(tmp_path / "eval" / "warm", {"PPL": 5.0, "sSC": 0.5}, {"sSC": ssc_before})
    warm_prefs = _eval_run(tmp_path / "eval" / "warm_prefs", {"prefs (valid)": 0.5}, {"prefs (valid)": prefs_before})
    dpo = _eval_run(tmp_path / "eval" / "dpo", {"PPL": 5.1, "sSC": 1.0, "prefs (valid)": 0.6},
                    {"sSC": ssc_after, "prefs (valid)": prefs_after})
    run = tmp_path / "train" / "dpo"
    run.mkdir(parents=True)
    recs = [{"step": 10, "loss": 0.69}, {"step": 10, "eval_loss": 0.6, "eval_rewards/accuracies": 0.7,
                                         "eval_rewards/margins": 0.25},
            {"step": 10, "event": "end", "best_step": 10, "best_eval_loss": 0.6}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    u = np.array([1, 2, 3])
    pairs = [PreferencePair(f"p{i}", "valid", "v", u, u, u, f"prompt {i}", "is here", "is not") for i in range(10)]
    pairs.append(PreferencePair("t0", "train", "v", u, u, u, "a", "b", "c"))
    write_pair_dataset(tmp_path / "pairs", pairs, contract, made_by={}, split={"seed": 0, "valid": 0.5})
    (tmp_path / "train.txt").write_text("Prompt 0 is here.\nprompt 3, is here!\nsomething else\n")
    for d, s in ((tmp_path / "pairs", 30.0), (run, 100.0), (dpo, 60.0), (warm_prefs, 10.0)):
        (d / STAMP).write_text(json.dumps({"key": "k", "status": "done", "seconds": s}))

    md = write_dpo_report(tmp_path / "report", before=[warm, warm_prefs], after=dpo, dpo_run=run,
                          pairs=tmp_path / "pairs", labels=("warm", "warm + DPO"), train_text=tmp_path / "train.txt",
                          step_dirs={"prefs": tmp_path / "pairs", "train_dpo": run, "eval_dpo": dpo,
                                     "eval_warm_prefs": warm_prefs})
    data = json.loads((tmp_path / "report" / "dpo.json").read_text())
    assert md == (tmp_path / "report" / "dpo.md").read_text()
    rows = {r["model"]: r for r in data["table"]["rows"]}
    assert rows["warm"]["prefs (valid)"] == 0.5 and rows["warm + DPO"]["prefs (valid)"] == 0.6  # merged before-row
    tests = {t["metric"]: t for t in data["table"]["paired_tests"]}
    assert (tests["sSC"]["a_better"], tests["sSC"]["b_better"]) == (0, 20)
    assert tests["sSC"]["p_value"] == pytest.approx(2 * 0.5**20)
    assert (tests["prefs (valid)"]["n"], tests["prefs (valid)"]["b_better"]) == (10, 1)
    assert "| warm + DPO |" in md and "A higher" in md
    ev = data["dpo_eval"]
    assert ev["n_pairs"] == 10 and ev["eval_rewards/accuracies"] == 0.7
    assert ev["ci95"] == pytest.approx(list(wilson_interval(0.7, 10)))
    assert "eval_rewards/accuracies 70.0 [" in md
    assert data["heard_in_training"] == 2 and "2 of 10" in md  # "prompt 0 is here", "prompt 3 is here"
    assert data["seconds"] == {"prefs": 30.0, "train_dpo": 100.0, "eval_dpo": 60.0, "eval_warm_prefs": 10.0}
    assert "Time the DPO steps took when built: 200 s" in md
