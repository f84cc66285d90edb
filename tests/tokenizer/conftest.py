"""Fixtures for tokenizer tests: generated audio (good and bad files) and tiny HuBERTs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch


def tone(seconds: float, sr: int = 16000, f0: float = 220.0, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: a few harmonics with vibrato plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 5)) + 0.02 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def make_audio_dir(root: Path, n_good: int = 5) -> dict[str, float]:
    """Good files, a corrupt, an empty, a stereo 44.1 kHz and a 0.05 s file.

    Returns the good ids with their durations in seconds.
    """
    root.mkdir(parents=True, exist_ok=True)
    good = {}
    for i in range(n_good):
        sec = 0.4 + 0.23 * i
        sf.write(root / f"utt{i}.wav", tone(sec, f0=150 + 40 * i, seed=i), 16000)
        good[f"utt{i}"] = sec
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x01" * 40)
    (root / "empty.wav").write_bytes(b"")
    sec = 1.3
    t = np.arange(int(44100 * sec)) / 44100
    st = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 550 * t)], axis=1).astype(np.float32)
    sf.write(root / "stereo44k.wav", st, 44100)
    good["stereo44k"] = st.shape[0] / 44100
    sf.write(root / "tiny.wav", tone(0.05, seed=9), 16000)
    return good


BAD = {"corrupt", "empty", "tiny"}


@pytest.fixture
def audio_dir(tmp_path: Path) -> tuple[Path, dict[str, float]]:
    d = tmp_path / "wavs"
    return d, make_audio_dir(d)


TINY_HUBERT = dict(
    hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48,
    conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8),
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)


def make_tiny_hubert(path: Path, *, norm: str = "group", extra_stride: bool = False, do_normalize: bool | None = None,
                     seed: int = 0):
    """Save a tiny random HubertModel to ``path``; 50 Hz, or 25 Hz with ``extra_stride``."""
    from transformers import HubertConfig, HubertModel

    kw = dict(TINY_HUBERT)
    if extra_stride:
        kw.update(conv_dim=(16, 16, 16, 16), conv_kernel=(10, 8, 4, 2), conv_stride=(5, 8, 8, 2))
    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**kw, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer")).eval()
    model.save_pretrained(str(path))
    if do_normalize is not None:
        (path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": do_normalize, "sampling_rate": 16000}))
    return model


@pytest.fixture
def make_hubert():
    return make_tiny_hubert


@pytest.fixture
def make_tone():
    return tone
