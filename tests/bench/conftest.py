"""Fixtures for the benchmark-builder tests: the espeak backend and tiny inputs."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

STORY_HEADER = (
    "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
    "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding"
)
# Short clauses without commas, so no sentence has an internal pause near 100 ms.
STORIES = [
    ("s1", "Tom made tea", "He drank it", "It was warm", "He felt good", "He slept well", "He ran to Mars", "1"),
    ("s2", "Ann got a cat", "It was small", "She fed it", "It grew big", "The cat ate a car", "The cat was happy", "2"),
    ("s3", "Bob lost a key", "He looked for it", "He found it", "He was glad", "He went home", "He ate the key", "1"),
]


def write_stories(path, rows=STORIES, header=STORY_HEADER):
    lines = [header] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def silent_runs(wav: np.ndarray, sr: int = 16000, threshold: float = 2e-3, min_ms: float = 60.0) -> list[float]:
    """Lengths (ms) of runs of samples quieter than ``threshold`` lasting at least ``min_ms``,
    ignoring the runs that touch either end of the signal."""
    quiet = np.abs(wav) <= threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    out = []
    for start, stop in zip(edges[::2], edges[1::2]):
        if start == 0 or stop == len(wav):
            continue
        ms = (stop - start) * 1000.0 / sr
        if ms >= min_ms:
            out.append(ms)
    return out


@pytest.fixture
def helpers():
    """Shared helpers (test modules cannot import conftest under --import-mode=importlib)."""
    return SimpleNamespace(silent_runs=silent_runs, write_stories=write_stories, STORIES=STORIES, STORY_HEADER=STORY_HEADER)


@pytest.fixture(scope="session")
def espeak():
    # No skip: espeak-ng is a required system package (make install); a missing one fails
    # here with TTSNotInstalledError naming the package.
    from twist.bench.tts import get_backend

    return get_backend("espeak")


@pytest.fixture
def stories_csv(tmp_path):
    return write_stories(tmp_path / "stories.csv")


@pytest.fixture
def blimp_jsonl(tmp_path):
    rows = [
        {"sentence_good": "The dog runs.", "sentence_bad": "The dog run.", "UID": "sv_agr", "field": "morphology", "linguistics_term": "agreement"},
        {"sentence_good": "The cats run.", "sentence_bad": "The cats runs.", "UID": "sv_agr", "field": "morphology", "linguistics_term": "agreement"},
        {"sentence_good": "She saw herself.", "sentence_bad": "She saw himself.", "UID": "anaphor", "field": "morphology", "linguistics_term": "anaphor_agreement"},
        {"sentence_good": "He saw himself.", "sentence_bad": "He saw herself.", "UID": "anaphor", "field": "morphology", "linguistics_term": "anaphor_agreement"},
    ]
    p = tmp_path / "blimp.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p
