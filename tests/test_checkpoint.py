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


def test_disk_full_during_a_checkpoint_save_is_one_line_and_keeps_the_last_one(tmp_path, monkeypatch):
    """A real ENOSPC: the new checkpoint's state.pt is a link to /dev/full, so the kernel
    itself refuses the bytes (torch.save writing to a path turned that into an
    'unexpected pos' RuntimeError with no word of the disk)."""
    import os

    import twist.checkpoint as ck
    from twist.errors import DiskFullError

    save_checkpoint(tmp_path / "last", {"w": torch.ones(1000), "step": 1})
    real = ck.staging_dir

    def staging_on_a_full_disk(path):
        tmp = real(path)
        os.symlink("/dev/full", tmp / ck.STATE)
        return tmp

    monkeypatch.setattr(ck, "staging_dir", staging_on_a_full_disk)
    with pytest.raises(DiskFullError) as e:
        save_checkpoint(tmp_path / "last", {"w": torch.zeros(100_000), "step": 2})
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and str(tmp_path / "last") in msg
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last")["step"] == 1  # still resumable
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def test_a_checkpoint_that_needs_pickle_is_refused_in_one_line_without_torchs_advice(tmp_path):
    from collections import OrderedDict

    from twist.errors import UnsafeFileError

    (tmp_path / "ck").mkdir()
    torch.save({"step": 1, "opaque": OrderedDict(a=1), "obj": _Opaque()}, tmp_path / "ck" / "state.pt")
    with pytest.raises(UnsafeFileError) as e:
        load_checkpoint(tmp_path / "ck")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "ck" / "state.pt") in msg and "_Opaque" in msg
    assert "weights_only" not in msg and "WeightsUnpickler" not in msg


class _Opaque:
    pass


def test_every_output_gets_the_modes_the_umask_gives(tmp_path):
    """Write-then-rename must not leave exports owner-only (mkstemp/mkdtemp and safetensors make 0600/0700)."""
    import os

    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from twist.atomic import atomic_save
    from twist.contract import UnitContract, VocabLayout
    from twist.lm import save_speech_lm
    from twist.lm.surgery import cold_start

    old = os.umask(0o022)
    try:
        atomic_save(tmp_path / "generator.safetensors", lambda p: save_file({"w": torch.zeros(3)}, str(p)))
        save_checkpoint(tmp_path / "checkpoints" / "last", {"step": 1})
        contract = UnitContract(encoder="logmel", encoder_fingerprint="e", layer=None, frame_rate=50.0, n_units=5,
                                kmeans_fingerprint="k", dedup=True, sample_rate=16000)
        text = LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           vocab_size=VocabLayout(5).vocab_size)
        save_speech_lm(cold_start(text, contract, seed=0), tmp_path / "speech_lm", contract)
    finally:
        os.umask(old)
    wrong = []
    for root, dirs, files in os.walk(tmp_path):
        for d in dirs:
            mode = os.stat(os.path.join(root, d)).st_mode & 0o777
            if mode != 0o755:
                wrong.append((os.path.join(root, d), oct(mode)))
        for f in files:
            mode = os.stat(os.path.join(root, f)).st_mode & 0o777
            if mode != 0o644:
                wrong.append((os.path.join(root, f), oct(mode)))
    assert not wrong
