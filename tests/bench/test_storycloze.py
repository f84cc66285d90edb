"""Spoken / topic StoryCloze builder: shared recordings, joins at their sample offsets, stable
tSC negatives under subsets and shards, no forced ties, seeds, resume, header errors."""

import json
import random
import shutil

import numpy as np
import pytest

from twist.audio import load_audio
from twist.bench.layout import PAIRS_KEYS, read_pairs_jsonl
from twist.bench.storycloze import (
    Story,
    build_storycloze,
    normalize_text,
    read_storycloze_csv,
    segment_path,
    topic_negatives,
)
from twist.bench.tts import trim_silence
from twist.rejects import RejectsLog


def _all_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pairs(root, task):
    """id -> (texts row, positive bytes, negative bytes) of a built variant."""
    texts = {json.loads(x)["id"]: json.loads(x) for x in (root / task / "texts.jsonl").read_text().splitlines()}
    return {r["id"]: (texts[r["id"]], (root / task / r["positive"]).read_bytes(), (root / task / r["negative"]).read_bytes())
            for r in read_pairs_jsonl(root / task / "pairs.jsonl")}  # fmt: skip


def test_layout_shares_each_recording_and_eval_reads_it(espeak, stories_csv, tmp_path):
    out = tmp_path / "sc"
    rep = build_storycloze(stories_csv, out, espeak, workers=2, progress=False)
    assert rep["pairs"] == {"sSC": 3, "tSC": 3} and rep["sentences"] > 0
    rows = {task: {r["id"]: r for r in read_pairs_jsonl(out / task / "pairs.jsonl")} for task in ("sSC", "tSC")}
    for task in ("sSC", "tSC"):
        assert list(rows[task]) == ["s1", "s2", "s3"] and all(tuple(r) == PAIRS_KEYS for r in rows[task].values())
    for sid in ("s1", "s2", "s3"):
        # the sSC and the tSC positive are one file, named by both manifests
        assert rows["sSC"][sid]["positive"] == rows["tSC"][sid]["positive"]
        assert rows["sSC"][sid]["negative"] != rows["tSC"][sid]["negative"]
    wavs = sorted((out / "wav").glob("*.wav"))  # each beside its word times
    assert len(wavs) == 9 == rep["recordings"]  # 3 stories x (positive, sSC negative, tSC negative)
    assert len({w.read_bytes() for w in wavs}) == 9
    assert not (out / "sSC" / "wav").exists() and not (out / "tSC" / "wav").exists()
    texts = {json.loads(line)["id"]: json.loads(line) for line in (out / "sSC" / "texts.jsonl").read_text().splitlines()}
    assert texts["s2"]["positive"] == "The cat was happy" and texts["s2"]["negative"] == "The cat ate a car"
    from twist.eval.storycloze import load_pairs

    ssc, tsc = load_pairs(out / "sSC"), load_pairs(out / "tSC")
    assert len(ssc.pairs) == 3 and all(p.is_file() for p in ssc.paths.values())
    # both variants name the shared file by the same path once read
    assert {p.positive for p in ssc.pairs} == {p.positive for p in tsc.pairs}


@pytest.mark.parametrize(("silence_ms", "limit"), [(100, None), (250, 1)])
def test_joins_are_exact_silence_at_their_sample_offsets(espeak, stories_csv, tmp_path, helpers, silence_ms, limit):
    out = tmp_path / "sc"
    build_storycloze(stories_csv, out, espeak, tasks=("sSC",), silence_ms=silence_ms, limit=limit, progress=False)
    gap = round(16000 * silence_ms / 1000)
    voice = espeak.voices[0]
    texts = {json.loads(x)["id"]: json.loads(x) for x in (out / "sSC" / "texts.jsonl").read_text().splitlines()}
    for r in read_pairs_jsonl(out / "sSC" / "pairs.jsonl"):
        sid, *sentences = next(s for s in helpers.STORIES if s[0] == r["id"])
        right, wrong = (sentences[4], sentences[5]) if sentences[6] == "1" else (sentences[5], sentences[4])
        for side, ending in (("positive", right), ("negative", wrong)):
            wav = load_audio(out / "sSC" / r[side])
            segs = [trim_silence(load_audio(segment_path(out / "_segments", t, voice))) for t in (*sentences[:4], ending)]
            assert wav.size == sum(s.size for s in segs) + 4 * gap
            at = 0
            for i, seg in enumerate(segs):
                assert np.array_equal(wav[at : at + seg.size], seg), (sid, side, i)
                at += seg.size
                if i < 4:  # a join: the sentence ends on sound, then exactly `gap` zeros, then sound
                    assert wav[at - 1] != 0 and not wav[at : at + gap].any() and wav[at + gap] != 0, (sid, side, i, at)
                    at += gap
            # where cross-modal StoryCloze cuts both recordings: the spoken context, and the ending alone
            context = sum(seg.size for seg in segs[:4]) + 3 * gap
            assert round(texts[sid]["context_end"] * 16000) == context
            assert round(texts[sid]["ending_start"] * 16000) == context + gap
            assert np.array_equal(wav[context + gap :], segs[4]) and wav[context - 1] != 0
            assert at == wav.size


def test_same_seed_same_bytes_and_resume(espeak, stories_csv, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_storycloze(stories_csv, a, espeak, seed=3, workers=2, progress=False)
    build_storycloze(stories_csv, b, espeak, seed=3, workers=1, progress=False)
    assert _all_bytes(a) == _all_bytes(b)
    # resume: a lost recording is rebuilt identically, the others are not touched
    tsc = {r["id"]: r for r in read_pairs_jsonl(a / "tSC" / "pairs.jsonl")}
    victim = a / "tSC" / tsc["s2"]["negative"]
    before = victim.read_bytes()
    other = a / "tSC" / tsc["s1"]["positive"]
    mtime = other.stat().st_mtime_ns
    victim.unlink()
    rep = build_storycloze(stories_csv, a, espeak, seed=3, progress=False)
    assert victim.read_bytes() == before and other.stat().st_mtime_ns == mtime
    assert rep["tts"].startswith("0 synthesised")


def _stories(n, endings=None):
    return [Story(f"id-{i:04d}", ("a", "b", "c", "d"), endings[i] if endings else f"right ending {i}.", f"wrong {i}.")
            for i in range(n)]  # fmt: skip


def test_topic_negatives_of_any_subset_equal_those_of_the_whole_file():
    every = _stories(300)
    endings = [s.right for s in every]
    whole = dict(zip((s.id for s in every), topic_negatives(every, seed=7)))
    rng = random.Random(0)
    for size in (1, 2, 50, 150):
        subset = rng.sample(every, size)  # any stories, in any order
        got = topic_negatives(subset, seed=7, endings=endings)
        assert got == [whole[s.id] for s in subset]
    # the order of the file does not matter either, the seed does
    shuffled = rng.sample(every, len(every))
    assert topic_negatives(shuffled, seed=7) == [whole[s.id] for s in shuffled]
    assert topic_negatives(every, seed=8) != list(whole.values())
    for s in every:
        assert whole[s.id] != s.right and whole[s.id].startswith("right ending")
    with pytest.raises(ValueError, match="at least 2"):
        topic_negatives(every[:1], seed=0)


def test_no_negative_has_the_positives_words_even_with_duplicated_endings():
    # two stories end in the same words (as four pairs of stories do in the real test file),
    # spelled with other case and punctuation; a draw by story would pick the twin half the time
    endings = ["His family loved it.", "his family  loved it!", "He went home.", "They ate cake."]
    stories = _stories(4, endings)
    for seed in range(200):
        for s, neg in zip(stories, topic_negatives(stories, seed)):
            assert normalize_text(neg) != normalize_text(s.right), (seed, s.id, neg)
    assert normalize_text("His  family loved it.") == normalize_text("his family loved it!") == "his family loved it"
    with pytest.raises(ValueError, match="different right endings"):
        topic_negatives(_stories(2, ["Same words.", "same words"]), seed=0)


def test_subset_and_shards_of_a_build_hold_the_whole_builds_pairs(espeak, tmp_path, helpers):
    rows = list(helpers.STORIES) + [
        ("s4", "Sue baked bread", "It smelled nice", "She cut it", "She ate it", "She was full", "She flew away", "1"),
        ("s5", "Max saw a dog", "It barked", "He ran off", "He got home", "He was safe", "He ate the moon", "1"),
    ]
    csv = helpers.write_stories(tmp_path / "five.csv", rows=rows)
    whole, first = tmp_path / "whole", tmp_path / "first"
    build_storycloze(csv, whole, espeak, seed=4, progress=False)
    build_storycloze(csv, first, espeak, seed=4, limit=2, progress=False)
    for task in ("sSC", "tSC"):
        w = _pairs(whole, task)
        assert _pairs(first, task) == {k: w[k] for k in ("s1", "s2")}
    # shards: each part is built alone, then the parts are put together as docs/bench.md says
    merged = tmp_path / "merged"
    for i in range(3):
        part = tmp_path / f"part{i}"
        build_storycloze(csv, part, espeak, seed=4, shard=f"{i}/3", progress=False)
        shutil.copytree(part / "wav", merged / "wav", dirs_exist_ok=True)
        for task in ("sSC", "tSC"):
            (merged / task).mkdir(parents=True, exist_ok=True)
            for name in ("pairs.jsonl", "texts.jsonl"):
                with open(merged / task / name, "a") as f:
                    f.write((part / task / name).read_text())
    for task in ("sSC", "tSC"):
        assert _pairs(merged, task) == _pairs(whole, task)
    assert sorted(p.name for p in (merged / "wav").iterdir()) == sorted(p.name for p in (whole / "wav").iterdir())
    with pytest.raises(ValueError, match="storycloze.shard must be 'i/n'"):
        build_storycloze(csv, tmp_path / "bad", espeak, shard="3/3", progress=False)


@pytest.mark.parametrize("missing", ["InputSentence3", "RandomFifthSentenceQuiz2", "AnswerRightEnding"])
def test_missing_column_is_named(tmp_path, helpers, missing):
    header = helpers.STORY_HEADER.replace(missing, missing + "X")  # a typo in the header
    p = helpers.write_stories(tmp_path / "bad.csv", header=header)
    with pytest.raises(ValueError, match=f"missing column '{missing}'"):
        read_storycloze_csv(p)


def test_bad_rows_are_rejected_not_fatal(tmp_path, helpers):
    rows = list(helpers.STORIES) + [("s4", "a", "b", "c", "d", "e", "f", "3"), ("s1", *helpers.STORIES[0][1:]),
                                    ("s5", "a", "b", "c", "d", "He left.", "he left", "1")]  # fmt: skip
    p = helpers.write_stories(tmp_path / "s.csv", rows=rows)
    with RejectsLog(tmp_path / "rejects.jsonl", stage="bench") as rej:
        stories = read_storycloze_csv(p, rej)
    assert [s.id for s in stories] == ["s1", "s2", "s3"]
    reasons = [r["reason"] for r in RejectsLog.read(tmp_path / "rejects.jsonl")]
    assert any("AnswerRightEnding" in r for r in reasons) and any("duplicate" in r for r in reasons)
    assert any("same words" in r for r in reasons)


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
    # building one variant again keeps the recordings the other variant's manifest names
    build_storycloze(stories_csv, out, espeak, seed=1, silence_ms=250, tasks=("sSC",), progress=False)
    assert _all_bytes(out) == _all_bytes(fresh)


def test_a_build_in_the_old_layout_is_migrated(espeak, stories_csv, tmp_path):
    out = tmp_path / "out"
    (out / "sSC" / "wav").mkdir(parents=True)
    (out / "sSC" / "wav" / "s1_pos.wav").write_bytes(b"old copy")
    (out / "sSC" / ".build-key").write_text("x\n")
    build_storycloze(stories_csv, out, espeak, progress=False)
    assert not (out / "sSC" / "wav").exists() and not (out / "sSC" / ".build-key").exists()


MS_VOICES = ["en-us", "en-us+f3", "en-gb-x-rp"]


def test_multi_speaker_sets_vary_the_voice_across_sentences_and_share_one_for_both_endings(espeak, stories_csv,
                                                                                          tmp_path):
    from twist.bench.storycloze import join_with_silence

    out = tmp_path / "sc"
    rep = build_storycloze(stories_csv, out, espeak, voices=MS_VOICES, seed=1, progress=False)
    assert rep["pairs"] == {"sSC": 3, "tSC": 3, "sSC_ms": 3, "tSC_ms": 3} and rep["voices"] == MS_VOICES
    for task in ("sSC_ms", "tSC_ms"):
        texts = {json.loads(x)["id"]: json.loads(x) for x in (out / task / "texts.jsonl").read_text().splitlines()}
        for r in read_pairs_jsonl(out / task / "pairs.jsonl"):
            t = texts[r["id"]]
            voices = t["voices"]  # the four sentences, then both endings
            assert len(voices) == 5 and set(voices) <= set(MS_VOICES)
            assert all(a != b for a, b in zip(voices, voices[1:]))  # each sentence in another voice than the last
            for side in ("positive", "negative"):  # the audio is those voices' recordings, joined
                segs = [trim_silence(load_audio(segment_path(out / "_segments", text, v)))
                        for text, v in zip((*t["context"], t[side]), voices)]
                assert np.array_equal(load_audio(out / task / r[side]), join_with_silence(segs, 100.0)), (task, side)
    # the draw is the seed's: the same seed draws the same voices, another seed other ones
    again = tmp_path / "again"
    build_storycloze(stories_csv, again, espeak, voices=MS_VOICES, seed=1, progress=False)
    assert (again / "sSC_ms" / "texts.jsonl").read_bytes() == (out / "sSC_ms" / "texts.jsonl").read_bytes()
    draws = set()
    for seed in range(4):
        build_storycloze(stories_csv, tmp_path / f"s{seed}", espeak, voices=MS_VOICES, seed=seed, tasks=("sSC",),
                         progress=False)
        draws.add((tmp_path / f"s{seed}" / "sSC_ms" / "texts.jsonl").read_text())
    assert len(draws) > 1


def test_the_single_speaker_sets_do_not_change_when_voices_are_added(espeak, stories_csv, tmp_path):
    build_storycloze(stories_csv, tmp_path / "one", espeak, progress=False)
    build_storycloze(stories_csv, tmp_path / "both", espeak, voices=MS_VOICES, progress=False)
    for task in ("sSC", "tSC"):
        assert _pairs(tmp_path / "one", task) == _pairs(tmp_path / "both", task)
    # a rebuild without voices leaves the multi-speaker sets as they are, like a variant not rebuilt
    rep = build_storycloze(stories_csv, tmp_path / "both", espeak, progress=False)
    assert set(rep["pairs"]) == {"sSC", "tSC"} and rep["recordings"] > 9
    from twist.eval.storycloze import load_pairs

    assert len(load_pairs(tmp_path / "both" / "tSC_ms").pairs) == 3


def test_a_multi_speaker_set_needs_two_different_voices(espeak, stories_csv, tmp_path):
    from twist.bench.config import BenchRunConfig, StoryClozeBuild
    from twist.errors import ConfigError

    with pytest.raises(ConfigError, match=r"storycloze\.voices: .*at least 2 different voices"):
        build_storycloze(stories_csv, tmp_path / "sc", espeak, voices=["en-us", "en-us"], progress=False)
    with pytest.raises(ConfigError, match=r"storycloze\.voices"):
        BenchRunConfig(out_dir=str(tmp_path), storycloze=StoryClozeBuild(voices=["en-us"]))
    assert not (tmp_path / "sc").exists()


def test_recordings_carry_the_word_times_of_their_sentences(espeak, stories_csv, tmp_path, helpers):
    """Each recording's <wav>.words.json holds its sentences' words (the engine's, as it spoke each
    sentence) moved to where the trimmed sentence lies in the joined audio."""
    from twist.alignment import read_word_times, word_times_path
    from twist.bench.tts import trim_bounds
    from twist.contract import sha256_file

    out = tmp_path / "sc"
    build_storycloze(stories_csv, out, espeak, voices=MS_VOICES, seed=1, progress=False)
    for task in ("sSC", "sSC_ms"):
        texts = {json.loads(x)["id"]: json.loads(x) for x in (out / task / "texts.jsonl").read_text().splitlines()}
        for r in read_pairs_jsonl(out / task / "pairs.jsonl"):
            t = texts[r["id"]]
            voices = t.get("voices") or [espeak.voices[0]] * 5
            for side in ("positive", "negative"):
                wav_path = (out / task / r[side]).resolve()
                rec = read_word_times(word_times_path(wav_path))
                sentences = [*t["context"], t[side]]
                assert rec["text"] == " ".join(sentences) and rec["audio_sha256"] == sha256_file(wav_path)
                assert rec["engine"]["voice"] == (voices[0] if task == "sSC" else voices)
                at, char_at, expected = 0, 0, []
                for text, voice in zip(sentences, voices):
                    seg_path = segment_path(out / "_segments", text, voice)
                    seg = read_word_times(word_times_path(seg_path))
                    i0, i1 = trim_bounds(load_audio(seg_path))
                    lo, hi, shift = i0 / 16000, (i1 - i0) / 16000, at / 16000
                    for w in seg["words"]:
                        start, end = (min(max(x - lo, 0.0), hi) + shift for x in (w["start"], w["end"]))
                        expected.append((w["word"], w["char_start"] + char_at, start, end))
                    at += (i1 - i0) + 1600
                    char_at += len(text) + 1
                got = [(w["word"], w["char_start"], w["start"], w["end"]) for w in rec["words"]]
                assert [g[:2] for g in got] == [e[:2] for e in expected], (task, r["id"], side)
                assert np.allclose([g[2:] for g in got], [e[2:] for e in expected], atol=2e-5), (task, r["id"], side)
    # every word file beside a recording belongs to a recording (stale ones are removed with theirs)
    wavs = {p.name for p in (out / "wav").glob("*.wav")}
    assert {p.name.removesuffix(".words.json") for p in (out / "wav").glob("*.words.json")} == wavs
