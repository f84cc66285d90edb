"""The encoder interface: a batch of waveforms in, frame-level features at a known rate out.

Every encoder (HuBERT, Whisper, log-mel, ...) is used through :class:`Encoder` and built from a plain
JSON-able spec by :func:`build_encoder`, so a tokenizer directory can record the spec and
rebuild the same encoder later. A spec is an encoder's settings (twist.tokenizer.config:
:class:`~twist.tokenizer.config.LogMelSettings`, ...), chosen by ``name``; their defaults are
written there only. Encoders are *batch-invariant*: the features of a waveform do
not depend on what else is in its batch (each implementation says how it guarantees this).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from twist.tokenizer.config import ENCODER


class Encoder(abc.ABC):
    """A speech encoder producing ``(frames, dim)`` features at ``frame_rate`` Hz.

    Attributes:
        name: the encoder family (``"logmel"``, ``"hubert"``, ``"whisper"``), recorded in the unit contract.
        sample_rate: the audio rate the encoder consumes.
        frame_rate: output frames per second.
        dim: feature dimension.
        layer: the layer the features come from, ``None`` for a layerless encoder.
    """

    name: str
    sample_rate: int
    frame_rate: float
    dim: int
    layer: int | None = None
    device: torch.device = torch.device("cpu")

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hash of the weights (or, weight-free, of the parameters)."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """A JSON-able recipe that :func:`build_encoder` turns back into this encoder."""

    @abc.abstractmethod
    def n_frames(self, n_samples: int) -> int:
        """How many frames a waveform of ``n_samples`` samples gives (0 if too short)."""

    @abc.abstractmethod
    def encode_batch(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        """Features for each waveform: a list of float32 ``(n_frames(len(w)), dim)`` tensors on ``device``."""

    @property
    def min_samples(self) -> int:
        """The shortest waveform that yields at least one frame."""
        n = 1
        while self.n_frames(n) < 1:
            n *= 2
        lo, hi = n // 2, n
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            if self.n_frames(mid) >= 1:
                hi = mid
            else:
                lo = mid
        return hi

    def to(self, device: str | torch.device) -> Encoder:
        self.device = torch.device(device)
        return self

    def encode(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.encode_batch([wav])[0]

    def _as_tensors(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for w in wavs:
            t = torch.as_tensor(np.asarray(w, dtype=np.float32) if not torch.is_tensor(w) else w)
            if t.ndim != 1:
                raise ValueError(f"{self.name} encoder expects mono 1-D waveforms, got shape {tuple(t.shape)}")
            out.append(t.to(self.device, torch.float32))
        return out


ENCODERS = tuple(ENCODER.options)
_CLASSES = {"logmel": "twist.tokenizer.logmel:LogMelEncoder", "hubert": "twist.tokenizer.hubert:HubertEncoder",
            "whisper": "twist.tokenizer.whisper:WhisperEncoder"}


def encoder_settings(spec: Any, key: str = "tokenizer.encoder") -> Any:
    """The encoder's settings for a spec (a mapping chosen by ``name``, or a settings object);
    an unknown name, a key the encoder does not take or a missing required one is refused,
    naming the key (and the closest valid one), before any audio is read."""
    return ENCODER.typed(spec, key)


def build_encoder(spec: Any, *, device: str | torch.device | None = None) -> Encoder:
    """Build an encoder from its spec, e.g. ``{"name": "logmel", "n_mels": 80}`` or
    ``{"name": "hubert", "path": "/models/hubert-base", "layer": 6}`` or ``{"name": "whisper", "path": None}``,
    or from its settings object."""
    import importlib

    settings = encoder_settings(spec)
    module, _, cls = _CLASSES[settings.name].partition(":")
    enc: Encoder = getattr(importlib.import_module(module), cls)(settings)
    if device is not None:
        enc.to(device)
    return enc
