"""Tiny vocoder fixtures: a few-thousand-parameter generator and a tone dataset on disk."""

from __future__ import annotations

import numpy as np
import pytest

from twist.contract import UnitContract

K = 12


def tiny_generator_cfg(hop_rates=(4, 4, 5, 4), kernels=(8, 8, 11, 8), dur: bool = True, **kw) -> dict:
    """A generator with the real structure at toy width (hop = prod(hop_rates))."""
    cfg = {
        "num_embeddings": K,
        "embedding_dim": 8,
        "upsample_rates": list(hop_rates),
        "upsample_kernel_sizes": list(kernels),
        "upsample_initial_channel": 32,
        "resblock": "2",
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1, 3]],
        "dur_predictor_params": (
            {"encoder_embed_dim": 8, "var_pred_hidden_dim": 16, "var_pred_kernel_size": 3, "var_pred_dropout": 0.0}
            if dur
            else None
        ),
    }
    cfg.update(kw)
    return cfg


def make_contract(k: int = K, frame_rate: float = 50.0, dedup: bool = True, fp: str = "tone") -> UnitContract:
    return UnitContract(
        encoder="tone", encoder_fingerprint=fp, layer=None, frame_rate=frame_rate, n_units=k,
        kmeans_fingerprint=f"{fp}-km", dedup=dedup, sample_rate=16000,
    )


def tone_audio(frames: np.ndarray, hop: int = 320, sr: int = 16000) -> np.ndarray:
    """Unit u sounds as a sine at 200 + 100 u Hz for its frames (phase-continuous)."""
    f = np.repeat(200.0 + 100.0 * frames, hop)
    phase = 2 * np.pi * np.cumsum(f) / sr
    return (0.3 * np.sin(phase)).astype(np.float32)


@pytest.fixture
def tone_dataset(tmp_path):
    """(units_dir, audio_dir, contract): 10 utterances of tone units, written with the real unit writer."""
    from twist.audio import save_audio
    from twist.units import UnitShardWriter, merge_shards

    contract = make_contract()
    rng = np.random.default_rng(0)
    audio_dir = tmp_path / "wavs"
    units_dir = tmp_path / "units"
    with UnitShardWriter(units_dir, contract) as w:
        for i in range(10):
            runs = rng.integers(0, K, 12)
            frames = np.repeat(runs, rng.integers(1, 6, 12))
            path = audio_dir / f"utt{i:02d}.wav"
            save_audio(path, tone_audio(frames), 16000)
            w.add(f"utt{i:02d}", frames, source=str(path))
    merge_shards(units_dir)
    return units_dir, audio_dir, contract


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Toy-sized ops gain nothing from 2 threads, and on a busy CPU oneDNN's thread spinning
    made them up to 100x slower (measured); run them on one thread and restore afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
