"""Reading audio for the pipeline: decode, validate, mix to mono, resample.

Decoding is libsndfile (via ``soundfile``: wav, flac, ogg/vorbis, mp3 with libsndfile >=
1.1) and resampling is ``soxr`` (high quality). torchaudio is not used (see the README's
offline notes). Every failure names the file and the reason, as a :class:`BadAudioError`,
so callers can log it as a reject and keep going.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from twist.errors import InputError

DEFAULT_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")


class BadAudioError(InputError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def load_audio(
    path: str | Path,
    sample_rate: int = 16000,
    *,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``.

    Raises:
        BadAudioError: unreadable, empty, shorter than ``min_seconds``, longer than
            ``max_seconds``, or containing NaN/inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise BadAudioError(path, link_problem(path) or "file not found")
    if path.stat().st_size == 0:
        raise BadAudioError(path, "empty file (0 bytes)")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types
        raise BadAudioError(path, f"unreadable audio ({type(e).__name__}: {str(e).strip()[:200]})") from None
    return prepare_waveform(wav, sr, sample_rate, name=path, min_seconds=min_seconds, max_seconds=max_seconds)


def prepare_waveform(
    wav: np.ndarray,
    sr: int,
    sample_rate: int = 16000,
    *,
    name: str | Path = "<array>",
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Validate, mix to mono and resample an in-memory waveform (``(T,)`` or ``(T, C)``)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[:, None]
    if wav.ndim != 2:
        raise BadAudioError(name, f"expected (samples,) or (samples, channels) audio, got shape {wav.shape}")
    if wav.shape[0] == 0:
        raise BadAudioError(name, "no samples (empty audio)")
    if not np.isfinite(wav).all():
        raise BadAudioError(name, "contains NaN or inf samples")
    seconds = wav.shape[0] / sr
    if seconds < min_seconds:
        raise BadAudioError(name, f"too short: {seconds:.3f} s < min {min_seconds:.3f} s")
    if max_seconds is not None and seconds > max_seconds:
        raise BadAudioError(name, f"too long: {seconds:.1f} s > max {max_seconds:.1f} s")
    mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr != sample_rate:
        import soxr

        mono = soxr.resample(mono, sr, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """``(frames, sample_rate, channels)`` from the header, without decoding."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:
        raise BadAudioError(path, f"unreadable header ({type(e).__name__})") from None
    return int(info.frames), int(info.samplerate), int(info.channels)


def save_audio(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """Write a float waveform as 16-bit PCM wav, atomically."""
    import soundfile as sf

    from twist.atomic import atomic_path

    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    wav = np.clip(wav, -1.0, 1.0)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), wav, sample_rate, subtype="PCM_16", format="WAV")


def link_problem(path: str | Path) -> str | None:
    """Why a symlink cannot be read (dangling, or a loop); ``None`` for anything else."""
    import errno
    import os

    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symlink loop ({path} -> {os.readlink(path)} leads back to itself)"
        return f"dangling symlink (its target {os.readlink(path)} does not exist)"
    return None


def find_audio(root: str | Path, extensions: Iterable[str] = DEFAULT_EXTENSIONS) -> list[Path]:
    """Every audio file under ``root`` (recursive), sorted, by extension (case-insensitive).

    Symlinks with an audio extension are listed even when they are dangling or loop, so
    that callers reject them with a reason (:func:`link_problem`) instead of losing them.
    """
    from twist.errors import MissingInputError

    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"audio directory not found: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in exts and (p.is_file() or link_problem(p) is not None))
