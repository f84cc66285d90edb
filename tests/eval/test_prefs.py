"""The preference-pair benchmark: a model's preference on held-out pairs, as DPO scores it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from twist.contract import ContractMismatchError
from twist.errors import ConfigError
from twist.eval import evaluate_model
from twist.pairs import PreferencePair, write_pair_dataset


def _pair_dataset(root, contract, n=24, seed=0):
    """Pairs of random units; every third chosen starts with the prompt's last unit (no dedup across it)."""
    rng = np.random.default_rng(seed)
    k = contract.n_units

    def seg(lo, hi):
        u = [int(rng.integers(k))]
        while len(u) < int(rng.integers(lo, hi)):
            x = int(rng.integers(k))
            if x != u[-1]:
                u.append(x)
        return np.asarray(u)

    pairs = []
    for i in range(n):
        prompt, chosen, rejected = seg(3, 9), seg(2, 7), seg(2, 7)
        if i % 3 == 0:
            chosen = np.concatenate([[prompt[-1]], chosen[chosen != prompt[-1]][:5]])
        pairs.append(PreferencePair(f"p{i:02d}", "valid" if i % 2 else "train", "v", prompt, chosen, rejected,
                                    "a", "b", "c"))
    write_pair_dataset(root, pairs, contract, made_by={"source": "test"}, split={"seed": 0, "valid": 0.5})
    return pairs


def test_prefs_decides_each_pair_by_the_log_probabilities_dpo_reads(tmp_path, ev, small_contract):
    """Scored whole (prompt + continuation), a pair is decided by the same numbers DPO's loss reads:
    the continuation's summed log-probability given the prompt, <eos> included (twist.train.dpo)."""
    from twist.lm.attention import plan_attention
    from twist.train.dpo import pair_logps, pair_rows

    layout = small_contract.layout
    pairs = _pair_dataset(tmp_path / "pairs", small_contract)
    valid = [p for p in pairs if p.split == "valid"]
    model = ev.tiny_llama(small_contract, seed=3)
    res = evaluate_model({"benchmarks": {"prefs": {"path": str(tmp_path / "pairs")}}, "progress": False},
                         model, small_contract, tmp_path / "out")

    plan = plan_attention(model, "sdpa", "auto", device=torch.device("cpu"), announce=False)
    with torch.no_grad():
        lp = pair_logps(model, pair_rows(valid, layout, max_tokens=64, shared=True), plan, layout)
    want = (lp.chosen - lp.rejected).double().numpy()
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "items" / "prefs_valid.jsonl").read_text().splitlines())}
    assert sorted(rows) == sorted(p.id for p in valid)
    got = np.array([rows[p.id]["positive_logprob_sum"] - rows[p.id]["negative_logprob_sum"] for p in valid])
    assert np.allclose(got, want, atol=1e-4), np.abs(got - want).max()
    # the prompt's units are scored once per side and the boundary is not deduplicated
    assert all(rows[p.id]["positive_n_units"] == len(p.prompt) + len(p.chosen) for p in valid)
    decisions = np.where(want > 0, 1.0, np.where(want < 0, 0.0, 0.5))
    assert res["metrics"]["prefs (valid)"] == pytest.approx(decisions.mean())
    low, high = res["ci95"]["prefs (valid)"]
    assert low <= res["metrics"]["prefs (valid)"] <= high
    items = json.loads((tmp_path / "out" / "item_scores.json").read_text())["metrics"]["prefs (valid)"]
    assert items == {p.id: d for p, d in zip(valid, decisions)}  # what paired tests between models read


def test_prefs_splits_and_refusals(tmp_path, ev, small_contract):
    _pair_dataset(tmp_path / "pairs", small_contract)
    model = ev.tiny_llama(small_contract)
    res = evaluate_model({"benchmarks": {"prefs": {"path": str(tmp_path / "pairs"), "split": "all"}}, "progress": False},
                         model, small_contract, tmp_path / "all")
    assert res["benchmarks"]["prefs/all"]["n_pairs"] == 24
    with pytest.raises(ConfigError, match="benchmarks.prefs.split: 'test' is not one of valid, train, all"):
        evaluate_model({"benchmarks": {"prefs": {"path": str(tmp_path / "pairs"), "split": "test"}}},
                       model, small_contract, tmp_path / "bad")
    other = dataclasses.replace(small_contract, n_units=9)
    with pytest.raises(ContractMismatchError, match="the model"):
        evaluate_model({"benchmarks": {"prefs": {"path": str(tmp_path / "pairs")}}}, ev.tiny_llama(other), other,
                       tmp_path / "mismatch")
