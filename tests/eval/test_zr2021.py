"""sWUGGY / sBLIMP in the ZR2021 layout: hand-computed aggregation, submission files, errors."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from twist.eval import zr2021

LEX = list(zr2021.COLUMNS["lexical"])
SYN = list(zr2021.COLUMNS["syntactic"])

# (id, frequency, {voice: (word score, non-word score)})
LEXICAL_FIXTURE = [
    ("1", "0", {"A": (-1.0, -2.0), "B": (-3.0, -3.0), "C": (-1.0, -0.5)}),  # oov: 1, tie 0.5, 0
    ("2", "3", {"A": (-1.0, -2.0), "B": (-2.0, -1.0)}),                        # band 1-5: 1, 0
    ("3", "5", {"A": (-1.0, -4.0), "B": (-1.0, -4.0)}),                        # 5 is in [5, 20): band 6-20: 1, 1
    ("4", "150", {"A": (-5.0, -1.0), "B": (-5.0, -1.0)}),                      # band >100: 0, 0
    ("5", "1", {"A": (-1.0, -2.0), "B": (-1.0, -2.0)}),                        # 1 is in [1, 5): band 1-5: 1, 1
]


def make_lexical(root: Path, ev, split: str = "dev", shuffle: bool = True) -> dict[str, float]:
    """Write lexical/<split>/ with empty-but-present wavs; return the per-file scores."""
    rows, scores = [], {}
    for wid, freq, voices in LEXICAL_FIXTURE:
        for voice, (w, nw) in voices.items():
            for correct, s in ((1, w), (0, nw)):
                fn = f"w{wid}{voice}{correct}"
                rows.append({"id": wid, "filename": fn, "word": f"word{wid}" if correct else f"nonw{wid}",
                             "frequency": freq if correct else "", "correct": correct, "voice": voice,
                             "phones": "a b", "length": 2 + int(wid) % 2})
                scores[fn] = s
                (root / "lexical" / split).mkdir(parents=True, exist_ok=True)
                (root / "lexical" / split / f"{fn}.wav").write_bytes(b"RIFF")
    if shuffle:  # the toolkit pairs by row order; we pair by (id, voice), so order must not matter
        random.Random(0).shuffle(rows)
    ev.write_gold(root / "lexical" / split / "gold.csv", LEX, rows)
    return scores


# (type, subtype, id, {voice: (sentence score, non-sentence score)})
SYNTACTIC_FIXTURE = [
    ("anaphor", "gender", "1", {"A": (-1.0, -2.0), "B": (-1.0, -1.0)}),  # 1, 0.5 -> 0.75
    ("anaphor", "number", "1", {"A": (-3.0, -2.0), "B": (-1.0, -2.0)}),  # same id, other subtype: 0, 1 -> 0.5
    ("anaphor", "number", "2", {"A": (-1.0, -2.0), "B": (-1.0, -2.0)}),  # 1, 1 -> 1
    ("npi", "only", "3", {"A": (-4.0, -2.0), "B": (-4.0, -2.0)}),        # 0, 0 -> 0
]


def make_syntactic(root: Path, ev, split: str = "dev") -> dict[str, float]:
    rows, scores = [], {}
    for typ, sub, sid, voices in SYNTACTIC_FIXTURE:
        for voice, (s_ok, s_bad) in voices.items():
            for correct, s in ((1, s_ok), (0, s_bad)):
                fn = f"s{typ}{sub}{sid}{voice}{correct}"
                rows.append({"id": sid, "filename": fn, "type": typ, "subtype": sub,
                             "transcription": "a sentence" if correct else "sentence a", "correct": correct,
                             "voice": voice})
                scores[fn] = s
                (root / "syntactic" / split).mkdir(parents=True, exist_ok=True)
                (root / "syntactic" / split / f"{fn}.wav").write_bytes(b"RIFF")
    random.Random(1).shuffle(rows)
    ev.write_gold(root / "syntactic" / split / "gold.csv", SYN, rows)
    return scores


def test_lexical_aggregates_like_the_official_toolkit(tmp_path, ev):
    scores = make_lexical(tmp_path, ev)
    gold = zr2021.load_split(tmp_path / "lexical", "dev", "lexical")
    summary, rows = zr2021.evaluate_split(gold, scores)
    # per id, mean over voices (by hand from LEXICAL_FIXTURE)
    id1, id2, id3, id4, id5 = (1 + 0.5 + 0) / 3, (1 + 0) / 2, 1.0, 0.0, 1.0
    assert summary["all"] == pytest.approx((id1 + id2 + id3 + id4 + id5) / 5)
    assert summary["accuracy"] == summary["all"]
    bands = {b["frequency"]: b for b in summary["by_frequency"]}
    assert [b["frequency"] for b in summary["by_frequency"]] == ["oov", "1-5", "6-20", "21-100", ">100"]
    assert bands["oov"]["n"] == 1 and bands["oov"]["score"] == pytest.approx(id1)
    assert bands["1-5"]["n"] == 2 and bands["1-5"]["score"] == pytest.approx((id2 + id5) / 2)
    assert bands["6-20"]["n"] == 1 and bands["6-20"]["score"] == pytest.approx(id3)
    assert bands["21-100"]["n"] == 0 and math.isnan(bands["21-100"]["score"])
    assert bands[">100"]["n"] == 1 and bands[">100"]["score"] == pytest.approx(id4)
    # in-vocab: band means weighted by band counts, oov left out
    want_inv = (2 * (id2 + id5) / 2 + 1 * id3 + 1 * id4) / (2 + 1 + 1)
    assert summary["in_vocab"] == pytest.approx(want_inv)
    assert summary["n_ids"] == 5 and summary["n_in_vocab_ids"] == 4
    assert summary["n_pairs"] == 3 + 2 + 2 + 2 + 2 and summary["n_voices"] == 3
    assert summary["n_pairs_skipped"] == 0
    # the std is pandas' (ddof=1): band 1-5 holds 0.5 and 1.0
    assert bands["1-5"]["std"] == pytest.approx(math.sqrt(((0.5 - 0.75) ** 2 + (1 - 0.75) ** 2) / 1))
    # per-pair rows: the tie is worth 0.5
    tie = next(r for r in rows if r["id"] == "1" and r["voice"] == "B")
    assert tie["score"] == 0.5 and tie["positive"] == "w1B1" and tie["negative"] == "w1B0"


def test_syntactic_groups_by_type_subtype_and_id(tmp_path, ev):
    scores = make_syntactic(tmp_path, ev)
    gold = zr2021.load_split(tmp_path / "syntactic", "dev", "syntactic")
    summary, _ = zr2021.evaluate_split(gold, scores)
    g_gender1, g_number1, g_number2, g_npi3 = 0.75, 0.5, 1.0, 0.0
    assert summary["n_groups"] == 4  # id "1" counts twice: once per subtype
    assert summary["accuracy"] == pytest.approx((g_gender1 + g_number1 + g_number2 + g_npi3) / 4)
    by_type = {t["type"]: t for t in summary["by_type"]}
    assert by_type["anaphor"]["n"] == 3
    assert by_type["anaphor"]["score"] == pytest.approx((g_gender1 + g_number1 + g_number2) / 3)
    assert by_type["npi"]["score"] == pytest.approx(g_npi3)


def test_rejected_files_drop_their_pair_only(tmp_path, ev):
    scores = make_lexical(tmp_path, ev)
    del scores["w2B0"]  # e.g. an unreadable wav
    gold = zr2021.load_split(tmp_path / "lexical", "dev", "lexical")
    summary, _ = zr2021.evaluate_split(gold, scores)
    assert summary["n_pairs_skipped"] == 1
    id1 = (1 + 0.5 + 0) / 3
    assert summary["all"] == pytest.approx((id1 + 1.0 + 1.0 + 0.0 + 1.0) / 5)  # id 2 is now voice A alone


def test_submission_file_round_trips_every_score(tmp_path, ev):
    scores = make_lexical(tmp_path, ev)
    scores["w3A1"] = -1.0 / 3  # not representable in few digits
    gold = zr2021.load_split(tmp_path / "lexical", "dev", "lexical")
    out = tmp_path / "submission" / "lexical" / "dev.txt"
    assert zr2021.write_submission(out, gold, scores)
    lines = out.read_text().splitlines()
    assert [ln.split(" ")[0] for ln in lines] == [r["filename"] for r in gold.rows]
    back = {a: float(b) for a, b in (ln.split(" ") for ln in lines)}
    assert back == scores  # exact: the official scorer makes the same decisions, ties included
    del scores["w1A0"]
    assert not zr2021.write_submission(out, gold, scores)


def test_missing_file_is_named(tmp_path, ev):
    make_lexical(tmp_path, ev)
    (tmp_path / "lexical" / "dev" / "w4B0.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"gold.csv:\d+: file 'w4B0' is listed but .*w4B0.wav does not exist"):
        zr2021.load_split(tmp_path / "lexical", "dev", "lexical")


def test_missing_column_is_named(tmp_path, ev):
    make_lexical(tmp_path, ev)
    gold = tmp_path / "lexical" / "dev" / "gold.csv"
    text = gold.read_text().splitlines()
    header = text[0].split(",")
    i = header.index("frequency")
    gold.write_text("\n".join(",".join(c for j, c in enumerate(ln.split(",")) if j != i) for ln in text) + "\n")
    with pytest.raises(ValueError, match=r"gold.csv lacks column\(s\) \['frequency'\]"):
        zr2021.load_split(tmp_path / "lexical", "dev", "lexical")


def _gold_lines(tmp_path, ev):
    make_lexical(tmp_path, ev, shuffle=False)
    gold = tmp_path / "lexical" / "dev" / "gold.csv"
    return gold, gold.read_text().splitlines()


def test_a_gold_csv_row_with_an_extra_field_is_one_line_naming_file_and_row(tmp_path, ev):
    from twist.errors import InputError

    gold, lines = _gold_lines(tmp_path, ev)
    lines[3] += ",surplus"
    gold.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        zr2021.load_split(tmp_path / "lexical", "dev", "lexical")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{gold}:4: ") and "9 fields" in msg and "8 columns" in msg, msg
    lines[3] = ",".join(lines[3].split(",")[:5])  # and one with too few
    gold.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"gold\.csv:4: 5 fields"):
        zr2021.load_split(tmp_path / "lexical", "dev", "lexical")


@pytest.mark.parametrize("value", ["-3", "inf", "ten"])
def test_a_negative_frequency_in_gold_csv_is_refused_naming_file_and_row(tmp_path, ev, value):
    from twist.errors import InputError

    gold, lines = _gold_lines(tmp_path, ev)
    col = LEX.index("frequency")
    row = next(n for n, line in enumerate(lines) if n and line.split(",")[col] == "3")
    lines[row] = ",".join(value if j == col else c for j, c in enumerate(lines[row].split(",")))
    gold.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        zr2021.load_split(tmp_path / "lexical", "dev", "lexical")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{gold}:{row + 1}: frequency") and repr(value) in msg, msg


def test_empty_or_absent_benchmark_dir(tmp_path):
    (tmp_path / "syntactic" / "dev").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"syntactic benchmark dir .*dev is empty"):
        zr2021.load_split(tmp_path / "syntactic", "dev", "syntactic")
    with pytest.raises(FileNotFoundError, match=r"benchmark dir not found: .*test"):
        zr2021.load_split(tmp_path / "syntactic", "test", "syntactic")
    (tmp_path / "syntactic" / "dev" / "a.wav").write_bytes(b"RIFF")
    with pytest.raises(FileNotFoundError, match="has no gold.csv"):
        zr2021.load_split(tmp_path / "syntactic", "dev", "syntactic")


def test_malformed_pair_is_named(tmp_path, ev):
    make_syntactic(tmp_path, ev)
    gold = tmp_path / "syntactic" / "dev" / "gold.csv"
    import csv

    with open(gold, newline="") as f:
        rows = list(csv.DictReader(f))
    # make one non-sentence claim to be correct: its (type, subtype, id, voice) now has two positives
    next(r for r in rows if r["filename"] == "snpionly3A0")["correct"] = "1"
    ev.write_gold(gold, SYN, rows)
    g = zr2021.load_split(tmp_path / "syntactic", "dev", "syntactic")
    with pytest.raises(ValueError, match=r"type='npi', subtype='only', id='3', voice='A' has 2 correct and 0 incorrect"):
        zr2021.make_pairs(g)
