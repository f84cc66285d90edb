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


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a shared 2-core box thrash.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
