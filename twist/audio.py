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
        BadAudioError: not a regular file, unreadable, empty, truncated, shorter than
            ``min_seconds``, longer than ``max_seconds``, or containing NaN/inf samples.
    """
    wav, sr = read_audio(path)
    return prepare_waveform(wav, sr, sample_rate, name=path, min_seconds=min_seconds, max_seconds=max_seconds)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` as it is: ``(samples, channels)`` float32 and its sample rate.

    Raises:
        BadAudioError: what :func:`check_audio_file` refuses, an undecodable file, or one
            that decodes to fewer frames than its header promises.
    """
    import soundfile as sf

    path = Path(path)
    check_audio_file(path)
    try:
        with sf.SoundFile(str(path)) as f:
            promised, fmt = int(f.frames), f.format
            wav = f.read(dtype="float32", always_2d=True)
            sr = int(f.samplerate)
    except Exception as e:  # libsndfile raises several types
        raise BadAudioError(path, f"unreadable audio ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    # An MP3 without a Xing/Info header has only an estimated length, so a shortfall there
    # proves nothing; every other format's header count is exact.
    if wav.shape[0] < promised and fmt != "MPEG":
        raise BadAudioError(path, f"truncated: the header promises {promised} frames, only {wav.shape[0]} decode")
    return wav, sr


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
    """``(frames, sample_rate, channels)`` from the header, without decoding.

    Raises:
        BadAudioError: what :func:`check_audio_file` refuses, or an unreadable header.
    """
    import soundfile as sf

    check_audio_file(path)
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise BadAudioError(path, f"unreadable header ({type(e).__name__})") from None
    return int(info.frames), int(info.samplerate), int(info.channels)


def audio_seconds(path: str | Path) -> float:
    """Duration from the header, after the same checks as :func:`audio_info`."""
    frames, sr, _ = audio_info(path)
    return frames / sr


def check_audio_file(path: str | Path) -> None:
    """Refuse, before decoding, what no reader should use: a missing path, a broken symlink, a
    directory, FIFO, socket or device (opening a FIFO would block), an empty file, and a wav
    whose data is shorter than its header says.

    Every reader in twist goes through this check (:func:`read_audio`, :func:`audio_info`).

    Raises:
        BadAudioError: naming the file and the reason.
    """
    import os
    import stat

    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadAudioError(path, link_problem(path) or "file not found") from None
    except OSError as e:
        raise BadAudioError(path, link_problem(path) or f"cannot stat file ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadAudioError(path, f"not a regular file ({_file_kind(st.st_mode)})")
    if st.st_size == 0:
        raise BadAudioError(path, "empty file (0 bytes)")
    try:
        reason = wav_truncation(path, st.st_size)
    except OSError as e:
        raise BadAudioError(path, f"cannot read file ({e.strerror})") from None
    if reason:
        raise BadAudioError(path, reason)


def _file_kind(mode: int) -> str:
    import stat

    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return f"mode {oct(stat.S_IFMT(mode))}"


_UNKNOWN_LENGTH = (0, 0xFFFFFFFF)  # written by a wav writer that could not seek back (a pipe)


def wav_truncation(path: str | Path, size: int | None = None) -> str | None:
    """Why a RIFF/RIFX/RF64 wav is cut short (its ``data`` chunk promises more bytes than
    follow it), or ``None`` for a whole wav or any other format.

    libsndfile quietly clamps such a file to the frames it holds, so the header count that
    :mod:`soundfile` reports cannot tell; this reads the chunk sizes themselves.
    """
    import struct

    path = Path(path)
    size = path.stat().st_size if size is None else size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
            return None
        end = ">" if head[:4] == b"RIFX" else "<"
        block_align, ds64_data = 0, None
        for _ in range(256):  # a wav has a handful of chunks; stop on a nonsense layout
            hdr = f.read(8)
            if len(hdr) < 8:
                return None  # no data chunk: libsndfile says what is wrong
            cid, csize = hdr[:4], struct.unpack(end + "I", hdr[4:])[0]
            start = f.tell()
            if cid == b"fmt " and csize >= 14:
                block_align = struct.unpack(end + "H", f.read(14)[12:14])[0]
            elif cid == b"ds64" and csize >= 16:
                ds64_data = struct.unpack("<Q", f.read(16)[8:16])[0]
            elif cid == b"data":
                declared = ds64_data if head[:4] == b"RF64" and csize == 0xFFFFFFFF else csize
                held = size - start
                if declared is None or declared in _UNKNOWN_LENGTH or declared <= held:
                    return None
                if block_align:
                    return (f"truncated: the header promises {declared // block_align} frames "
                            f"({declared} bytes of audio data), the file holds {held // block_align}")
                return f"truncated: the header promises {declared} bytes of audio data, the file holds {held}"
            f.seek(start + csize + (csize & 1))
    return None


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

    Everything with an audio extension is listed except directories (they are walked):
    dangling or looping symlinks, FIFOs, sockets and devices too, so that callers reject
    them with the reason (:func:`check_audio_file`) as they do when a manifest lists them,
    instead of losing them.
    """
    from twist.errors import MissingInputError

    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"audio directory not found: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and is_input_entry(p))


def output_name(rel: str | Path) -> str:
    """The flat name of the outputs made from an input at ``rel``, its path relative to the
    directory it was found in: the path without its extension, folders joined by ``__``
    (``spk1/u.wav`` -> ``spk1__u``; a file given on its own is named by its stem). Outputs
    named so sit side by side in one folder, and two inputs that share a file name in
    different folders keep one output each.
    """
    return "__".join(Path(rel).with_suffix("").parts)


def named_audio_files(sources: Iterable[str | Path], *, what: str = "audio",
                      extensions: Iterable[str] = DEFAULT_EXTENSIONS) -> list[tuple[str, Path]]:
    """``(name, path)`` for each audio file in ``sources`` (files, or directories searched
    recursively), named by :func:`output_name`; what ``twist-generate`` and resynthesis name
    their outputs by.

    Raises:
        MissingInputError: a source does not exist.
        InputError: two files get one name (the same relative path under two sources),
            naming both.
    """
    from twist.errors import MissingInputError

    named: dict[str, Path] = {}
    for src in map(Path, sources):
        if src.is_dir():
            found = [(output_name(f.relative_to(src)), f) for f in find_audio(src, extensions)]
        elif is_input_entry(src):
            found = [(output_name(src.name), src)]
        else:
            raise MissingInputError(f"{what} not found: {src}")
        for name, f in found:
            if name in named:
                raise InputError(f"two {what} files would both be named {name!r}: {named[name]} and {f} "
                                 "(give the directory that holds both, so their names keep their folders)")
            named[name] = f
    return list(named.items())


def is_input_entry(path: str | Path) -> bool:
    """Whether a directory entry counts as an input when scanning: anything but a directory.

    A FIFO, socket, device or broken symlink counts, so that the reader rejects it with the
    reason (:func:`check_audio_file`), exactly as when a manifest lists it; a scan that
    skipped it would lose it without a word.
    """
    path = Path(path)
    return path.is_symlink() and link_problem(path) is not None or (path.exists() and not path.is_dir())
