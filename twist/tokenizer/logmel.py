"""A weight-free log-mel encoder at 50 Hz: the "LogMel" baseline of Lakhotia et al. (2021).

GSLM ("On Generative Spoken Language Modeling from Raw Audio", Lakhotia et al. 2021) compares
learned encoders against k-means over log-mel filterbank frames. This encoder frames 16 kHz
audio like HuBERT-base does (25 ms window, 20 ms hop: 400/320 samples, no centring), so
``n_frames(T) == (T - 400) // 320 + 1`` and units line up with HuBERT's 50 Hz grid. Optional
per-utterance mean/variance normalisation (CMVN) removes loudness and channel offsets, which
otherwise dominate the k-means distance. It needs no weights, so the offline demo and the tests
use it; its fingerprint is a hash of its parameters.

Batch invariance: every frame sees only its own 400 samples and CMVN uses only the
utterance's own valid frames, so padding a batch changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from twist.contract import fingerprint_arrays
from twist.errors import ConfigError
from twist.schema import settings_of
from twist.tokenizer.config import LogMelSettings
from twist.tokenizer.encoders import Encoder


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular HTK-scale filters, ``(n_fft // 2 + 1, n_mels)``, unit peak."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fb = np.zeros((fft_freqs.size, n_mels))
    for m in range(n_mels):
        lo, mid, hi = hz_pts[m], hz_pts[m + 1], hz_pts[m + 2]
        up = (fft_freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - fft_freqs) / max(hi - mid, 1e-9)
        fb[:, m] = np.clip(np.minimum(up, down), 0.0, None)
    return fb.astype(np.float32)


class LogMelEncoder(Encoder):
    """Log-mel filterbank frames (see module docstring).

    Args:
        settings: :class:`~twist.tokenizer.config.LogMelSettings` (``None``: their defaults);
            or give its fields as keyword arguments (``LogMelEncoder(n_mels=16)``).
    """

    name = "logmel"

    def __init__(self, settings: LogMelSettings | None = None, **overrides: Any) -> None:
        st = settings_of(LogMelSettings, settings, overrides, "tokenizer.encoder")
        sample_rate, win_length, hop_length, n_fft = st.sample_rate, st.win_length, st.hop_length, st.n_fft
        n_mels, f_min, f_max, cmvn, log_floor = st.n_mels, st.f_min, st.f_max, st.cmvn, st.log_floor
        if n_fft < win_length:
            raise ConfigError(f"logmel: n_fft ({n_fft}) must be >= win_length ({win_length})")
        self.params = {
            "sample_rate": int(sample_rate),
            "win_length": int(win_length),
            "hop_length": int(hop_length),
            "n_fft": int(n_fft),
            "n_mels": int(n_mels),
            "f_min": float(f_min),
            "f_max": float(f_max if f_max is not None else sample_rate / 2),
            "cmvn": bool(cmvn),
            "log_floor": float(log_floor),
        }
        self.sample_rate = int(sample_rate)
        self.frame_rate = self.sample_rate / hop_length
        self.dim = int(n_mels)
        self.layer = None
        self._fb = torch.from_numpy(
            mel_filterbank(n_fft, n_mels, sample_rate, self.params["f_min"], self.params["f_max"])
        )
        self._window = torch.hann_window(win_length, periodic=True)
        self.device = torch.device("cpu")

    def fingerprint(self) -> str:
        return fingerprint_arrays(extra="logmel:" + json.dumps(self.params, sort_keys=True))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    def n_frames(self, n_samples: int) -> int:
        w, h = self.params["win_length"], self.params["hop_length"]
        return 0 if n_samples < w else (n_samples - w) // h + 1

    def to(self, device: str | torch.device) -> LogMelEncoder:
        super().to(device)
        self._fb = self._fb.to(self.device)
        self._window = self._window.to(self.device)
        return self

    @torch.inference_mode()
    def encode_batch(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        ts = self._as_tensors(wavs)
        if not ts:
            return []
        p = self.params
        lengths = [self.n_frames(int(t.numel())) for t in ts]
        max_len = max(int(t.numel()) for t in ts)
        if max(lengths) == 0:
            return [torch.zeros(0, self.dim, device=self.device) for _ in ts]
        batch = torch.zeros(len(ts), max_len, device=self.device)
        for i, t in enumerate(ts):
            batch[i, : t.numel()] = t
        # torch.stft places the window in the middle of each n_fft frame; padding by that
        # offset on the left puts the window's support at samples [i*hop, i*hop + win).
        pad = p["n_fft"] - p["win_length"]
        batch = torch.nn.functional.pad(batch, (pad // 2, pad - pad // 2))
        spec = torch.stft(
            batch,
            n_fft=p["n_fft"],
            hop_length=p["hop_length"],
            win_length=p["win_length"],
            window=self._window,
            center=False,
            return_complex=True,
        )  # (B, F, frames)
        power = spec.real.square() + spec.imag.square()
        mel = torch.einsum("bft,fm->btm", power, self._fb)
        logmel = torch.log(mel + p["log_floor"])
        out = []
        for i, n in enumerate(lengths):
            f = logmel[i, :n]
            if p["cmvn"] and n > 0:
                mu = f.mean(dim=0, keepdim=True)
                sd = f.std(dim=0, keepdim=True, unbiased=False) if n > 1 else torch.ones_like(mu)
                f = (f - mu) / (sd + 1e-5)
            out.append(f.float().contiguous())
        return out

