"""twist-mos score on a hand-made test: planted bad raters are screened out, numbers match by hand.

The key is written by hand (items named ``<system>-<prompt>``); each rater's repeated item is
the one the page would have repeated (:func:`rater_plan`). Three honest raters agree that the
originals sound natural, warm less so and cold least; a random rater and a lazy rater (all 3s)
are planted among them.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from twist.errors import ConfigError, InputError
from twist.mos import load_key, rater_plan, score_ratings
from twist.mos.score import Screening

PROMPTS = ["p0", "p1", "p2", "p3"]
SYSTEMS = ["warm", "cold", "original"]
DURATION = 4.0
# scores per system over p0..p3
HONEST = {
    "r1": {"warm": [4, 3.5, 4, 3], "cold": [2, 2.5, 2, 1.5], "original": [5, 4.5, 5, 4.5]},
    "r2": {"warm": [3.5, 3.5, 4.5, 3], "cold": [2.5, 2, 2, 2], "original": [4.5, 5, 5, 4]},
    "r3": {"warm": [4, 3, 4, 3.5], "cold": [1.5, 2, 2.5, 1.5], "original": [5, 5, 4.5, 4.5]},
}
# passes every attention check (originals rated high, repeat consistent), but otherwise random
RANDOM = {"warm": [1.5, 5, 1, 4.5], "cold": [4.5, 1, 5, 3], "original": [4, 3.5, 5, 4]}
LAZY = {name: [3, 3, 3, 3] for name in SYSTEMS}


def write_key(root: Path, *, repeat: bool = True) -> dict:
    items = [{"id": f"{s}-{p}", "system": s, "prompt": p, "prompt_index": i, "duration": DURATION,
              "kind": "gold" if s == "original" else "system"} for s in SYSTEMS for i, p in enumerate(PROMPTS)]
    key = {"format": "twist-mos-key", "version": 1, "test_id": "handmade0001",
           "settings": {"seed": 0, "prompts_per_rater": None, "repeat": repeat},
           "systems": ["warm", "cold"], "toplines": ["original"], "gold_system": "original", "prompts": PROMPTS,
           "items": items}
    root.mkdir(parents=True, exist_ok=True)
    (root / "key.json").write_text(json.dumps(key))
    return load_key(root)


def _plan(key: dict, rater: str):
    return rater_plan(0, [(it["id"], it["prompt_index"]) for it in key["items"]], rater,
                      repeat=key["settings"]["repeat"])


def write_ratings(path: Path, key: dict, rater: str, scores: dict, *, listen: float = DURATION,
                  repeat_shift: float = 0.0, fmt: str = "json", test_id: str | None = None) -> Path:
    """A session as the page writes it, in the page's order; the repeat gets its first score
    moved by ``repeat_shift`` towards the middle of the scale."""
    rows = []
    for i, slot in enumerate(_plan(key, rater)):
        system, prompt = slot.item.split("-")
        score = scores[system][PROMPTS.index(prompt)]
        if slot.repeat:
            score = score - repeat_shift if score >= 3 else score + repeat_shift
        rows.append({"position": i, "item": slot.item, "score": score, "listen_seconds": listen,
                     "duration": DURATION, "repeat": slot.repeat})
    tid = test_id or key["test_id"]
    if fmt == "json":
        path.write_text(json.dumps({"format": "twist-mos-ratings", "version": 1, "test_id": tid, "rater": rater,
                                    "ratings": rows}))
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["test_id", "rater", "position", "item", "score", "listen_seconds",
                                              "duration", "repeat"])
            w.writeheader()
            for r in rows:
                w.writerow({"test_id": tid, "rater": rater, **{k: str(v).lower() if k == "repeat" else v
                                                               for k, v in r.items()}})
    return path


@pytest.fixture
def handmade(tmp_path):
    key = write_key(tmp_path / "test")
    d = tmp_path / "ratings"
    d.mkdir()
    write_ratings(d / "r1.json", key, "r1", HONEST["r1"])
    write_ratings(d / "r2.csv", key, "r2", HONEST["r2"], fmt="csv")
    write_ratings(d / "r3.json", key, "r3", HONEST["r3"])
    write_ratings(d / "random.json", key, "random", RANDOM)
    write_ratings(d / "lazy.json", key, "lazy", LAZY)
    return key, d


T_975_11 = 2.200985160082949  # Student t, 97.5% quantile, 11 degrees of freedom (from tables)


def test_planted_random_and_lazy_raters_are_screened_out_and_mmos_matches_hand_computation(handmade, tmp_path):
    key, d = handmade
    res = score_ratings(key, [d], tmp_path / "out")
    raters = {r["rater"]: r for r in res["raters"]}
    assert {r for r, v in raters.items() if v["kept"]} == {"r1", "r2", "r3"}
    assert res["n_raters"] == 5 and res["n_raters_kept"] == 3 and res["n_items_kept"] == 12
    assert res["n_ratings_kept"] == 36

    # the lazy rater fails the gold items (3 < 3.5 on all four originals) and never varies
    assert raters["lazy"]["gold_failed"] == 4
    assert any("gold" in why for why in raters["lazy"]["reasons"])
    assert any("same score (3)" in why for why in raters["lazy"]["reasons"])
    # the random rater passes the attention checks; only its correlation with the others betrays it
    assert raters["random"]["gold_failed"] == 0 and raters["random"]["repeat_diff"] == 0
    others = [np.mean([HONEST[r][s][p] for r in HONEST]) for s in SYSTEMS for p in range(4)]
    mine = [RANDOM[s][p] for s in SYSTEMS for p in range(4)]
    by_hand = np.corrcoef(mine, others)[0, 1]
    assert raters["random"]["correlation"] == pytest.approx(by_hand, abs=1e-12)
    assert by_hand < 0.25 and raters["random"]["reasons"] == [
        f"correlation {by_hand:.2f} with the other raters' mean is below 0.25"]

    # MMOS of the three kept raters, with the t interval over their 12 ratings per system
    scored = {r["system"]: r for r in res["systems"]}
    for system, expected_mean in (("warm", 43.5 / 12), ("cold", 24 / 12), ("original", 56.5 / 12)):
        values = [v for r in HONEST for v in HONEST[r][system]]
        half = T_975_11 * statistics.stdev(values) / math.sqrt(12)
        row = scored[system]
        assert row["mmos"] == pytest.approx(expected_mean, abs=1e-12)
        assert row["ci"] == pytest.approx(half, rel=1e-9)
        assert (row["n_ratings"], row["n_raters"], row["n_prompts"]) == (12, 3, 4)
    assert scored["original"]["kind"] == "topline" and scored["warm"]["kind"] == "system"

    # paired: warm beats cold on all 12 (rater, prompt) pairs, by 1.625 on average
    pair = next(p for p in res["paired"] if (p["a"], p["b"]) == ("warm", "cold"))
    diffs = [HONEST[r]["warm"][p] - HONEST[r]["cold"][p] for r in HONEST for p in range(4)]
    assert pair["n_pairs"] == 12 and pair["mean_diff"] == pytest.approx(1.625)
    assert pair["ci"] == pytest.approx(T_975_11 * statistics.stdev(diffs) / math.sqrt(12), rel=1e-9)
    assert (pair["a_better"], pair["ties"], pair["b_better"]) == (12, 0, 0)
    assert pair["p_sign"] == pytest.approx(2 / 2**12)

    # the reports
    md = (tmp_path / "out" / "mmos.md").read_text()
    assert f"| warm | 3.62 ± {T_975_11 * statistics.stdev([v for r in HONEST for v in HONEST[r]['warm']]) / math.sqrt(12):.2f}" in md
    assert "| lazy | 12 | 4/4 |" in md and "| warm vs cold | 12 | 1.62 |" in md
    saved = json.loads((tmp_path / "out" / "mmos.json").read_text())
    assert saved["n_raters_kept"] == 3
    png = (tmp_path / "out" / "mmos.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_short_listening_and_an_inconsistent_repeat_screen_a_rater_out(handmade, tmp_path):
    key, d = handmade
    write_ratings(d / "skimmer.json", key, "skimmer", HONEST["r1"], listen=1.0)  # a quarter of each clip
    write_ratings(d / "flipper.json", key, "flipper", HONEST["r2"], repeat_shift=2.0)
    res = score_ratings(key, [d], tmp_path / "out")
    raters = {r["rater"]: r for r in res["raters"]}
    assert raters["skimmer"]["short_listens"] == 13 and not raters["skimmer"]["kept"]
    assert "playing less than 50%" in raters["skimmer"]["reasons"][0]
    assert raters["flipper"]["repeat_diff"] == 2.0 and not raters["flipper"]["kept"]
    assert "repeated item scored" in raters["flipper"]["reasons"][0]
    # thresholds come from the config: switching the checks off keeps both
    res = score_ratings(key, [d], tmp_path / "out2",
                        screening={"min_listen_fraction": None, "repeat_max_diff": None})
    kept = {r["rater"] for r in res["raters"] if r["kept"]}
    assert {"skimmer", "flipper"} <= kept


@pytest.mark.parametrize("edit, where, message", [
    (lambda rows: rows[3].update(item="nope-p9"), "ratings[3]", "item 'nope-p9' is not an item of test"),
    (lambda rows: rows[5].update(score=6), "ratings[5]", "score 6 is off the scale (1 to 5 in steps of 0.5)"),
    (lambda rows: rows[5].update(score=3.25), "ratings[5]", "score 3.25 is off the scale"),
    (lambda rows: rows[2].update(listen_seconds=-1), "ratings[2]", "listen_seconds -1 is negative"),
    (lambda rows: rows.append(dict(rows[0])), "ratings[13]", "rated twice (also at ratings[0])"),
])
def test_a_bad_ratings_file_is_rejected_naming_file_and_row_and_nothing_else_is_lost(handmade, tmp_path, edit, where,
                                                                                      message):
    key, d = handmade
    bad = write_ratings(d / "r9.json", key, "r9", HONEST["r1"])
    data = json.loads(bad.read_text())
    edit(data["ratings"])
    bad.write_text(json.dumps(data))
    res = score_ratings(key, [d], tmp_path / "out")
    assert res["n_files_rejected"] == 1
    reason = res["rejected_files"][0]["reason"]
    assert reason.startswith(f"{bad} {where}: ") and message in reason, reason
    assert res["n_raters"] == 5 and res["n_raters_kept"] == 3  # every good file is still scored
    assert message in (tmp_path / "out" / "mmos.md").read_text()
    with pytest.raises(InputError, match="r9.json"):
        score_ratings(key, [d], tmp_path / "strict", strict=True)


def test_other_tests_duplicates_and_bad_csv_are_rejected(handmade, tmp_path):
    key, d = handmade
    write_ratings(d / "z_other.json", key, "r8", HONEST["r1"], test_id="another-test")
    write_ratings(d / "z_r1_again.json", key, "r1", HONEST["r1"])
    (d / "z_bad.csv").write_text("rater,item,score\nr7,warm-p0,4\n")
    rows = list(csv.reader((d / "r2.csv").read_text().splitlines()))
    rows[4][1] = "someone-else"  # line 5 of the file
    (d / "z_mixed.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    res = score_ratings(key, [d], tmp_path / "out")
    reasons = {Path(r["item"]).name: r["reason"] for r in res["rejected_files"]}
    assert "ratings for test 'another-test', but the key is for test 'handmade0001'" in reasons["z_other.json"]
    assert "rater 'r1' already has a ratings file" in reasons["z_r1_again.json"]
    assert "row 1: CSV header lacks column(s) ['test_id', 'listen_seconds', 'repeat']" in reasons["z_bad.csv"]
    assert "row 5: rater 'someone-else' differs from the first row's 'r2'" in reasons["z_mixed.csv"]
    assert res["n_raters"] == 5 and res["n_raters_kept"] == 3


def test_a_rated_item_must_be_in_the_raters_own_order(tmp_path):
    """With prompts_per_rater, a rater hears only some prompts: a row outside them was edited in."""
    from twist.mos.ratings import read_session

    key = write_key(tmp_path / "test")
    key["settings"]["prompts_per_rater"] = 2
    plan = rater_plan(0, [(it["id"], it["prompt_index"]) for it in key["items"]], "r1", prompts_per_rater=2)
    heard = {s.item for s in plan}
    assert len({i.split("-")[1] for i in heard}) == 2 and len(heard) == 6  # 2 prompts x 3 systems
    outside = next(it["id"] for it in key["items"] if it["id"] not in heard)
    rows = [{"item": s.item, "score": 3, "listen_seconds": 4, "repeat": s.repeat} for s in plan]
    rows[1]["item"] = outside
    p = tmp_path / "r1.json"
    p.write_text(json.dumps({"format": "twist-mos-ratings", "version": 1, "test_id": key["test_id"], "rater": "r1",
                             "ratings": rows}))
    with pytest.raises(InputError, match=rf"ratings\[1\]: item '{outside}' was not in the running order of rater 'r1'"):
        read_session(p, key)


def test_screening_settings_are_validated():
    with pytest.raises(ConfigError, match="screening.max_gold_fail_fraction must be in"):
        Screening(max_gold_fail_fraction=2)
    from twist.schema import to_typed

    with pytest.raises(ConfigError, match="unknown setting min_corr"):
        to_typed(Screening, {"min_corr": 0.3})
