"""Log-mel spectrograms with ``torch.stft`` (no torchaudio), for the HiFi-GAN mel loss.

HiFi-GAN (Kong et al. 2020) computes its reconstruction loss on log-mel spectrograms of the
real and generated waveforms. The filterbank here is the Slaney-style mel scale with
area normalisation (the librosa default HiFi-GAN uses), built once per
``(sample_rate, n_fft, n_mels, fmin, fmax)`` and cached per device.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from twist.errors import ConfigError


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney: linear below 1 kHz, logarithmic above
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular, area-normalised mel filters."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz)
    ramps = hz[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    fb = np.maximum(0, np.minimum(lower, upper))
    fb *= (2.0 / (hz[2 : n_mels + 2] - hz[:n_mels]))[:, None]
    return fb.astype(np.float32)


class MelSpectrogram(torch.nn.Module):
    """``(B, T)`` or ``(B, 1, T)`` waveform -> ``(B, n_mels, frames)`` log-mel (natural log, floor 1e-5)."""

    def __init__(self, sample_rate: int, *, n_fft: int, hop_length: int, win_length: int, n_mels: int,
                 fmin: float, fmax: float | None) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ConfigError(f"vocoder_model.mel: win_length {win_length} > n_fft {n_fft}")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        fb = mel_filterbank(sample_rate, n_fft, n_mels, float(fmin), None if fmax is None else float(fmax))
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 3:
            wav = wav.squeeze(1)
        pad = (self.n_fft - self.hop_length) // 2
        # reflect padding as HiFi-GAN does, so frame i is centred on sample i * hop
        wav = torch.nn.functional.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            wav,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )
        mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
        return torch.log(torch.clamp(self.fb @ mag, min=1e-5))
