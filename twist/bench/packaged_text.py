"""English text that ships in an installed package: Debian's ``fortunes-min``.

The demo's spoken corpus and the built-in sWUGGY word list both start from this text
(quotations and literature excerpts; installed by ``make install``, never committed here).
Sentences are cleaned and kept when they have 4-16 plain words, so espeak-ng reads them
without surprises; :func:`word_counts` counts their words the way the word list does.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from twist.errors import MissingInputError

FORTUNE_DIRS = ("/usr/share/games/fortunes",)
FORTUNE_FILES = ("fortunes", "literature", "riddles")
_OK = re.compile(r"[A-Za-z ,.;:'!?-]+")


def read_sentences(
    files: Sequence[str | Path] | None = None,
    *,
    min_words: int = 4,
    max_words: int = 16,
) -> list[str]:
    """Clean English sentences from fortune files, in file order, without duplicates.

    Raises:
        FileNotFoundError: none of the files exists; the message says which package to install.
    """
    if files is None:
        files = [Path(d) / f for d in FORTUNE_DIRS for f in FORTUNE_FILES]
    files = [Path(f) for f in files]
    existing = [f for f in files if f.is_file()]
    if not existing:
        raise MissingInputError(
            f"no text source found (looked for {[str(f) for f in files]}); "
            "install it with: apt-get install fortunes-min"
        )
    seen: set[str] = set()
    out: list[str] = []
    for f in existing:
        text = f.read_text(encoding="utf-8", errors="replace")
        for quote in text.split("\n%\n"):
            quote = re.sub(r"\s+", " ", quote).strip()
            quote = re.sub(r"\s--\s.*$", "", quote)  # attribution lines
            quote = re.sub(r"\b[QA]:\s*", "", quote)  # riddle markers
            for s in re.split(r"(?<=[.!?])\s+", quote):
                s = s.strip()
                n = len(s.split())
                if min_words <= n <= max_words and _OK.fullmatch(s) and s.lower() not in seen:
                    seen.add(s.lower())
                    out.append(s)
    return out


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words_of(text: str) -> list[str]:
    """Lower-case words of a sentence (letters, with one inner apostrophe allowed)."""
    return _WORD.findall(text.lower())


def word_counts(sentences: Iterable[str]) -> Counter:
    """How often each word occurs in ``sentences``."""
    c: Counter = Counter()
    for s in sentences:
        c.update(words_of(s))
    return c
