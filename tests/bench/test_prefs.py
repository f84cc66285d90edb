"""Spoken preference pairs (``twist-bench task=prefs``): the three input formats, bad rows named,
the repetition filter, one voice per pair, each segment synthesised and encoded once, seeds,
resume, the built-in set kept apart from the demo's stories, the CLI and its run identity."""

import csv
import json
import subprocess
import sys
import threading
from collections import Counter

import numpy as np
import pytest

from twist.bench.config import PrefsBuild
from twist.bench.prefs import build_prefs, builtin_pair_texts, read_pair_texts
from twist.bench.storycloze import segment_path
from twist.bench.tts import TTSBackend
from twist.pairs import PairDataset
from twist.rejects import RejectsLog

SWAG_HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
               "ending0", "ending1", "ending2", "ending3", "label"]  # fmt: skip
# (index, video, fold, sent1, sent2, gold-source, 4 endings, label): SWAG's own train.csv layout
SWAG_ROWS = [
    ("0", "anetv_a1", "101", "A man stands on a roof.", "He", "gold",
     "nails down a shingle.", "swims in the bowl.", "eats the ladder.", "sings to a cloud.", "0"),
    ("1", "anetv_a2", "102", "A girl holds a kite.", "The girl", "gen",
     "lets it fly.", "bakes the kite.", "reads the wind.", "paints the string.", "0"),
    ("2", "anetv_a3", "103", "A cook cuts onions.", "The cook", "gold",
     "drives the knife away.", "puts them in a pan.", "kicks the pan.", "sleeps on the board.", "1"),
    ("3", "anetv_a4", "104", "A dog runs to the door.", "The dog", "gold",
     "barks at the man.", "opens a book.", "flies away.", "writes a song.", "7"),  # bad label: rejected
    ("4", "anetv_a5", "105", "A boy kicks a ball.", "The ball", "gold",
     "melts into tea.", "folds in half.", "rolls into the goal.", "reads a map.", "2"),
]


def write_swag(path, rows=SWAG_ROWS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(SWAG_HEADER)
        for r in rows:
            w.writerow([r[0], r[1], r[2], f"{r[3]} {r[4]}", *r[3:]])
    return path


def write_pairs_csv(path, rows, header=("prompt", "chosen", "rejected")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


PAIRS_ROWS = [
    ("The sun came up", "and the birds began to sing.", "and the table ate a shoe."),
    ("She opened the door", "and walked into the room.", "and the door sang a song."),
    # planted: prompt + chosen repeat their bigrams, so Slam's filter (>= 0.3) drops it
    ("go to the shop go to the shop", "go to the shop go to the shop.", "and buy some bread."),
    ("He lost his keys", "and looked for them all day.", "and the keys flew to Paris."),
]


class CountingTTS(TTSBackend):
    """The espeak backend, recording every (text, voice) it is asked to speak."""

    def __init__(self, inner):
        super().__init__(inner.voices)
        self.name, self.inner, self.calls, self._lock = inner.name, inner, [], threading.Lock()

    def synthesize(self, text, voice=None):
        with self._lock:
            self.calls.append((text, voice))
        return self.inner.synthesize(text, voice)

    def synthesize_phonemes(self, phonemes, voice=None):
        raise AssertionError("pairs are text")


class CountingTokenizer:
    """A UnitTokenizer, recording the size of every batch it encodes."""

    def __init__(self, tok):
        self.tok, self.contract, self.sample_rate, self.batches = tok, tok.contract, tok.sample_rate, []

    def encode_batch(self, wavs):
        self.batches.append(len(wavs))
        return self.tok.encode_batch(wavs)

    def encode_file(self, path):
        raise AssertionError("the builder encodes in batches")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, espeak):
    """A log-mel tokenizer (K=12) fitted on a few espeak sentences, saved as a UnitTokenizer dir."""
    import torch

    from twist.tokenizer import UnitTokenizer
    from twist.tokenizer.kmeans import fit_kmeans
    from twist.tokenizer.logmel import LogMelEncoder

    enc = LogMelEncoder(n_mels=16)
    wavs = [espeak.synthesize(t) for t in ("A cat sat on the mat.", "Birds sing in the morning light.")]
    feats = torch.cat(enc.encode_batch(wavs)).numpy()
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    UnitTokenizer(enc, fit_kmeans(feats, 12, niter=5, seed=0)).save(out)
    return out


@pytest.fixture
def tokenizer(tokenizer_dir):
    from twist.tokenizer import UnitTokenizer

    return UnitTokenizer.load(tokenizer_dir, device="cpu")


def _build(csv_path, fmt, out, backend, tok, *, seed=0, strict=False, **settings):
    c = PrefsBuild(csv=str(csv_path), format=fmt, **settings)
    with RejectsLog(out.parent / f"{out.name}-rejects.jsonl", stage="bench", strict=strict) as rejects:
        rep = build_prefs(c, csv_path, out, backend, tok, seed=seed, workers=2, rejects=rejects, progress=False)
    return rep, RejectsLog.read(out.parent / f"{out.name}-rejects.jsonl")


def _rows(out):
    return [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]


def test_swag_builds_as_slam_builds_spokenswag_and_names_its_bad_row(espeak, tokenizer, tmp_path):
    swag = write_swag(tmp_path / "train.csv")
    out = tmp_path / "prefs"
    rep, rejects = _build(swag, "swag", out, espeak, tokenizer, n_voices=2)
    # row 1 is not gold: skipped, not a reject; row 3 has label 7: one line naming file and row
    assert [r["item"] for r in rejects] == ["train.csv:5 (3)"] and "label" in rejects[0]["reason"]
    assert rep["rows"]["not_gold"] == 1
    rows = {r["id"]: r for r in _rows(out)}
    assert sorted(rows) == ["0", "2", "4"]
    for r in SWAG_ROWS:
        if r[0] not in rows:
            continue
        got, endings, label = rows[r[0]], r[6:10], int(r[10])
        assert got["prompt_text"] == r[3]  # sent1
        assert got["chosen_text"] == f"{r[4]} {endings[label]}"  # sent2 + the gold ending
        wrong = {f"{r[4]} {e}" for i, e in enumerate(endings) if i != label}
        assert got["rejected_text"] in wrong  # sent2 + one wrong ending
        assert got["voice"] in espeak.voices[:2]
    ds = PairDataset(out, expected=tokenizer.contract)
    assert len(ds) == 3 and all(len(p.prompt) and len(p.chosen) and len(p.rejected) for p in ds)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["format"] == "swag" and meta["tts"] == {"engine": "espeak", "voices": espeak.voices[:2]}


def test_the_wrong_swag_ending_is_drawn_under_the_seed(tmp_path):
    swag = write_swag(tmp_path / "train.csv")
    draws = {s: {p.id: p.rejected for p in read_pair_texts(swag, "swag", seed=s)} for s in range(8)}
    assert draws[3] == {p.id: p.rejected for p in read_pair_texts(swag, "swag", seed=3)}
    assert len({tuple(sorted(d.items())) for d in draws.values()}) > 1


def test_storycloze_builds_with_the_four_sentences_as_prompt_and_names_its_bad_row(espeak, tokenizer, tmp_path,
                                                                                 helpers):
    rows = [*helpers.STORIES, ("s4", "Sam ran", "", "He fell", "He cried", "He got up", "He flew", "1")]
    sc = helpers.write_stories(tmp_path / "cloze.csv", rows=rows)
    out = tmp_path / "prefs"
    rep, rejects = _build(sc, "storycloze", out, espeak, tokenizer, voices=["en-us+f3"])
    assert [r["item"] for r in rejects] == ["cloze.csv:5 (s4)"] and "InputSentence2" in rejects[0]["reason"]
    got = {r["id"]: r for r in _rows(out)}
    assert sorted(got) == ["s1", "s2", "s3"]
    assert got["s2"]["prompt_text"] == "Ann got a cat It was small She fed it It grew big"
    assert (got["s2"]["chosen_text"], got["s2"]["rejected_text"]) == ("The cat was happy", "The cat ate a car")
    assert {r["voice"] for r in got.values()} == {"en-us+f3"}


def test_a_planted_repetitive_pair_is_filtered_and_logged(espeak, tokenizer, tmp_path):
    src = write_pairs_csv(tmp_path / "pairs.csv", PAIRS_ROWS)
    out = tmp_path / "prefs"
    rep, rejects = _build(src, "pairs", out, espeak, tokenizer, n_voices=1)
    assert rejects == []  # filtered is not rejected
    assert [r["id"] for r in _rows(out)] == ["row-2", "row-3", "row-5"]
    (dropped,) = [json.loads(x) for x in (out / "filtered.jsonl").read_text().splitlines()]
    assert dropped["id"] == "row-4" and dropped["item"] == "pairs.csv:4 (row-4)"
    assert "auto-BLEU" in dropped["reason"] and dropped["auto_bleu2"] >= 0.3
    assert rep["rows"]["filtered"] == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["filter"]["dropped"] == 1 and meta["filter"]["threshold"] == 0.3
    # the filter off keeps it
    _build(src, "pairs", tmp_path / "all", espeak, tokenizer, n_voices=1, repetition_filter=False)
    assert len(_rows(tmp_path / "all")) == 4 and (tmp_path / "all" / "filtered.jsonl").read_text() == ""


def test_bad_pairs_rows_are_named_and_strict_stops(espeak, tokenizer, tmp_path):
    rows = [*PAIRS_ROWS[:2], ("A prompt", "", "a rejected end."), ("A prompt", "the same end.", "The same end!")]
    src = write_pairs_csv(tmp_path / "pairs.csv", rows)
    rep, rejects = _build(src, "pairs", tmp_path / "prefs", espeak, tokenizer, n_voices=1)
    assert [r["item"] for r in rejects] == ["pairs.csv:4 (row-4)", "pairs.csv:5 (row-5)"]
    assert "empty chosen" in rejects[0]["reason"] and "same words" in rejects[1]["reason"]
    from twist.rejects import RejectedItemError

    with pytest.raises(RejectedItemError, match=r"pairs\.csv:4 \(row-4\): empty chosen"):
        _build(src, "pairs", tmp_path / "strict", espeak, tokenizer, n_voices=1, strict=True)


def test_each_distinct_segment_is_synthesised_and_encoded_once_in_its_pairs_voice(espeak, tokenizer, tmp_path):
    # six pairs share one prompt and two endings; two voices: the prompt is spoken at most twice
    rows = [("Once upon a time", "there was a king.", f"there was a {w}.") for w in
            ("frog", "cup", "hat", "sock", "frog", "cup")]  # fmt: skip
    src = write_pairs_csv(tmp_path / "pairs.csv", rows)
    tts, tok = CountingTTS(espeak), CountingTokenizer(tokenizer)
    out = tmp_path / "prefs"
    _build(src, "pairs", out, tts, tok, n_voices=2, repetition_filter=False)
    pairs = _rows(out)
    wanted = {(r[k + "_text"], r["voice"]) for r in pairs for k in ("prompt", "chosen", "rejected")}
    assert Counter(tts.calls) == dict.fromkeys(wanted, 1)  # every segment once, in its pair's voice
    assert len(wanted) < 3 * len(pairs)
    assert sum(tok.batches) == len(wanted) and max(tok.batches) > 1  # encoded once each, in batches
    for r in pairs:  # chosen and rejected in the prompt's voice: their recordings are that voice's
        for k in ("prompt", "chosen", "rejected"):
            assert segment_path(out / "_segments", r[k + "_text"], r["voice"]).is_file()
    # a rerun reuses every recording and every encoding, and writes the same bytes
    before = (out / "pairs.jsonl").read_bytes()
    tts.calls.clear()
    tok.batches.clear()
    _build(src, "pairs", out, tts, tok, n_voices=2, repetition_filter=False)
    assert tts.calls == [] and tok.batches == [] and (out / "pairs.jsonl").read_bytes() == before


def test_each_segment_is_deduplicated_on_its_own(espeak, tokenizer, tmp_path):
    from twist.units import dedup

    src = write_pairs_csv(tmp_path / "pairs.csv", PAIRS_ROWS[:2])
    out = tmp_path / "prefs"
    _build(src, "pairs", out, espeak, tokenizer, n_voices=1)
    assert tokenizer.contract.dedup
    for p in PairDataset(out):
        for k in ("prompt", "chosen", "rejected"):
            wav_units = tokenizer.encode_file(segment_path(out / "_segments", getattr(p, k + "_text"), p.voice))
            assert getattr(p, k).tolist() == dedup(wav_units)[0].tolist()


def test_builds_are_deterministic_under_a_seed(espeak, tokenizer, tmp_path):
    swag = write_swag(tmp_path / "train.csv")
    kw = dict(n_voices=3, valid=0.5)
    _build(swag, "swag", tmp_path / "a", espeak, tokenizer, seed=4, **kw)
    _build(swag, "swag", tmp_path / "b", espeak, tokenizer, seed=4, **kw)
    assert (tmp_path / "a" / "pairs.jsonl").read_bytes() == (tmp_path / "b" / "pairs.jsonl").read_bytes()
    others = set()
    for seed in range(5):
        _build(swag, "swag", tmp_path / f"s{seed}", espeak, tokenizer, seed=seed, **kw)
        others.add(tuple((r["voice"], r["split"], r["rejected_text"]) for r in _rows(tmp_path / f"s{seed}")))
    assert len(others) > 1  # the seed draws voices, splits and wrong endings


def test_the_builtin_set_shares_no_text_with_the_demo_stories():
    from twist.bench.packaged_text import read_sentences, words_of
    from twist.bench.storycloze import BUILTIN_STORIES, read_storycloze_csv

    pairs = builtin_pair_texts(400, seed=0)
    assert len(pairs) == 400 and len({p.id for p in pairs}) == 400
    stories = read_storycloze_csv(BUILTIN_STORIES)
    story_texts = [t for s in stories for t in (*s.context, s.right, s.wrong)]

    def trigrams(t):
        w = words_of(t)
        return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}

    story_grams = set().union(*(trigrams(t) for t in story_texts))
    story_words = [f" {' '.join(words_of(t))} " for t in story_texts]
    sentences = set(read_sentences())
    for p in pairs:
        assert f"{p.prompt} {p.chosen}" in sentences  # prompt + its true rest is a packaged sentence
        assert p.rejected != p.chosen
        for t in (p.prompt, p.chosen, p.rejected, f"{p.prompt} {p.chosen}"):
            assert not trigrams(t) & story_grams, t
            w = f" {' '.join(words_of(t))} "  # whole words: "there was a" is not inside "there was ants"
            assert not any(w in s or s in w for s in story_words), t
    assert builtin_pair_texts(400, seed=0) == pairs and builtin_pair_texts(400, seed=1) != pairs


def _cli(*args, timeout=180):
    cmd = [sys.executable, "-m", "twist.cli.bench", "progress=false", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_cli_builds_prefs_checks_inputs_first_and_keeps_its_identity(tokenizer_dir, tmp_path):
    swag = write_swag(tmp_path / "train.csv")
    out = tmp_path / "bench"
    base = ["task=prefs", f"prefs.csv={swag}", "prefs.format=swag", f"tokenizer_dir={tokenizer_dir}", f"out_dir={out}"]
    proc = _cli(*base)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from twist.tokenizer import UnitTokenizer

    contract = UnitTokenizer.load(tokenizer_dir, device="cpu").contract
    ds = PairDataset(out / "prefs", expected=contract, expected_name=f"tokenizer {tokenizer_dir}")
    assert len(ds) == 3
    assert [r["item"] for r in RejectsLog.read(out / "rejects.jsonl")] == ["train.csv:5 (3)"]
    # another prefs setting into the same dir is refused, naming it; storycloze settings are not compared
    proc = _cli(*base, "prefs.valid=0.5")
    assert proc.returncode == 2 and "prefs.valid" in proc.stderr
    # a missing tokenizer, a bad header: one line, nothing written
    proc = _cli("task=prefs", f"prefs.csv={swag}", "prefs.format=swag", f"out_dir={tmp_path / 'o1'}")
    assert proc.returncode == 2 and "tokenizer_dir" in proc.stderr and not (tmp_path / "o1").exists()
    bad = write_pairs_csv(tmp_path / "bad.csv", PAIRS_ROWS, header=("prompt", "chosen", "reject"))
    proc = _cli("task=prefs", f"prefs.csv={bad}", f"tokenizer_dir={tokenizer_dir}", f"out_dir={tmp_path / 'o2'}")
    assert proc.returncode == 2 and "'rejected'" in proc.stderr and not (tmp_path / "o2").exists()
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_builds_the_builtin_set_when_no_csv_is_given(tokenizer_dir, tmp_path):
    out = tmp_path / "bench"
    proc = _cli("task=prefs", f"tokenizer_dir={tokenizer_dir}", f"out_dir={out}", "prefs.limit=6", "prefs.n_voices=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ds = PairDataset(out / "prefs")
    assert len(ds) == 6 and len({p.voice for p in ds}) <= 2
    meta = json.loads((out / "prefs" / "meta.json").read_text())
    assert meta["source"]["builtin"] is True and (out / "inputs" / "prefs_pairs.csv").is_file()
    assert np.all([p.rejected_text != p.chosen_text for p in ds])
