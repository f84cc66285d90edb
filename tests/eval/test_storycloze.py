"""Spoken StoryCloze: the released layout and the pairs.jsonl manifest."""

from __future__ import annotations

import json

import pytest

from twist.eval.storycloze import load_pairs


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"RIFF")
    return p


def test_released_layout_pairs_correct_with_incorrect_by_story(tmp_path):
    root = tmp_path / "sSC"
    stories = ["1f2e-aa", "77b0-cd", "0c3d-ef"]
    for i, sid in enumerate(stories):
        _touch(root / f"{2 * i}_{sid}_correct.wav")
        _touch(root / f"{2 * i + 1}_{sid}_incorrect.wav")
    ps = load_pairs(root, "ssc")
    assert ps.layout == "released" and len(ps.pairs) == 3
    by_id = {p.id: p for p in ps.pairs}
    assert set(by_id) == set(stories)
    p = by_id["77b0-cd"]
    assert p.positive.endswith("2_77b0-cd_correct.wav") and p.negative.endswith("3_77b0-cd_incorrect.wav")
    assert set(ps.paths) == {str(f) for f in root.iterdir()}


def test_released_short_form_pairs_by_index(tmp_path):
    for i in range(2):
        _touch(tmp_path / "tSC" / f"{i}_correct.wav")
        _touch(tmp_path / "tSC" / f"{i}_incorrect.wav")
    ps = load_pairs(tmp_path / "tSC")
    assert sorted(p.id for p in ps.pairs) == ["0", "1"]
    assert all(p.positive.endswith(f"{p.id}_correct.wav") for p in ps.pairs)


def test_released_layout_errors_name_the_file(tmp_path):
    root = tmp_path / "sSC"
    root.mkdir()
    with pytest.raises(ValueError, match="benchmark dir .*sSC is empty"):
        load_pairs(root, "ssc")
    _touch(root / "0_abc_correct.wav")
    with pytest.raises(ValueError, match="story 'abc' .* has 1 correct and 0 incorrect"):
        load_pairs(root, "ssc")
    _touch(root / "1_abc_incorrect.wav")
    _touch(root / "story.wav")
    with pytest.raises(ValueError, match="story.wav does not follow the spoken StoryCloze naming"):
        load_pairs(root, "ssc")


def test_manifest_with_paths_and_inline_units(tmp_path):
    root = tmp_path / "bench" / "sSC"
    _touch(root / "wav" / "a_pos.wav")
    _touch(root / "wav" / "a_neg.wav")
    rows = [{"id": "a", "positive": "wav/a_pos.wav", "negative": "wav/a_neg.wav", "text": "meta kept"},
            {"id": "b", "positive_units": [1, 2, 3], "negative_units": [3, 2, 1]}]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for arg in (root, root / "pairs.jsonl"):
        ps = load_pairs(arg, "ssc")
        assert ps.layout == "manifest" and [p.id for p in ps.pairs] == ["a", "b"]
        a, b = ps.pairs
        assert ps.paths[a.positive] == root / "wav" / "a_pos.wav" and a.meta == {"id": "a", "text": "meta kept"}
        assert ps.inline[b.positive].tolist() == [1, 2, 3] and ps.inline[b.negative].tolist() == [3, 2, 1]


def test_manifest_errors_name_the_pair(tmp_path):
    m = tmp_path / "pairs.jsonl"
    _touch(tmp_path / "p.wav")
    m.write_text(json.dumps({"id": "s9", "positive": "p.wav", "negative": "gone.wav"}) + "\n")
    with pytest.raises(FileNotFoundError, match=r"pairs.jsonl:1: pair 's9': negative file .*gone.wav does not exist"):
        load_pairs(m)
    m.write_text(json.dumps({"id": "s1", "positive": "p.wav"}) + "\n")
    with pytest.raises(ValueError, match="pair 's1' has neither 'negative' nor 'negative_units'"):
        load_pairs(m)
    m.write_text("")
    with pytest.raises(ValueError, match="lists no pairs"):
        load_pairs(m)
