"""sWUGGY-style builder: non-word generation rules, frequency column, layout, eval compatibility."""

import random

import pytest

from twist.bench import wuggy as W
from twist.bench.layout import LEXICAL_COLUMNS, read_gold_csv


def _tiny_lexicon():
    words = {
        "cat": [["K", "AE1", "T"]], "bat": [["B", "AE1", "T"]], "cap": [["K", "AE1", "P"]],
        "kit": [["K", "IH1", "T"]], "pit": [["P", "IH1", "T"]], "tap": [["T", "AE1", "P"]],
        "pat": [["P", "AE1", "T"]], "kip": [["K", "IH1", "P"]], "bit": [["B", "IH1", "T"]],
        "gats": [["G", "AE1", "T", "S"]],  # makes "G AE T" attested everywhere, yet not a word
    }  # fmt: skip
    return W.Lexicon.from_entries(words)


def test_nonword_rules_on_a_tiny_lexicon():
    lex = _tiny_lexicon()
    nw = W.make_nonword(["K", "AE1", "T"], lex, random.Random(0), min_ngram_count=1)
    # every other same-class substitution is a real word or has an unattested trigram
    assert nw == ("G", "AE1", "T")
    b = W.base_phones(nw)
    assert b not in lex.real  # not a word
    assert lex.plausible(b, 1)  # every bigram/trigram attested
    assert len(nw) == 3 and sum(x != y for x, y in zip(nw, ["K", "AE1", "T"])) == 1
    for x, y in zip(W.base_phones(nw), ["K", "AE", "T"]):
        assert W._CLASS_OF[x] == W._CLASS_OF[y]  # same class in every position
    assert nw[1][-1] == "1"  # stress kept
    # nothing valid at all -> None, never a real word
    assert W.make_nonword(["K", "AE1", "T"], lex, random.Random(0), min_ngram_count=99) is None


def test_nonwords_from_cmudict_are_plausible_unique_and_seeded():
    lex = W.cmudict_lexicon()
    words = ["apple", "basket", "bread", "bridge", "candle", "castle", "chair", "cloud", "coffee", "dinner",
             "doctor", "dragon", "finger", "flower", "forest", "garden", "glass", "rabbit", "spoon", "window"]
    out = [W.make_nonword(lex.prons[w], lex, random.Random(7)) for w in words]
    again = [W.make_nonword(lex.prons[w], lex, random.Random(7)) for w in words]
    assert out == again
    made = [n for n in out if n is not None]
    assert len(made) >= 0.9 * len(words)
    for w, n in zip(words, out):
        if n is None:
            continue
        b = W.base_phones(n)
        assert b not in lex.real and lex.plausible(b, 3)
        assert len(n) == len(lex.prons[w])
        assert W.base_phones(n) != W.base_phones(lex.prons[w])


def test_frequency_band_edges():
    edges = (1, 5, 20, 100)
    assert [W.frequency_band(c, edges) for c in (None, 0, 1, 4.9, 5, 99, 100, 1e6)] == [
        "oov", "oov", "1-5", "1-5", "5-20", "20-100", "100+", "100+"]  # fmt: skip


def test_build_layout_frequency_and_eval_reads_it(espeak, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("# test words\nrabbit\ncandle\nwindow\nzzzqx\nsummer\ntiger\n")
    freq = tmp_path / "freq.txt"
    freq.write_text("rabbit 3\ncandle 12\nwindow 250\nsummer 40\n")  # tiger missing -> 0 (oov)
    voices = espeak.voices[:2]
    from twist.rejects import RejectsLog

    with RejectsLog(tmp_path / "rej.jsonl", stage="bench") as rej:
        rep = W.build_wuggy(words, tmp_path / "out", espeak, voices=voices, frequency_list=freq, seed=0,
                            rejects=rej, progress=False)  # fmt: skip
    assert rep["pairs"] == 5 and rep["failed_ids"] == 0
    assert any(r["item"] == "zzzqx" for r in W.RejectsLog.read(tmp_path / "rej.jsonl"))
    rows = []
    for split in ("dev", "test"):
        gold = tmp_path / "out" / "lexical" / split / "gold.csv"
        assert gold.read_text().splitlines()[0] == ",".join(LEXICAL_COLUMNS)
        rs = read_gold_csv(gold, LEXICAL_COLUMNS)
        for r in rs:
            assert (gold.parent / f"{r['filename']}.wav").is_file()
        rows += rs
    assert len(rows) == 5 * 2 * 2
    words_rows = {r["word"]: r for r in rows if r["correct"] == "1"}
    assert words_rows["window"]["frequency"] == "250" and words_rows["tiger"]["frequency"] == "0"
    assert words_rows["rabbit"]["phones"] == "R AE B AH T" and words_rows["rabbit"]["length"] == "5"
    for r in rows:  # a non-word row carries its word's id, frequency and a same-length phone string
        twin = next(x for x in rows if (x["id"], x["voice"]) == (r["id"], r["voice"]) and x["correct"] != r["correct"])
        assert twin["frequency"] == r["frequency"] and twin["length"] == r["length"]

    from twist.eval.zr2021 import aggregate_lexical, load_split, make_pairs

    pairs = []
    for split in ("dev", "test"):
        pairs += make_pairs(load_split(tmp_path / "out" / "lexical", split, "lexical"))
    assert len(pairs) == 10
    agg = aggregate_lexical(pairs, [1.0] * len(pairs))
    assert agg is not None


def test_no_frequency_list_writes_frequency_zero(espeak, tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("rabbit\ncandle\n")
    W.build_wuggy(words, tmp_path / "o", espeak, seed=1, progress=False)
    rows = [r for s in ("dev", "test") for r in read_gold_csv(tmp_path / "o" / "lexical" / s / "gold.csv", LEXICAL_COLUMNS)]
    assert len(rows) == 4 and {r["frequency"] for r in rows} == {"0"}  # the official scorer needs an integer


def test_bad_word_list_line_is_named(tmp_path):
    p = tmp_path / "w.txt"
    p.write_text("apple\nbanana split 12 x\n")
    with pytest.raises(ValueError, match=r"w.txt:2"):
        W.read_word_list(p)


def test_large_frequency_counts_are_written_exactly(tmp_path):
    # gold.csv's frequency is the word's count; "%g" would write 1234567 as 1.23457e+06
    import numpy as np

    from twist.bench.tts import TTSBackend

    class Beep(TTSBackend):
        name = "beep"

        def synthesize(self, text, voice=None):
            return np.full(1600, 0.1, np.float32)

        def synthesize_phonemes(self, phonemes, voice=None):
            return np.full(1600, 0.1, np.float32)

    lex = W.Lexicon.from_entries({w: [p.split()] for w, p in {
        "cat": "K AE1 T", "bad": "B AE1 D", "cadet": "K AE1 D AH0 T"}.items()})  # non-word: K AE D
    words = tmp_path / "words.txt"
    words.write_text("cat 1234567\n")
    W.build_wuggy(words, tmp_path / "out", Beep(["v"]), lexicon=lex, min_ngram_count=1, dev_fraction=1.0,
                  progress=False, workers=1)
    rows = read_gold_csv(tmp_path / "out" / "lexical" / "dev" / "gold.csv", LEXICAL_COLUMNS)
    assert rows and {r["frequency"] for r in rows} == {"1234567"}
