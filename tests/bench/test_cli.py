"""``twist-bench`` end to end on the built-in inputs, determinism of a whole build, CLI errors."""

import json
import subprocess
import sys

from twist.bench.build import build_benchmarks, resolve_tasks


def _wav_and_gold_bytes(root):
    keep = (".wav", ".csv", ".jsonl")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in keep and p.name != "rejects.jsonl"}  # fmt: skip


def test_whole_build_is_deterministic_under_a_seed(espeak, tmp_path):
    kw = dict(tts=espeak, seed=5, storycloze={"limit": 3}, blimp={"limit": 6, "n_voices": 2},
              wuggy={"limit": 4, "n_voices": 2}, progress=False)  # fmt: skip
    r1 = build_benchmarks("all", tmp_path / "a", workers=2, **kw)
    build_benchmarks("all", tmp_path / "b", workers=1, **kw)
    a, b = _wav_and_gold_bytes(tmp_path / "a"), _wav_and_gold_bytes(tmp_path / "b")
    assert a == b and len(a) > 50
    assert r1["tasks"]["storycloze"]["pairs"] == {"sSC": 3, "tSC": 3}
    assert r1["tasks"]["blimp"]["pairs"] == 6 and r1["tasks"]["wuggy"]["pairs"] == 4
    assert r1["tasks"]["storycloze"]["length_bias"]["sSC"]["pairs"] == 3
    assert json.loads((tmp_path / "a" / "bench_report.json").read_text())["seed"] == 5


def test_resolve_tasks():
    assert resolve_tasks("all") == ["storycloze", "blimp", "wuggy"]
    assert resolve_tasks("blimp,wuggy") == ["blimp", "wuggy"]
    # the preference pairs are training data: built when named, never by "all" alone
    assert resolve_tasks("prefs") == ["prefs"] and resolve_tasks("all,prefs") == ["storycloze", "blimp", "wuggy", "prefs"]
    try:
        resolve_tasks("sbloop")
    except ValueError as e:
        assert "sbloop" in str(e)
    else:
        raise AssertionError("unknown task accepted")


def test_cli_builds_all_on_builtin_inputs_and_eval_reads_it(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "twist.cli.bench", "task=all", f"out_dir={out}", "progress=false",
           "storycloze.limit=2", "blimp.limit=4", "wuggy.limit=4", "blimp.n_voices=1", "wuggy.n_voices=1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "items/s" in proc.stdout
    assert (out / "config.yaml").is_file() and (out / "bench_report.json").is_file()
    from twist.eval.storycloze import load_pairs
    from twist.eval.zr2021 import load_split, make_pairs

    assert len(load_pairs(out / "storycloze" / "tSC").pairs) == 2
    n_syn = sum(len(make_pairs(load_split(out / "syntactic", s, "syntactic"))) for s in ("dev", "test"))
    n_lex = sum(len(make_pairs(load_split(out / "lexical", s, "lexical"))) for s in ("dev", "test"))
    assert n_syn == 4 and n_lex == 4


def test_cli_bad_csv_header_names_the_column_and_leaves_no_out_dir(tmp_path, helpers):
    bad = helpers.write_stories(tmp_path / "bad.csv", header=helpers.STORY_HEADER.replace("InputSentence2", "Sentence2"))
    # storycloze comes after blimp here: the CSV is still checked before anything is built
    cmd = [sys.executable, "-m", "twist.cli.bench", "task=[blimp,storycloze]", f"out_dir={tmp_path / 'o'}",
           f"storycloze.csv={bad}", "progress=false"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "twist-bench: error:" in proc.stderr and "'InputSentence2'" in proc.stderr
    assert not (tmp_path / "o").exists()  # Hydra made it for its logs; the failed run removed it
    # a directory that already holds a build is never removed
    (tmp_path / "o" / "lexical").mkdir(parents=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and (tmp_path / "o" / "lexical").is_dir()


def test_rejects_log_is_written_even_when_empty_and_not_appended_to(espeak, tmp_path, helpers):
    good = helpers.write_stories(tmp_path / "good.csv")
    out = tmp_path / "o"
    build_benchmarks("storycloze", out, tts=espeak, storycloze={"csv": str(good)}, progress=False)
    assert (out / "rejects.jsonl").read_text() == ""
    bad = helpers.write_stories(tmp_path / "bad.csv", rows=[*helpers.STORIES, ("s4", "a", "b", "c", "d", "e", "f", "3")])
    for _ in range(2):  # a rerun lists each reject once, not once per run
        rep = build_benchmarks("storycloze", out, tts=espeak, storycloze={"csv": str(bad)}, progress=False)
        assert rep["rejects"] == 1 and len((out / "rejects.jsonl").read_text().splitlines()) == 1


def test_cli_missing_engine_names_the_package(tmp_path):
    cmd = [sys.executable, "-m", "twist.cli.bench", "task=blimp", f"out_dir={tmp_path / 'o'}",
           "tts.executable=espeak-ng-missing", "progress=false"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "apt-get install espeak-ng" in proc.stderr
