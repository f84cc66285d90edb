"""Fixtures for the listening-test tests: small 'generate dirs' of tones, and a built page."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def write_system(d: Path, n_prompts: int, pitch: float, *, generate_dir: bool = True, seconds: float = 1.0) -> Path:
    """``utt<i>.wav`` tones (and, like twist-generate, ``.continuation.wav`` + ``.json``)."""
    import soundfile as sf

    d.mkdir(parents=True, exist_ok=True)
    for p in range(n_prompts):
        t = np.arange(int(16000 * seconds * (1 + 0.25 * p))) / 16000
        wav = (0.3 * np.sin(2 * np.pi * (pitch + 15 * p) * t)).astype(np.float32)
        sf.write(str(d / f"utt{p}.wav"), wav, 16000)
        if generate_dir:
            sf.write(str(d / f"utt{p}.continuation.wav"), wav[8000:], 16000)
            (d / f"utt{p}.json").write_text(json.dumps({"id": f"utt{p}", "generated_units": [1, 2]}))
    return d


def make_inputs(root: Path, n_prompts: int = 3, seconds: float = 1.0) -> dict:
    return {
        "systems": {"warm": write_system(root / "warm", n_prompts, 220, seconds=seconds),
                    "cold": write_system(root / "cold", n_prompts, 330, seconds=seconds)},
        "original": write_system(root / "orig", n_prompts, 440, generate_dir=False, seconds=seconds),
    }


@pytest.fixture
def mos():
    """The helpers above, for tests (importlib mode cannot import conftest by name)."""
    return SimpleNamespace(write_system=write_system, make_inputs=make_inputs)
