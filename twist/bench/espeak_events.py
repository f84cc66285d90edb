"""espeak-ng's word and phoneme events, with the very audio they belong to, from libespeak-ng.

The espeak-ng program prints no timings. Its C library (``libespeak-ng1``, installed with the
Debian package ``espeak-ng``) reports events through the synthesis callback: a *word* event
(the word's character position and length in the text) and, with
``espeakINITIALIZE_PHONEME_EVENTS``, a *phoneme* event (its name), each at the output sample
where it happens. This module gets them, through ``ctypes``, for the same samples the program
writes:

* **One synthesis per process, as the program does.** libespeak-ng keeps state from one
  synthesis to the next (the wave generator draws its noise from libc's ``rand()``, and more):
  a second synthesis in one process differs from the program's output, by a few samples or by
  tens of milliseconds. So a small server process initialises the library once and forks a
  child for each synthesis; every synthesis starts from the state the program's starts from
  and its samples equal the program's bit for bit (``tests/bench/test_tts.py`` checks every
  default voice, and speed and pitch settings, against ``espeak-ng --stdout``).
* **The server is this file run as a script** (``python -I -S``: the standard library only,
  fast to start). :class:`EspeakEvents` keeps one server per concurrent caller; a server ends
  when its caller's pipe closes.

Protocol: one JSON request per line on the server's stdin (``text``, ``voice``, ``speed``,
``pitch``); per request one JSON header line on its stdout, followed by ``2 * n_samples`` bytes of
16-bit little-endian audio when the header has ``n_samples`` (else it has ``error``). The first
line a server writes says it is ready (the library's sample rate and version) or why not.

Word times (:func:`engine_words`): a phoneme lasts from its event to the next phoneme's; a word
spans its phonemes, pauses (phonemes named ``_...``) left out, so it starts when its first sound
starts and ends when its last sound ends. Word events of length 0, which espeak-ng emits inside
pauses, are not words.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
from typing import Any

# espeak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
# what `espeak-ng --stdin -b 1` passes: espeakCHARS_UTF8 | espeakPHONEMES ([[...]] input) | espeakENDPAUSE
SYNTH_FLAGS = 0x1 | 0x100 | 0x1000
EVENT_WORD, EVENT_PHONEME = 1, 7
PARAM_RATE, PARAM_PITCH = 1, 3


# ---------------------------------------------------------------------------------------
# the server (run as a script; the standard library only)
# ---------------------------------------------------------------------------------------
def _library() -> Any:
    import ctypes
    import ctypes.util

    lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")

    class EventId(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    class Event(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                    ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                    ("user_data", ctypes.c_void_p), ("id", EventId)]

    lib.Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [lib.Callback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    return lib


def _synthesize(lib: Any, req: dict[str, Any]) -> bytes:
    """One synthesis in this (forked) process, set up as the espeak-ng program sets it up."""
    import ctypes

    chunks: list[bytes] = []
    events: list[list[Any]] = []

    def callback(wav: Any, n: int, ev: Any) -> int:
        if n > 0 and wav:
            chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while ev[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            e = ev[i]
            if e.type == EVENT_WORD:
                events.append(["word", e.text_position, e.length, e.sample])
            elif e.type == EVENT_PHONEME:
                events.append(["phoneme", e.sample, e.id.string.decode("utf-8", "replace")])
            i += 1
        return 0

    keep = lib.Callback(callback)
    lib.espeak_SetSynthCallback(keep)
    voice = str(req["voice"])
    if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
        raise ValueError(f"espeak-ng has no voice {voice!r}")
    # the program sets these only when given (-s > 0, -p >= 0)
    if req.get("speed"):
        lib.espeak_SetParameter(PARAM_RATE, int(req["speed"]), 0)
    if req.get("pitch") is not None and int(req["pitch"]) >= 0:
        lib.espeak_SetParameter(PARAM_PITCH, int(req["pitch"]), 0)
    text = str(req["text"]).encode("utf-8")
    rc = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, SYNTH_FLAGS, None, None)
    if rc != 0:
        raise RuntimeError(f"espeak_Synth failed (error {rc})")
    lib.espeak_Synchronize()
    pcm = b"".join(chunks)
    return _header({"n_samples": len(pcm) // 2, "events": events}) + pcm


def _header(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj) + "\n").encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_to_end(fd: int) -> bytes:
    parts = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def serve() -> None:
    """The server's loop: initialise the library once, fork one child per request."""
    out = sys.stdout.buffer
    try:
        lib = _library()
    except OSError as e:
        out.write(_header({"error": f"libespeak-ng cannot be loaded ({e})", "missing": True}))
        out.flush()
        return
    sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                        INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
    if sample_rate <= 0:
        out.write(_header({"error": f"espeak_Initialize failed ({sample_rate})", "missing": True}))
        out.flush()
        return
    version = (lib.espeak_Info(None) or b"").decode("utf-8", "replace")
    out.write(_header({"ready": True, "sample_rate": sample_rate, "version": version}))
    out.flush()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one synthesis from the freshly initialised state, then exit
            os.close(r)
            try:
                data = _synthesize(lib, json.loads(line))
            except BaseException as e:  # noqa: BLE001 (the reason goes back to the caller)
                data = _header({"error": str(e) or type(e).__name__})
            _write_all(w, data)
            os._exit(0)
        os.close(w)
        data = _read_to_end(r)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            data = _header({"error": f"the espeak-ng synthesis process ended abnormally (wait status {status})"})
        out.write(data)
        out.flush()


# ---------------------------------------------------------------------------------------
# the caller's side
# ---------------------------------------------------------------------------------------
class _Server:
    """One server process and the bytes read from it so far."""

    def __init__(self, timeout_s: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buf = bytearray()
        self.ready = self._header(timeout_s)

    def request(self, req: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], bytes]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(_header(req))
        self.proc.stdin.flush()
        head = self._header(timeout_s)
        pcm = self._exact(2 * int(head.get("n_samples", 0)), timeout_s) if "n_samples" in head else b""
        return head, pcm

    def _fill(self, timeout_s: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], timeout_s)[0]:
            raise TimeoutError(f"espeak-ng gave no answer within {timeout_s:g} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise EOFError("the espeak-ng server process ended")
        self.buf += chunk

    def _header(self, timeout_s: float) -> dict[str, Any]:
        while b"\n" not in self.buf:
            self._fill(timeout_s)
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        return json.loads(line)

    def _exact(self, n: int, timeout_s: float) -> bytes:
        while len(self.buf) < n:
            self._fill(timeout_s)
        data, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return data

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


class EspeakEvents:
    """Synthesis with word and phoneme events; thread-safe (one server per concurrent caller).

    Args:
        timeout_s: longest one synthesis (or a server's start) may take.
    """

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = float(timeout_s)
        self._idle: queue.SimpleQueue[_Server] = queue.SimpleQueue()
        self.sample_rate: int | None = None
        self.version: str | None = None

    def speak(self, text: str, voice: str, *, speed: int | None = None,
              pitch: int | None = None) -> tuple[bytes, int, list[list[Any]]]:
        """Synthesise ``text`` (passed to the library as given) and return ``(pcm, sample_rate,
        events)``: 16-bit little-endian samples and the events in order, ``["word", position
        (1-based characters), length, sample]`` or ``["phoneme", sample, name]``.

        Raises:
            TTSNotInstalledError: libespeak-ng is missing.
            InputError: espeak-ng refused the request (an unknown voice), failed or timed out.
        """
        from twist.errors import InputError

        server = self._acquire()
        try:
            head, pcm = server.request({"text": text, "voice": voice, "speed": speed, "pitch": pitch}, self.timeout_s)
        except (TimeoutError, EOFError, OSError, ValueError) as e:
            server.close()
            raise InputError(f"espeak-ng (libespeak-ng) failed for voice {voice!r}: {e}") from None
        self._idle.put(server)
        if "error" in head:
            raise InputError(f"espeak-ng (libespeak-ng) failed for voice {voice!r}: {head['error']}")
        return pcm, int(server.ready["sample_rate"]), head["events"]

    def _acquire(self) -> _Server:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        server = _Server(self.timeout_s)
        if "error" in server.ready:
            server.close()
            from twist.bench.tts import TTSNotInstalledError

            raise TTSNotInstalledError(
                f"espeak-ng word timings need its C library: {server.ready['error']}; install the Debian "
                "package 'libespeak-ng1' (it comes with espeak-ng: apt-get install espeak-ng)")
        self.sample_rate, self.version = int(server.ready["sample_rate"]), str(server.ready["version"])
        return server

    def close(self) -> None:
        """End the idle servers (busy ones end when their caller's pipe closes)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (at interpreter exit; the servers end with our pipes anyway)
            pass


def engine_words(text: str, events: list[list[Any]], n_samples: int, sample_rate: int) -> list[dict[str, Any]]:
    """The spoken words of one synthesis: ``{"word", "char_start", "char_end", "start", "end",
    "phonemes"}`` (characters of ``text``, seconds; ``phonemes``: ``[name, start, end]`` of its
    sounding phonemes), in order.

    A phoneme lasts from its event to the next phoneme event (the last one to the end of the
    audio); a word spans its phonemes other than pauses (named ``_...``). Word events of length 0
    (espeak-ng emits them inside pauses) and words with no sounding phoneme are left out.
    espeak-ng speaks some pairs as one word (its multi-word entries: "of the", "to be"); the word
    event names the first, and the phonemes are those of both.
    """
    words: list[tuple[int, int]] = []
    phones: list[tuple[int, str, int | None]] = []
    current: int | None = None
    for ev in events:
        if ev[0] == "word":
            _, position, length, _ = ev
            if length > 0:
                words.append((int(position) - 1, int(length)))
                current = len(words) - 1
            else:
                current = None
        elif ev[0] == "phoneme":
            phones.append((int(ev[1]), str(ev[2]), current))
    sounds: dict[int, list[list[Any]]] = {}
    for k, (sample, name, w) in enumerate(phones):
        if w is None or name.startswith("_"):
            continue
        end = phones[k + 1][0] if k + 1 < len(phones) else n_samples
        sounds.setdefault(w, []).append([name, min(sample, n_samples) / sample_rate, min(end, n_samples) / sample_rate])
    out = []
    for w, (c, length) in enumerate(words):
        if w not in sounds:
            continue
        c0 = max(0, min(c, len(text)))
        c1 = min(len(text), c0 + length)
        ph = sounds[w]
        out.append({"word": text[c0:c1], "char_start": c0, "char_end": c1, "start": min(p[1] for p in ph),
                    "end": max(p[2] for p in ph), "phonemes": ph})
    return out


if __name__ == "__main__":
    serve()
