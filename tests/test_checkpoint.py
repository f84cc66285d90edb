import pytest
import torch

from twist.atomic import atomic_write_text
from twist.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint


def test_rng_state_roundtrip_through_checkpoint(tmp_path):
    import random

    import numpy as np

    save_checkpoint(tmp_path / "ck", {"rng": capture_rng_state(), "step": 7})
    want = (random.random(), np.random.rand(), torch.rand(3))
    state = load_checkpoint(tmp_path / "ck")
    restore_rng_state(state["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert want[0] == got[0] and want[1] == got[1] and torch.equal(want[2], got[2]) and state["step"] == 7


def test_failed_save_keeps_previous(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "ck", {"w": torch.ones(3), "step": 1})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path / "ck", {"w": torch.zeros(3), "step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "ck")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_atomic_text_failure_leaves_old(tmp_path, monkeypatch):
    atomic_write_text(tmp_path / "f.txt", "old")
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "f.txt", "new")
    monkeypatch.undo()
    assert (tmp_path / "f.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_outputs_get_umask_permissions(tmp_path):
    import os

    atomic_write_text(tmp_path / "f.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask
