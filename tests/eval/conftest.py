"""Fixtures for the eval tests: tiny models, a fake tokenizer, ZR2021 and StoryCloze fixtures."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.model_shapes import tiny_config
from twist.contract import UnitContract

FRAME = 320  # samples per frame at 50 Hz / 16 kHz


def tiny_llama(contract: UnitContract, seed: int = 0, max_positions: int = 256) -> torch.nn.Module:
    """A random 2-layer Llama whose vocabulary is the contract's layout."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=contract.layout.vocab_size,
                      **tiny_config("llama", max_position_embeddings=max_positions), attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


class FixedLogitsLM(torch.nn.Module):
    """Logits depend only on the previous token: ``logits[t] = table[input_ids[t]]``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.float())
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, **_):  # noqa: ANN001
        self.calls += 1
        return SimpleNamespace(logits=self.table[input_ids])


class FakeTokenizer:
    """Stands in for UnitTokenizer: one unit per 320-sample frame, from the frame's peak level."""

    sample_rate = 16000

    def __init__(self, contract: UnitContract) -> None:
        self.contract = contract
        self.calls: list[str] = []

    def encode_file(self, path):  # noqa: ANN001
        import soundfile as sf

        from twist.audio import BadAudioError

        self.calls.append(str(path))
        try:
            wav, _ = sf.read(str(path), dtype="float32")
        except Exception as e:  # noqa: BLE001
            raise BadAudioError(path, f"unreadable audio ({e})") from None
        return self._units(wav)

    def encode(self, wav):  # noqa: ANN001
        """A waveform already read (a clip of a file)."""
        self.calls.append("<waveform>")
        return self._units(wav)

    def _units(self, wav):  # noqa: ANN001
        n = len(wav) // FRAME
        peaks = np.abs(wav[: n * FRAME]).reshape(n, FRAME).max(1)
        return np.minimum((peaks * self.contract.n_units).astype(np.int64), self.contract.n_units - 1)


def write_units_wav(path: Path, units: list[int], k: int) -> Path:
    """A wav that FakeTokenizer turns back into ``units`` (frame peak = (u + 0.5) / k)."""
    import soundfile as sf

    frames = []
    for u in units:
        f = np.zeros(FRAME, dtype=np.float32)
        f[FRAME // 2] = (u + 0.5) / k
        frames.append(f)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.concatenate(frames), 16000, subtype="FLOAT")
    return path


def write_gold(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})


@pytest.fixture
def small_contract() -> UnitContract:
    return UnitContract(encoder="fake", encoder_fingerprint="fake-enc", layer=None, frame_rate=50.0,
                        n_units=8, kmeans_fingerprint="fake-km", dedup=True, sample_rate=16000)


@pytest.fixture
def fake_tokenizer(small_contract):  # noqa: ANN001
    return FakeTokenizer(small_contract)


@pytest.fixture
def ev():
    """The helpers above, for tests (importlib mode cannot import conftest by name)."""
    return SimpleNamespace(tiny_llama=tiny_llama, FixedLogitsLM=FixedLogitsLM, FakeTokenizer=FakeTokenizer,
                           write_units_wav=write_units_wav, write_gold=write_gold, FRAME=FRAME)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every eval test runs on one torch thread (the shared fixture in tests/conftest.py)."""
