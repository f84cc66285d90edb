"""Shared test fixtures. Tests run on CPU with tiny models."""

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def contract():
    from twist.contract import UnitContract

    return UnitContract(
        encoder="logmel",
        encoder_fingerprint="test-encoder",
        layer=None,
        frame_rate=50.0,
        n_units=20,
        kmeans_fingerprint="test-kmeans",
        dedup=True,
        sample_rate=16000,
    )
