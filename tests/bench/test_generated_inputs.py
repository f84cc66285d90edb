"""The built-in benchmark inputs: generated deterministically, in the sizes asked for, length-balanced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from twist.bench.build import ending_length_bias
from twist.bench.minimal_pairs import PARADIGMS, generate_minimal_pairs
from twist.bench.storycloze import BUILTIN_STORIES, read_storycloze_csv
from twist.bench.word_list import balanced_words

FORTUNES = Path("/usr/share/games/fortunes/fortunes")


def test_minimal_pairs_are_seeded_counted_and_minimal():
    rows = generate_minimal_pairs(45, seed=0)
    assert rows == generate_minimal_pairs(45, seed=0)
    assert rows != generate_minimal_pairs(45, seed=1)
    assert len(rows) == 45 * len(PARADIGMS) >= 500
    per_uid = {}
    for r in rows:
        per_uid.setdefault(r["UID"], []).append(r)
    assert len(per_uid) >= 10 and {len(v) for v in per_uid.values()} == {45}
    assert len({r["linguistics_term"] for r in rows}) >= 7  # agreement, anaphora, argument structure, ...
    for uid, rs in per_uid.items():
        assert len({r["sentence_good"] for r in rs}) == len(rs), uid  # no repeated item
    for r in rows:
        good, bad = r["sentence_good"].split(), r["sentence_bad"].split()
        # a minimal pair: same length, exactly one word differs
        assert len(good) == len(bad) and sum(a != b for a, b in zip(good, bad)) == 1, r


def test_some_pairs_say_what_their_paradigm_claims():
    rows = {r["UID"]: r for r in generate_minimal_pairs(1, seed=0)}
    r = rows["anaphor_gender_agreement"]
    assert {r["sentence_good"].split()[-1], r["sentence_bad"].split()[-1]} == {"herself.", "himself."}
    r = rows["wh_vs_that_with_gap"]
    assert " what " in r["sentence_good"] and " that " in r["sentence_bad"]


def test_balanced_words_fill_each_band_equally_then_spill_over():
    pool = [f"w{i:03d}" for i in range(100)]
    counts = {w: (0 if i < 50 else 2 if i < 90 else 30) for i, w in enumerate(pool)}  # oov 50, 1-5 40, 20-100 10
    got = balanced_words(pool, counts, 60, seed=3)
    assert got == balanced_words(pool, counts, 60, seed=3) and got != balanced_words(pool, counts, 60, seed=4)
    assert len(got) == 60 and got == sorted(got)
    bands = [0 if c == 0 else 1 if c == 2 else 2 for _, c in got]
    assert np.bincount(bands).tolist() == [25, 25, 10]  # the short band gives its share to the others
    assert len(balanced_words(pool, counts, 1000)) == 100  # asks for more than there is: everything
    assert all(c == counts[w] for w, c in got)


@pytest.mark.skipif(not FORTUNES.exists(), reason="Debian fortunes-min not installed")
def test_builtin_word_list_is_seeded_big_and_fills_in_vocab(tmp_path):
    from twist.bench.packaged_text import read_sentences, word_counts
    from twist.bench.word_list import write_builtin_words

    sentences = read_sentences()
    heard = dict(word_counts(sentences[: len(sentences) * 3 // 4]))  # what a model "trained on"
    bands = write_builtin_words(tmp_path / "a.txt", 600, counts=heard, seed=0)
    write_builtin_words(tmp_path / "b.txt", 600, counts=heard, seed=0)
    write_builtin_words(tmp_path / "c.txt", 600, counts=heard, seed=1)
    a = (tmp_path / "a.txt").read_text()
    assert a == (tmp_path / "b.txt").read_text() and a != (tmp_path / "c.txt").read_text()
    rows = [line.split() for line in a.splitlines() if not line.startswith("#")]
    assert len(rows) == sum(bands.values()) == 600
    assert bands["oov"] >= 100 and sum(n for b, n in bands.items() if b != "oov") >= 300
    assert all(int(c) == heard.get(w, 0) for w, c in rows)


def test_builtin_stories_are_many_with_endings_of_equal_length():
    stories = read_storycloze_csv(BUILTIN_STORIES)
    assert len(stories) >= 100 and len({s.id for s in stories}) == len(stories)
    assert len({s.right for s in stories}) == len(stories)  # tSC negatives are other stories' endings
    for s in stories:
        assert s.right != s.wrong and len(s.right.split()) == len(s.wrong.split()), s.id
    # the right ending is not always in the same column
    import csv

    with open(BUILTIN_STORIES, newline="") as f:
        answers = [row["AnswerRightEnding"] for row in csv.DictReader(f)]
    assert abs(answers.count("1") - answers.count("2")) <= 1


def test_ending_length_bias_is_measured_on_the_audio(tmp_path):
    import soundfile as sf

    (tmp_path / "wav").mkdir()
    pairs = []
    for i, (pos, neg) in enumerate([(1.0, 0.5), (2.0, 2.25), (1.5, 1.0)]):
        sf.write(tmp_path / "wav" / f"{i}_pos.wav", np.zeros(int(pos * 16000), np.float32), 16000)
        sf.write(tmp_path / "wav" / f"{i}_neg.wav", np.zeros(int(neg * 16000), np.float32), 16000)
        pairs.append({"id": str(i), "positive": f"wav/{i}_pos.wav", "negative": f"wav/{i}_neg.wav"})
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    got = ending_length_bias(tmp_path)
    diffs = np.array([0.5, -0.25, 0.5])
    assert got["pairs"] == 3 and got["positive_longer"] == 2 and got["negative_longer"] == 1
    assert got["mean_seconds"] == pytest.approx(diffs.mean(), abs=1e-4)
    assert got["sd_seconds"] == pytest.approx(diffs.std(ddof=1), abs=1e-4)
