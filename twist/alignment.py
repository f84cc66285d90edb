"""Word alignments: when each word of an utterance is spoken, and which units that is.

Speech-text interleaving (SpiritLM, Nguyen et al. 2024; SIMS, Maimon et al. 2025) switches
between text and speech at word boundaries, so it needs each word's start and end in the audio
and, from them, the word's span in the utterance's units. This module holds:

* **the word-times file** ``<audio>.words.json`` that twist writes beside audio it synthesised
  (the demo corpus, twist-bench's StoryCloze): the words the TTS engine reported for that very
  audio, with the SHA-256 of the audio they belong to (:func:`write_word_times`,
  :func:`read_word_times`);
* **transcript words**: an utterance's words are its transcript's whitespace tokens as written
  (``"Hello,"`` keeps its comma, so the text of any run of words is the transcript's own text);
  timed words from an engine (by character position, :func:`time_tokens_from_engine`) or from a
  recogniser (by an edit-distance alignment of normalised words, :func:`match_transcript`) give
  them their times; a word neither gives a time is placed between its neighbours and marked;
* **word times to unit positions** through the cumulative durations of deduplicated units
  (:func:`word_unit_spans`), the rule Slam's interleaving uses, with its rounding written down.

The alignment records that ``twist-tokenize align=tts|whisper`` stores next to the units, and
the aligners that make them, are in :mod:`twist.tokenizer.aligners`; the formats are described
in docs/contracts.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twist.errors import InputError

WORD_TIMES_FORMAT = "twist-word-times"
WORD_TIMES_VERSION = 1
WORD_TIMES_SUFFIX = ".words.json"
HOW = ("timed", "substituted", "split", "interpolated")
_DECIMALS = 5  # 10 microseconds: below a sample at 22.05 kHz, far below a unit frame


class AlignmentRejected(InputError):
    """An utterance that cannot be aligned; the message is its reason in the rejects log."""


# ---------------------------------------------------------------------------------------
# word times -> unit positions
# ---------------------------------------------------------------------------------------
def word_unit_spans(
    durations: Sequence[int] | np.ndarray | None,
    frame_rate: float,
    times: Sequence[tuple[float, float]] | np.ndarray,
    *,
    n_units: int | None = None,
) -> np.ndarray:
    """Each word's ``[first unit, end unit)`` in an utterance's (deduplicated) units.

    Unit ``k`` holds frames ``[C_k, C_{k+1})``, ``C`` the running sum of ``durations`` from
    ``C_0 = 0``, and frame ``f`` holds the time ``[f / frame_rate, (f + 1) / frame_rate)``. A time
    ``t`` falls in frame ``floor(t * frame_rate)`` (within 1e-6 of a frame edge counts as on the
    edge, so 0.06 s at 50 Hz is frame 3 although ``0.06 * 50`` is 2.999... in floating point) and so
    in the unit holding that frame. A boundary is placed at the start of the unit it falls in: that
    unit belongs to what follows the boundary. A word ``(start, end)`` gets ``[u(start), u(end))``,
    so consecutive words (one's end the next one's start) tile the units with no gap and no
    overlap, and a word that lies inside a single unit gets an empty span. Times before 0 fall in
    unit 0; times at or after the end of the last frame give the number of units.

    Args:
        durations: frames per unit (the unit dataset's durations, dedup on); ``None`` when every
            unit is one frame (dedup off), then ``n_units`` is required.
        frame_rate: frames per second before dedup (the unit contract's ``frame_rate``).
        times: ``(start, end)`` in seconds per word.

    Returns:
        an int64 array of shape ``(n_words, 2)``.
    """
    if durations is None:
        if n_units is None:
            raise InputError("word_unit_spans: give the durations, or n_units when every unit is one frame")
        d = np.ones(int(n_units), dtype=np.int64)
    else:
        d = np.asarray(durations, dtype=np.int64).reshape(-1)
        if d.size and d.min() < 1:
            raise InputError(f"word_unit_spans: durations must be >= 1 frame, got {int(d.min())}")
    t = np.asarray(times, dtype=np.float64).reshape(-1, 2)
    frames = np.floor(t * float(frame_rate) + 1e-6).astype(np.int64)
    ends = np.cumsum(d)  # unit k ends before frame ends[k]
    return np.searchsorted(ends, frames, side="right").astype(np.int64)  # units that end at or before f


# ---------------------------------------------------------------------------------------
# transcript words and their times
# ---------------------------------------------------------------------------------------
def transcript_tokens(text: str) -> list[tuple[str, int, int]]:
    """The transcript's words as written: ``(word, char_start, char_end)`` per whitespace token."""
    return [(m.group(0), m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def time_tokens_from_engine(
    text: str, engine_words: Sequence[Mapping[str, Any]], duration: float
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Times for the words of ``text`` from the words a TTS engine reported while speaking it.

    An engine word belongs to the first transcript word that ends after its ``char_start`` (the
    engine's words are in text order, so the assignment never goes back): espeak-ng reports a
    word at the space before it at times, and one written word can be several spoken ones
    (``3:45``). A transcript word spans its engine words (the first start to the last end).

    espeak-ng speaks some pairs as one word ("of the", "to be", "in a": its multi-word entries)
    and reports only the first. The words it folded into the word before are ``split``: that
    engine word's phonemes are shared among the words it spoke, in proportion to their letters
    (at least one phoneme each), the first keeping its start. Any other word without an engine
    word is interpolated.

    Returns:
        ``(words, counts)``: ``{"word", "start", "end", "how"}`` per transcript word, and how
        many words are ``timed`` / ``substituted`` (always 0 here) / ``split`` / ``interpolated``.

    Raises:
        AlignmentRejected: no word got a time.
    """
    tokens = transcript_tokens(text)
    spoken: list[list[Mapping[str, Any]]] = [[] for _ in tokens]
    k = 0
    for w in engine_words:
        c = int(w["char_start"])
        while k < len(tokens) - 1 and tokens[k][2] <= c:
            k += 1
        if tokens:
            spoken[k].append(w)
    parts: list[list[tuple[float, float, str]]] = [
        [(float(w["start"]), float(w["end"]), "timed") for w in ws] for ws in spoken]
    k = 1
    while k < len(tokens):
        if spoken[k] or not spoken[k - 1]:
            k += 1
            continue
        j = k
        while j < len(tokens) and not spoken[j]:
            j += 1
        _split_folded(tokens, spoken[k - 1][-1], k - 1, range(k, j), parts)
        k = j
    return _finish(tokens, parts, duration, what="the engine reported")


def _letters(word: str) -> int:
    return sum(ch.isalnum() for ch in word)


def _split_folded(tokens: Sequence[tuple[str, int, int]], engine_word: Mapping[str, Any], owner: int,
                  run: range, parts: list[list[tuple[float, float, str]]]) -> None:
    """Share ``engine_word``'s phonemes between its transcript word ``owner`` and the words of
    ``run`` it also spoke (those with letters), by letters; nothing without enough phonemes."""
    phonemes = list(engine_word.get("phonemes") or [])
    takers = [owner] + [t for t in run if _letters(tokens[t][0])]
    if len(takers) < 2 or len(phonemes) < len(takers):
        return
    letters = [max(1, _letters(tokens[t][0])) for t in takers]
    total, n = sum(letters), len(phonemes)
    cuts, acc = [0], 0
    for i, m in enumerate(letters[:-1]):
        acc += m
        cut = max(round(n * acc / total), cuts[-1] + 1)
        cuts.append(min(cut, n - (len(letters) - 1 - i)))
    cuts.append(n)
    for i, t in enumerate(takers):
        start, end = float(phonemes[cuts[i]][1]), float(phonemes[cuts[i + 1] - 1][2])
        if i == 0:
            first, _, how = parts[owner][-1]
            parts[owner][-1] = (first, end, how)
        else:
            parts[t] = [(start, end, "split")]


def match_transcript(
    text: str, recognised: Sequence[tuple[str, float, float]], duration: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Times for the words of ``text`` from recognised words (e.g. Whisper's word timestamps).

    Both sides are normalised (:func:`twist.asr.normalize_text`: case, punctuation, hyphens
    split) and aligned word by word by edit distance (substitution, deletion and insertion each
    cost 1; among equal alignments a match is preferred, then a substitution). A transcript word
    takes the times of the recognised words aligned to it: ``timed`` when they are the same
    words, ``substituted`` when another word was recognised in its place; one with nothing aligned
    (deleted) is ``interpolated`` between its neighbours. Recognised words aligned to nothing
    (inserted) are dropped.

    Returns:
        ``(words, stats)``; ``stats``: ``recognised`` (the recognised text), ``edits``
        (``substituted``, ``deleted``, ``inserted``: normalised words), ``mismatches`` (their sum)
        and ``counts`` (transcript words by ``how``).

    Raises:
        AlignmentRejected: nothing was recognised, or no recognised word equals a transcript word.
    """
    from twist.asr import normalize_text

    tokens = transcript_tokens(text)
    ref: list[tuple[str, int]] = [(n, i) for i, (tok, _, _) in enumerate(tokens) for n in normalize_text(tok).split()]
    hyp: list[tuple[str, float, float]] = [(n, float(s), float(e)) for word, s, e in recognised
                                           for n in normalize_text(word).split()]
    heard = " ".join(str(w).strip() for w, _, _ in recognised).strip()
    if not hyp:
        raise AlignmentRejected("Whisper recognised no words" + (f" (it wrote {heard!r})" if heard else ""))
    ops = _edit_alignment([r for r, _ in ref], [h for h, _, _ in hyp])
    parts: list[list[tuple[float, float, str]]] = [[] for _ in tokens]
    edits = {"substituted": 0, "deleted": 0, "inserted": 0}
    for op, i, j in ops:
        if op == "insert":
            edits["inserted"] += 1
        elif op == "delete":
            edits["deleted"] += 1
        else:
            edits["substituted"] += op == "substitute"
            parts[ref[i][1]].append((hyp[j][1], hyp[j][2], "timed" if op == "match" else "substituted"))
    if not any(op == "match" for op, _, _ in ops):
        raise AlignmentRejected(f"none of the {len(ref)} transcript words was recognised (Whisper heard {heard[:120]!r})")
    words, counts = _finish(tokens, parts, duration, what="was recognised")
    return words, {"recognised": heard, "edits": edits, "mismatches": sum(edits.values()), "counts": counts}


def _edit_alignment(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, int, int]]:
    """The operations of a minimum edit-distance alignment: ``(op, ref index, hyp index)``, op one
    of ``match``, ``substitute``, ``delete`` (ref word unaligned, hyp index -1) and ``insert``."""
    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]), cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    ops: list[tuple[str, int, int]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("match" if ref[i - 1] == hyp[j - 1] else "substitute", i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            ops.append(("delete", i - 1, -1))
            i -= 1
        else:
            ops.append(("insert", -1, j - 1))
            j -= 1
    return ops[::-1]


def _finish(tokens: Sequence[tuple[str, int, int]], parts: Sequence[Sequence[tuple[float, float, str]]],
            duration: float, *, what: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Each token's times from its timed parts; untimed tokens interpolated; clipped to the audio."""
    duration = max(0.0, float(duration))
    words: list[dict[str, Any]] = []
    for (tok, _, _), ps in zip(tokens, parts):
        if ps:
            hows = {h for _, _, h in ps}
            how = hows.pop() if len(hows) == 1 else "substituted"
            start = min(max(0.0, min(s for s, _, _ in ps)), duration)
            end = min(max(start, max(e for _, e, _ in ps)), duration)
            words.append({"word": tok, "start": start, "end": end, "how": how})
        else:
            words.append({"word": tok, "start": None, "end": None, "how": "interpolated"})
    if not any(w["start"] is not None for w in words):
        raise AlignmentRejected(f"no word of the transcript got a time ({len(tokens)} words; nothing {what})")
    _interpolate(words, duration)
    for w in words:
        w["start"], w["end"] = round(w["start"], _DECIMALS), round(w["end"], _DECIMALS)
    counts = {h: sum(w["how"] == h for w in words) for h in HOW}
    return words, counts


def _interpolate(words: list[dict[str, Any]], duration: float) -> None:
    """Runs of untimed words share the gap between the timed words around them equally (the
    audio's start or end where there is none); a negative gap collapses to its start."""
    i = 0
    while i < len(words):
        if words[i]["start"] is not None:
            i += 1
            continue
        j = i
        while j < len(words) and words[j]["start"] is None:
            j += 1
        left = words[i - 1]["end"] if i > 0 else 0.0
        right = words[j]["start"] if j < len(words) else duration
        step = max(0.0, right - left) / (j - i)
        for k in range(i, j):
            words[k]["start"], words[k]["end"] = left + step * (k - i), left + step * (k - i + 1)
        i = j


# ---------------------------------------------------------------------------------------
# the word-times file beside a synthesised wav
# ---------------------------------------------------------------------------------------
def word_times_path(audio: str | Path) -> Path:
    """Where the word times of ``audio`` are: ``<audio file name>.words.json`` beside it."""
    audio = Path(audio)
    return audio.with_name(audio.name + WORD_TIMES_SUFFIX)


def write_word_times(
    audio: str | Path,
    *,
    text: str,
    words: Sequence[Mapping[str, Any]],
    duration: float,
    sample_rate: int,
    engine: Mapping[str, Any],
) -> Path:
    """Write ``<audio>.words.json`` for the audio file as it is on disk now (its SHA-256 is recorded,
    so a reader can tell timings that belong to other audio). Atomic.

    Args:
        text: the text the engine spoke (character offsets in ``words`` index it).
        words: ``{"word", "char_start", "char_end", "start", "end"}`` per engine word, in seconds,
            optionally with ``phonemes``: ``[name, start, end]`` of its sounding phonemes.
        engine: what spoke: engine name and version, voice(s), settings (free form).
    """
    from twist.atomic import atomic_write_json
    from twist.contract import sha256_file

    audio = Path(audio)
    rec = {
        "format": WORD_TIMES_FORMAT,
        "version": WORD_TIMES_VERSION,
        "audio": audio.name,
        "audio_sha256": sha256_file(audio),
        "duration": round(float(duration), _DECIMALS),
        "sample_rate": int(sample_rate),
        "engine": dict(engine),
        "text": text,
        "words": [_engine_word(w) for w in words],
    }
    _check_word_times(rec, str(word_times_path(audio)))
    path = word_times_path(audio)
    atomic_write_json(path, rec, indent=None)
    return path


def moved_words(words: Sequence[Mapping[str, Any]], *, by: float = 0.0, chars: int = 0,
                clip: tuple[float, float] | None = None) -> list[dict[str, Any]]:
    """Engine words (with their phonemes) as they lie in other audio and text: times clipped to
    ``clip`` (the part of the audio kept), then moved by ``by`` seconds; characters by ``chars``."""

    def move(t: float) -> float:
        if clip is not None:
            t = min(max(float(t), clip[0]), clip[1])
        return float(t) + by

    out = []
    for w in words:
        m = {**w, "char_start": int(w["char_start"]) + chars, "char_end": int(w["char_end"]) + chars,
             "start": move(w["start"]), "end": move(w["end"])}
        if w.get("phonemes") is not None:
            m["phonemes"] = [[n, move(a), move(b)] for n, a, b in w["phonemes"]]
        out.append(m)
    return out


def _engine_word(w: Mapping[str, Any]) -> dict[str, Any]:
    out = {"word": str(w["word"]), "char_start": int(w["char_start"]), "char_end": int(w["char_end"]),
           "start": round(float(w["start"]), _DECIMALS), "end": round(float(w["end"]), _DECIMALS)}
    if w.get("phonemes") is not None:
        out["phonemes"] = [[str(n), round(float(a), _DECIMALS), round(float(b), _DECIMALS)] for n, a, b in w["phonemes"]]
    return out


def read_word_times(path: str | Path) -> dict[str, Any]:
    """Read and check a ``.words.json`` file.

    Raises:
        InputError: naming the file and what is wrong (format, a missing field, a word that ends
            before it starts or lies outside the audio).
    """
    from twist.atomic import read_json_object

    rec = read_json_object(path, what="word-times file")
    _check_word_times(rec, str(path))
    return rec


def _check_word_times(rec: Mapping[str, Any], where: str) -> None:
    if rec.get("format") != WORD_TIMES_FORMAT or rec.get("version") != WORD_TIMES_VERSION:
        raise InputError(f"{where}: format is {rec.get('format')!r} version {rec.get('version')!r}, expected "
                         f"{WORD_TIMES_FORMAT!r} version {WORD_TIMES_VERSION}")
    for key in ("text", "duration", "words"):
        if key not in rec:
            raise InputError(f"{where}: no {key!r} field")
    duration = float(rec["duration"])
    n = len(str(rec["text"]))
    for i, w in enumerate(rec["words"]):
        try:
            s, e, cs = float(w["start"]), float(w["end"]), int(w["char_start"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where}: word {i} needs start, end and char_start (got {w!r})") from None
        if not (math.isfinite(s) and math.isfinite(e)) or e < s:
            raise InputError(f"{where}: word {i} ({w.get('word')!r}) has an end before its start ({s} > {e})")
        if s < 0 or e > duration + 1e-3 or not 0 <= cs <= n:
            raise InputError(f"{where}: word {i} ({w.get('word')!r}) lies outside the audio or the text")


def dumps_record(rec: Mapping[str, Any]) -> str:
    """One alignment record as its JSONL line (no newline)."""
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
