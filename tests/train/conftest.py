"""Fixtures for the trainer tests: a tiny unit dataset and a tiny OPT config (shapes: tests/model_shapes.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from tests.model_shapes import tiny_node, tiny_speech_lm
from twist.contract import UnitContract
from twist.lm.config import InitConfig, ModelConfig
from twist.train.config import DataConfig, LoggerConfig, ScheduleConfig, TrainLoopConfig, TrainRunConfig
from twist.units import UnitShardWriter, merge_shards

# The trainer tests' model: the tiny OPT with OPT's own hidden dropout, so a resumed run must
# restore the dropout RNG to repeat the uninterrupted one bit for bit.
TINY_OPT = ModelConfig(**tiny_node("opt", max_position_embeddings=128, dropout=0.1))


def tiny_family_model(family: str, contract: UnitContract, seed: int = 0, **config: Any):
    """A cold-started tiny speech LM of ``family`` (``config`` overrides its shape)."""
    return tiny_speech_lm(family, contract, seed=seed, **config)


def make_unit_dataset(
    root: Path,
    contract: UnitContract,
    *,
    n: int = 60,
    min_len: int = 4,
    max_len: int = 30,
    seed: int = 0,
    valid: float = 0.2,
    bad_id: str | None = None,
) -> Path:
    """Synthetic, learnable utterances: runs of ``u, u+1, u+2, ...`` (mod K) from a random start.

    ``bad_id`` names one utterance whose units are rewritten on disk to K (out of range).
    """
    rng = np.random.default_rng(seed)
    k = contract.n_units
    with UnitShardWriter(root, contract, shard_items=25) as w:
        for i in range(n):
            length = int(rng.integers(min_len, max_len + 1))
            start = int(rng.integers(0, k))
            units = (start + np.arange(length)) % k
            w.add(f"utt{i:04d}", units, raw=False)
    merge_shards(root, split={"seed": 0, "valid": valid, "test": 0.0})
    if bad_id is not None:
        import json

        rows = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]
        row = next(r for r in rows if r["id"] == bad_id)
        mm = np.memmap(root / "shards" / f"{row['shard']}.units.u16", dtype="<u2", mode="r+")
        mm[row["offset"]] = k
        mm.flush()
        del mm
    return root


def train_cfg(data: Path, out: Path, **train_overrides: Any) -> DictConfig:
    """A trainer config for CPU tests, built from the schema (its defaults) with small sizes.

    Returned as a structured config: tests may change fields (``cfg.init.lr_max = ...``), and a
    mistyped key or a wrong type fails at once, as it would on the command line.
    """
    train = {
        "device": "cpu",
        "global_batch": 4,
        "micro_batch": 2,
        "max_steps": 6,
        "valid_every": 3,
        "save_every": 3,
        "log_every": 1,
        "progress": False,
        "num_threads": 1,  # tiny models: one thread avoids OpenMP stalls on a busy 2-core machine
        **train_overrides,
    }
    cfg = TrainRunConfig(
        out_dir=str(out),
        model=copy.deepcopy(TINY_OPT),
        init=InitConfig(name="cold", lr_max=3e-3, lr_final=3e-4),
        data=DataConfig(path=str(data), max_tokens=64),
        schedule=ScheduleConfig(warmup_steps=2),
        logger=LoggerConfig(tensorboard=False),
        train=TrainLoopConfig(**train),
    )
    return OmegaConf.structured(cfg)


@pytest.fixture(autouse=True)
def _restore_threads():
    """The trainer sets torch's thread count from its config; give other tests theirs back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def unit_data(tmp_path, contract) -> Path:
    return make_unit_dataset(tmp_path / "units", contract)


@pytest.fixture
def make_units():
    """``make_unit_dataset`` as a fixture (test modules cannot import conftest under importlib mode)."""
    return make_unit_dataset


@pytest.fixture
def make_cfg():
    """``train_cfg`` as a fixture."""
    return train_cfg
