"""DPO through the trainer: the same loop, checkpoints, strategy and loggers as next-unit training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.kill_resume import assert_bit_identical_runs, kill_then_resume, write_kill_script
from twist.checkpoint import load_checkpoint
from twist.train.config import (
    DataConfig,
    DPOConfig,
    LoggerConfig,
    OptimConfig,
    ScheduleConfig,
    TrainLoopConfig,
    TrainRunConfig,
)
from twist.train.loggers import read_metrics
from twist.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRL_NAMES = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
             "logps/rejected")


@pytest.fixture
def dpo_inputs(tmp_path, contract):
    """A tiny LLaMA speech LM dir (the policy) and a pair dataset under its contract."""
    from tests.model_shapes import tiny_speech_lm
    from twist.lm import save_speech_lm
    from twist.pairs import PreferencePair, write_pair_dataset

    policy = save_speech_lm(tiny_speech_lm("llama", contract, seed=0), tmp_path / "policy", contract)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(20):
        pairs.append(PreferencePair(
            id=f"p{i:02d}", split="valid" if i >= 16 else "train", voice="v",
            prompt=rng.integers(0, contract.n_units, int(rng.integers(3, 9))),
            chosen=rng.integers(0, contract.n_units, int(rng.integers(2, 7))),
            rejected=rng.integers(0, contract.n_units, int(rng.integers(2, 7))),
            prompt_text="p", chosen_text="c", rejected_text="r"))
    data = tmp_path / "pairs"
    write_pair_dataset(data, pairs, contract, made_by={"source": "test"}, split={"seed": 0, "valid": 0.2})
    return policy, data


def dpo_cfg(dpo_inputs, out, *, precompute=False, **train):
    policy, data = dpo_inputs
    loop = {"device": "cpu", "global_batch": 4, "micro_batch": 2, "max_steps": 6, "valid_every": 3, "save_every": 3,
            "log_every": 1, "progress": False, "num_threads": 1, **train}
    return OmegaConf.structured(TrainRunConfig(
        out_dir=str(out), objective="dpo", dpo=DPOConfig(policy=str(policy), precompute_reference=precompute),
        data=DataConfig(path=str(data), max_tokens=64), optim=OptimConfig(lr_max=3e-3),
        schedule=ScheduleConfig(name="constant", warmup_steps=0), logger=LoggerConfig(tensorboard=False),
        train=TrainLoopConfig(**loop)))


def test_dpo_trains_logs_trls_names_and_exports_a_model_plain_transformers_loads(dpo_inputs, tmp_path):
    out = tmp_path / "run"
    result = Trainer(dpo_cfg(dpo_inputs, out)).fit()
    assert result.best_metric == "eval_loss" and result.step == 6
    rows = read_metrics(out)
    train = [r for r in rows if "rewards/chosen" in r]
    assert len(train) == 6 and all(k in train[0] for k in TRL_NAMES)
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6] and all(f"eval_{k}" in evals[0] for k in TRL_NAMES)
    # the policy learned its pairs: chosen pulled above rejected
    assert train[-1]["rewards/margins"] > train[0]["rewards/margins"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "speech_lm")
    assert model.config.twist["dpo"]["policy"] == str(dpo_inputs[0]) and model.config.twist["dpo"]["beta"] == 0.1


def test_the_reference_stays_bit_identical_through_training(dpo_inputs, tmp_path):
    from twist.lm import load_speech_lm

    tr = Trainer(dpo_cfg(dpo_inputs, tmp_path / "run", max_steps=4))
    before = {k: v.clone() for k, v in tr.objective.reference.model.state_dict().items()}
    tr.fit()
    after = tr.objective.reference.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    start, _ = load_speech_lm(dpo_inputs[0])
    assert all(torch.equal(v, after[k]) for k, v in start.state_dict().items())
    moved = tr.model.state_dict()
    assert any(not torch.equal(moved[k], after[k]) for k in after)  # the policy did move


def test_precomputed_reference_logps_equal_the_live_reference_and_train_the_same(dpo_inputs, tmp_path):
    live = Trainer(dpo_cfg(dpo_inputs, tmp_path / "live", max_steps=4))
    live.fit()
    pre = Trainer(dpo_cfg(dpo_inputs, tmp_path / "pre", max_steps=4, precompute=True))
    assert pre.objective.reference is None  # only the policy in memory until the table is read
    pre.fit()
    table = pre.objective.reference.table
    objective = live.objective
    pairs = objective.train_pairs + objective.valid_pairs
    assert sorted(table) == sorted(p.id for p in pairs)
    rows = objective.stream.rows(pairs)
    ref = objective.reference.logps(rows)
    assert [table[p.id] for p in pairs] == [tuple(x) for x in zip(ref.chosen.tolist(), ref.rejected.tolist())]
    a, b = read_metrics(tmp_path / "live"), read_metrics(tmp_path / "pre")
    assert [r.get("loss") for r in a] == [r.get("loss") for r in b]  # bit-identical floats
    assert len(list((tmp_path / "pre" / "reference").glob("*.json"))) == 1


def test_dpo_kill_and_resume_is_bit_identical(dpo_inputs, tmp_path):
    common = {"max_steps": 8, "valid_every": 0, "save_every": 3}
    ref = tmp_path / "ref"
    Trainer(dpo_cfg(dpo_inputs, ref, **common)).fit()
    run = tmp_path / "run"
    script = write_kill_script(tmp_path / "kill.py", dpo_cfg(dpo_inputs, run, **common))
    kill_then_resume(script, kill_at=5, saved_step=3, run_dir=run)
    assert_bit_identical_runs(ref, run, steps=8)


@pytest.mark.slow
def test_dpo_on_two_gloo_processes_equals_one(dpo_inputs, tmp_path):
    from tests.train.test_distributed import run_on_two_gloo

    Trainer(dpo_cfg(dpo_inputs, tmp_path / "one", micro_batch=2, max_steps=4)).fit()
    run_on_two_gloo(dpo_cfg(dpo_inputs, tmp_path / "two", micro_batch=1, max_steps=4, strategy="ddp"), tmp_path)
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for key in ("loss", "rewards/margins", "eval_loss", "eval_rewards/accuracies"):
        a = {r["step"]: r[key] for r in one if key in r}
        b = {r["step"]: r[key] for r in two if key in r}
        assert a.keys() == b.keys() and a, key
        assert all(abs(a[s] - b[s]) < 1e-5 for s in a), (key, a, b)
    wa = load_checkpoint(tmp_path / "one" / "checkpoints" / "last")["model"]
    wb = load_checkpoint(tmp_path / "two" / "checkpoints" / "last")["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
