"""Word alignments: word times to unit spans, transcript matching, the word-times file."""

import json

import numpy as np
import pytest

from twist import alignment as A
from twist.errors import InputError


# ---------------------------------------------------------------------------------------
# word times -> unit positions
# ---------------------------------------------------------------------------------------
def test_word_unit_spans_on_a_hand_made_case():
    # durations [2, 1, 3, 2] at 50 Hz: unit 0 = frames 0-1 = [0, 40) ms, unit 1 = frame 2 = [40, 60) ms,
    # unit 2 = frames 3-5 = [60, 120) ms, unit 3 = frames 6-7 = [120, 160) ms
    durations = [2, 1, 3, 2]
    words = [
        (0.000, 0.050),  # ends inside unit 1 (frame 2): unit 1 starts the next word -> [0, 1)
        (0.050, 0.130),  # starts in unit 1, ends in unit 3 (frame 6) -> [1, 3)
        (0.130, 0.160),  # ends at the last frame's end -> [3, 4)
    ]
    assert A.word_unit_spans(durations, 50.0, words).tolist() == [[0, 1], [1, 3], [3, 4]]
    # boundaries exactly on frame edges, written as decimal seconds (0.06 * 50 is 2.9999... in floats)
    assert A.word_unit_spans(durations, 50.0, [(0.04, 0.06), (0.06, 0.12), (0.12, 0.16)]).tolist() == [
        [1, 2], [2, 3], [3, 4]]
    # a word inside one unit gets an empty span where it falls; times outside the audio are clipped
    assert A.word_unit_spans(durations, 50.0, [(0.07, 0.11), (-0.5, 0.01), (0.15, 9.0)]).tolist() == [
        [2, 2], [0, 0], [3, 4]]
    # consecutive words tile the units: no gap, no overlap
    edges = np.sort(np.random.default_rng(0).uniform(0, 0.16, 9))
    spans = A.word_unit_spans(durations, 50.0, list(zip(edges[:-1], edges[1:])))
    assert (spans[1:, 0] == spans[:-1, 1]).all()


def test_word_unit_spans_without_dedup_and_at_25_hz():
    # no durations (dedup off): one unit per frame
    assert A.word_unit_spans(None, 50.0, [(0.0, 0.05), (0.05, 0.1)], n_units=5).tolist() == [[0, 2], [2, 5]]
    # 25 Hz: frames of 40 ms; durations [1, 2] -> unit 0 = [0, 40) ms, unit 1 = [40, 120) ms
    assert A.word_unit_spans([1, 2], 25.0, [(0.0, 0.039), (0.039, 0.12)]).tolist() == [[0, 0], [0, 2]]
    with pytest.raises(InputError, match="durations"):
        A.word_unit_spans([2, 0, 1], 50.0, [(0.0, 0.1)])


# ---------------------------------------------------------------------------------------
# transcript words and timed words
# ---------------------------------------------------------------------------------------
def test_transcript_tokens_keep_the_text_as_written():
    text = "Hello there,  my old-friend!"
    toks = A.transcript_tokens(text)
    assert [t for t, _, _ in toks] == ["Hello", "there,", "my", "old-friend!"]
    assert all(text[a:b] == t for t, a, b in toks)


def test_engine_words_map_to_transcript_tokens_by_character_position():
    text = "sss. shoe. 3:45 mama."
    # espeak sometimes reports a word at the space before it, and one token can hold several words
    engine = [
        {"word": "sss", "char_start": 0, "char_end": 3, "start": 0.0, "end": 0.5},
        {"word": " sho", "char_start": 4, "char_end": 8, "start": 0.5, "end": 0.7},
        {"word": "3", "char_start": 11, "char_end": 12, "start": 0.9, "end": 1.0},
        {"word": "45", "char_start": 13, "char_end": 15, "start": 1.0, "end": 1.3},
        {"word": " ", "char_start": 15, "char_end": 16, "start": 1.3, "end": 1.6},
    ]
    words, counts = A.time_tokens_from_engine(text, engine, duration=1.8)
    assert [(w["word"], w["start"], w["end"], w["how"]) for w in words] == [
        ("sss.", 0.0, 0.5, "timed"), ("shoe.", 0.5, 0.7, "timed"), ("3:45", 0.9, 1.3, "timed"),
        ("mama.", 1.3, 1.6, "timed")]
    assert counts == {"timed": 4, "substituted": 0, "split": 0, "interpolated": 0}


def test_untimed_words_are_interpolated_between_their_neighbours():
    text = "one two three four five"
    engine = [
        {"word": "one", "char_start": 0, "char_end": 3, "start": 0.1, "end": 0.3},
        {"word": "four", "char_start": 14, "char_end": 18, "start": 0.9, "end": 1.1},
    ]
    words, counts = A.time_tokens_from_engine(text, engine, duration=2.0)
    got = [(w["word"], w["start"], w["end"], w["how"]) for w in words]
    assert got == [("one", 0.1, 0.3, "timed"), ("two", 0.3, 0.6, "interpolated"), ("three", 0.6, 0.9, "interpolated"),
                   ("four", 0.9, 1.1, "timed"), ("five", 1.1, 2.0, "interpolated")]
    assert counts == {"timed": 2, "substituted": 0, "split": 0, "interpolated": 3}
    with pytest.raises(A.AlignmentRejected, match="no word"):
        A.time_tokens_from_engine(text, [], duration=2.0)


def test_words_the_engine_spoke_as_one_share_its_phonemes_by_letters():
    # espeak-ng speaks "on the" as one word, reported at "on", with the phonemes of both
    text = "sat on the mat"
    ph = [["O2", 0.70, 0.76], ["n", 0.76, 0.82], ["D", 0.82, 0.87], ["@2", 0.87, 0.93]]
    engine = [
        {"word": "sat", "char_start": 0, "char_end": 3, "start": 0.4, "end": 0.7},
        {"word": "on", "char_start": 4, "char_end": 6, "start": 0.7, "end": 0.93, "phonemes": ph},
        {"word": "mat", "char_start": 11, "char_end": 14, "start": 0.93, "end": 1.27},
    ]
    words, counts = A.time_tokens_from_engine(text, engine, duration=1.5)
    # 4 phonemes for 2 + 3 letters: round(4 * 2/5) = 2 for "on", the other 2 for "the"
    assert [(w["word"], w["start"], w["end"], w["how"]) for w in words] == [
        ("sat", 0.4, 0.7, "timed"), ("on", 0.7, 0.82, "timed"), ("the", 0.82, 0.93, "split"), ("mat", 0.93, 1.27, "timed")]
    assert counts == {"timed": 3, "substituted": 0, "split": 1, "interpolated": 0}
    # without phonemes there is nothing to share: the word is interpolated where it falls
    bare = [{k: v for k, v in w.items() if k != "phonemes"} for w in engine]
    words, counts = A.time_tokens_from_engine(text, bare, duration=1.5)
    assert (words[2]["start"], words[2]["end"], words[2]["how"]) == (0.93, 0.93, "interpolated")


def test_recognised_words_matched_to_the_transcript_by_edit_distance():
    text = "The grey cat, well-known here, sat down."
    heard = [(" the", 0.0, 0.2), (" gray", 0.2, 0.5), (" cat", 0.5, 0.8), (" well-known", 0.8, 1.3),
             (" sat", 1.5, 1.8), (" down.", 1.8, 2.1), (" um", 2.2, 2.4)]
    words, stats = A.match_transcript(text, heard, duration=2.5)
    got = [(w["word"], w["start"], w["end"], w["how"]) for w in words]
    assert got == [
        ("The", 0.0, 0.2, "timed"),
        ("grey", 0.2, 0.5, "substituted"),  # the recognised word in its place lends its times
        ("cat,", 0.5, 0.8, "timed"),
        ("well-known", 0.8, 1.3, "timed"),  # one recognised word, two normalised words: both matched
        ("here,", 1.3, 1.5, "interpolated"),  # not heard: placed between its neighbours
        ("sat", 1.5, 1.8, "timed"),
        ("down.", 1.8, 2.1, "timed"),
    ]
    assert stats["edits"] == {"substituted": 1, "deleted": 1, "inserted": 1}
    assert stats["mismatches"] == 3 and stats["counts"] == {"timed": 5, "substituted": 1, "split": 0, "interpolated": 1}
    assert stats["recognised"] == "the gray cat well-known sat down. um"  # "um": an insertion, dropped
    with pytest.raises(A.AlignmentRejected, match="none of the 3 transcript words"):
        A.match_transcript("alpha beta gamma", heard, duration=2.5)
    with pytest.raises(A.AlignmentRejected, match="recognised no words"):
        A.match_transcript("alpha beta gamma", [], duration=2.5)


# ---------------------------------------------------------------------------------------
# the word-times file beside a synthesised wav
# ---------------------------------------------------------------------------------------
def test_word_times_file_round_trips_and_names_what_is_wrong(tmp_path):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF....")  # only its bytes matter here (the hash)
    words = [{"word": "hi", "char_start": 0, "char_end": 2, "start": 0.01, "end": 0.3}]
    path = A.write_word_times(wav, text="hi", words=words, duration=0.4, sample_rate=16000,
                              engine={"name": "espeak-ng", "voice": "en-us"})
    assert path == tmp_path / "a.wav.words.json" == A.word_times_path(wav)
    rec = A.read_word_times(path)
    assert rec["text"] == "hi" and rec["words"] == words and rec["engine"]["voice"] == "en-us"
    from twist.contract import sha256_file

    assert rec["audio_sha256"] == sha256_file(wav)
    bad = dict(rec, words=[{"word": "hi", "start": 0.3, "end": 0.1, "char_start": 0, "char_end": 2}])
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"a\.wav\.words\.json.*end before its start"):
        A.read_word_times(path)
    path.write_text(json.dumps({**rec, "format": "other"}))
    with pytest.raises(InputError, match="format"):
        A.read_word_times(path)
