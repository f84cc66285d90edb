"""Spoken / topic StoryCloze builder: layout, measured silence, seeds, resume, header errors."""

import json

import numpy as np
import pytest

from twist.audio import load_audio
from twist.bench.layout import PAIRS_KEYS, read_pairs_jsonl
from twist.bench.storycloze import Story, build_storycloze, read_storycloze_csv, topic_negatives
from twist.bench.tts import trim_silence
from twist.rejects import RejectsLog


def _all_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_counts_and_eval_reads_it(espeak, stories_csv, tmp_path):
    out = tmp_path / "sc"
    rep = build_storycloze(stories_csv, out, espeak, workers=2, progress=False)
    assert rep["pairs"] == {"sSC": 3, "tSC": 3} and rep["sentences"] > 0
    for task in ("sSC", "tSC"):
        rows = read_pairs_jsonl(out / task / "pairs.jsonl")
        assert [r["id"] for r in rows] == ["s1", "s2", "s3"]
        assert all(tuple(r) == PAIRS_KEYS for r in rows)
        for r in rows:
            assert (out / task / r["positive"]).is_file() and (out / task / r["negative"]).is_file()
    texts = {json.loads(line)["id"]: json.loads(line) for line in (out / "sSC" / "texts.jsonl").read_text().splitlines()}
    assert texts["s2"]["positive"] == "The cat was happy" and texts["s2"]["negative"] == "The cat ate a car"
    # the eval engineer's reader takes it as is
    from twist.eval.storycloze import load_pairs

    ps = load_pairs(out / "sSC")
    assert len(ps.pairs) == 3 and all(p.exists() for p in ps.paths.values())


def test_silence_between_sentences_is_100ms_measured_in_the_audio(espeak, stories_csv, tmp_path, helpers):
    out = tmp_path / "sc"
    build_storycloze(stories_csv, out, espeak, tasks=("sSC",), progress=False)
    for sid, *sentences in helpers.STORIES:
        # precondition: no sentence alone has a pause this long, so every long pause found
        # in the joined audio is one the builder inserted
        for s in sentences[:6]:
            assert helpers.silent_runs(trim_silence(espeak.synthesize(s))) == []
        for kind in ("pos", "neg"):
            wav = load_audio(out / "sSC" / "wav" / f"{sid}_{kind}.wav")
            gaps = helpers.silent_runs(wav)
            assert len(gaps) == 4, (sid, kind, gaps)
            assert all(abs(g - 100.0) <= 20.0 for g in gaps), gaps  # within one 20 ms frame


def test_silence_ms_is_configurable(espeak, stories_csv, tmp_path, helpers):
    out = tmp_path / "sc"
    build_storycloze(stories_csv, out, espeak, tasks=("sSC",), silence_ms=250, limit=1, progress=False)
    gaps = helpers.silent_runs(load_audio(out / "sSC" / "wav" / "s1_pos.wav"))
    assert len(gaps) == 4 and all(abs(g - 250.0) <= 20.0 for g in gaps)


def test_same_seed_same_bytes_and_resume(espeak, stories_csv, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_storycloze(stories_csv, a, espeak, seed=3, workers=2, progress=False)
    build_storycloze(stories_csv, b, espeak, seed=3, workers=1, progress=False)
    assert _all_bytes(a) == _all_bytes(b)
    # resume: a lost pair file is rebuilt identically, the others are not touched
    victim = a / "tSC" / "wav" / "s2_neg.wav"
    before = victim.read_bytes()
    other = a / "sSC" / "wav" / "s1_pos.wav"
    mtime = other.stat().st_mtime_ns
    victim.unlink()
    rep = build_storycloze(stories_csv, a, espeak, seed=3, progress=False)
    assert victim.read_bytes() == before and other.stat().st_mtime_ns == mtime
    assert rep["tts"].startswith("0 synthesised")


def test_topic_negatives_come_from_other_stories_and_follow_the_seed():
    stories = [Story(f"s{i}", ("a", "b", "c", "d"), f"right{i}", f"wrong{i}") for i in range(20)]
    n0 = topic_negatives(stories, seed=0)
    assert n0 == topic_negatives(stories, seed=0)
    assert n0 != topic_negatives(stories, seed=1)
    for i, neg in enumerate(n0):
        assert neg.startswith("right") and neg != f"right{i}"
    with pytest.raises(ValueError, match="at least 2"):
        topic_negatives(stories[:1], seed=0)


@pytest.mark.parametrize("missing", ["InputSentence3", "RandomFifthSentenceQuiz2", "AnswerRightEnding"])
def test_missing_column_is_named(tmp_path, helpers, missing):
    header = helpers.STORY_HEADER.replace(missing, missing + "X")  # a typo in the header
    p = helpers.write_stories(tmp_path / "bad.csv", header=header)
    with pytest.raises(ValueError, match=f"missing column '{missing}'"):
        read_storycloze_csv(p)


def test_bad_rows_are_rejected_not_fatal(tmp_path, helpers):
    rows = list(helpers.STORIES) + [("s4", "a", "b", "c", "d", "e", "f", "3"), ("s1", *helpers.STORIES[0][1:])]
    p = helpers.write_stories(tmp_path / "s.csv", rows=rows)
    with RejectsLog(tmp_path / "rejects.jsonl", stage="bench") as rej:
        stories = read_storycloze_csv(p, rej)
    assert [s.id for s in stories] == ["s1", "s2", "s3"]
    reasons = [r["reason"] for r in RejectsLog.read(tmp_path / "rejects.jsonl")]
    assert any("AnswerRightEnding" in r for r in reasons) and any("duplicate" in r for r in reasons)


def test_builtin_stories_parse():
    from twist.bench.storycloze import BUILTIN_STORIES

    stories = read_storycloze_csv(BUILTIN_STORIES)
    assert len(stories) >= 8 and len({s.id for s in stories}) == len(stories)
    assert all(s.right != s.wrong for s in stories)
    assert np.mean([len(" ".join(s.context).split()) for s in stories]) > 20


def test_changed_settings_rebuild_instead_of_reusing_stale_wavs(espeak, stories_csv, tmp_path):
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    build_storycloze(stories_csv, out, espeak, seed=0, progress=False)
    build_storycloze(stories_csv, out, espeak, seed=1, silence_ms=250, progress=False)  # rerun, new settings
    build_storycloze(stories_csv, fresh, espeak, seed=1, silence_ms=250, progress=False)
    assert _all_bytes(out) == _all_bytes(fresh)
