"""sBLIMP-style builder: ZR2021 syntactic layout, voices, splits, errors, eval compatibility."""

import json

import pytest

from twist.bench.blimp import build_blimp, read_blimp_jsonl
from twist.bench.layout import SYNTACTIC_COLUMNS, read_gold_csv


def test_layout_counts_voices_and_eval_reads_it(espeak, blimp_jsonl, tmp_path):
    voices = espeak.voices[:2]
    rep = build_blimp(blimp_jsonl, tmp_path, espeak, voices=voices, seed=0, dev_fraction=0.5, progress=False)
    assert rep["pairs"] == 4 and rep["failed_ids"] == 0
    rows = {s: read_gold_csv(tmp_path / "syntactic" / s / "gold.csv", SYNTACTIC_COLUMNS) for s in ("dev", "test")}
    header = (tmp_path / "syntactic" / "dev" / "gold.csv").read_text().splitlines()[0]
    assert header == ",".join(SYNTACTIC_COLUMNS)
    # 4 pairs x 2 voices x 2 sentences; each UID (2 pairs) is split 1/1 between dev and test
    assert len(rows["dev"]) == len(rows["test"]) == 8
    for split, rs in rows.items():
        assert {r["subtype"] for r in rs} == {"sv_agr", "anaphor"}
        assert {r["voice"] for r in rs} == set(voices)
        for r in rs:
            assert (tmp_path / "syntactic" / split / f"{r['filename']}.wav").is_file()
        # ZR2021: the id names the pair and is shared by its voices; (id, voice) is one pair
        by_pair = {}
        for r in rs:
            by_pair.setdefault((r["id"], r["voice"]), []).append(r["correct"])
        assert all(sorted(v) == ["0", "1"] for v in by_pair.values())
        assert len({r["id"] for r in rs}) == 2 and len(by_pair) == 4
    good = [r for r in rows["dev"] + rows["test"] if r["subtype"] == "anaphor" and r["correct"] == "1"]
    assert {r["transcription"] for r in good} == {"She saw herself.", "He saw himself."}
    assert {r["type"] for r in good} == {"anaphor_agreement"}

    from twist.eval.zr2021 import load_split, make_pairs

    for split in ("dev", "test"):
        pairs = make_pairs(load_split(tmp_path / "syntactic", split, "syntactic"))
        assert len(pairs) == 4  # 2 pairs x 2 voices


def test_same_seed_same_split_other_seed_can_differ(espeak, tmp_path):
    rows = [{"sentence_good": f"good {i}", "sentence_bad": f"bad {i}", "UID": "u", "field": "f", "linguistics_term": "t"}
            for i in range(8)]  # fmt: skip
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from twist.bench.layout import split_by_group

    keys = [x.key for x in read_blimp_jsonl(p)]
    s0 = split_by_group(keys, ["u"] * 8, 0.5, seed=0)
    assert s0 == split_by_group(keys, ["u"] * 8, 0.5, seed=0)
    assert sum(v == "dev" for v in s0.values()) == 4
    assert any(split_by_group(keys, ["u"] * 8, 0.5, seed=s) != s0 for s in range(1, 6))


def test_missing_field_is_named(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"sentence_good": "a", "sentence_bad": "b", "UID": "u", "field": "f"}) + "\n")
    with pytest.raises(ValueError, match="missing field 'linguistics_term'"):
        read_blimp_jsonl(p)
    p.write_text("not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1"):
        read_blimp_jsonl(p)


def test_generated_minimal_pairs_parse(tmp_path):
    from twist.bench.minimal_pairs import write_minimal_pairs

    n = write_minimal_pairs(tmp_path / "p.jsonl", 5, seed=0)
    pairs = read_blimp_jsonl(tmp_path / "p.jsonl")
    assert len(pairs) == n >= 50 and len({p.uid for p in pairs}) >= 10
    assert all(p.good != p.bad for p in pairs)
