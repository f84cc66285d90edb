"""twist-eval on a ZR2021 split it cannot score whole: warn naming the files, exit 2 unless allowed.

The official ``validate`` rejects a submission that misses a gold.csv file, and one whose
split holds a wav that gold.csv does not list; twist reports either instead of printing
metrics from part of the set with exit code 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import twist
from tests.model_shapes import tiny_node

TINY_OPT = tiny_node("opt", max_position_embeddings=512)
COLUMNS = ["id", "filename", "voice", "frequency", "word", "phones", "length", "correct"]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


@pytest.fixture
def setup(tmp_path, ev):
    """A tokenizer, a speech LM for it, and lexical/dev with 3 word pairs of real audio."""
    import soundfile as sf

    from twist.lm import build_speech_lm, save_speech_lm
    from twist.tokenizer import KMeansQuantizer, UnitTokenizer
    from twist.tokenizer.logmel import LogMelEncoder

    rng = np.random.default_rng(0)
    tok = UnitTokenizer(LogMelEncoder(n_mels=16), KMeansQuantizer(rng.normal(size=(12, 16)).astype(np.float32)))
    tok.save(tmp_path / "tokenizer")
    save_speech_lm(build_speech_lm(TINY_OPT, "cold", tok.contract, verbose=False), tmp_path / "lm", tok.contract)
    split = tmp_path / "lexical" / "dev"
    split.mkdir(parents=True)
    rows = []
    for i in range(3):
        for correct in (1, 0):
            name = f"w{i}_{correct}"
            sf.write(split / f"{name}.wav", rng.normal(scale=0.1, size=8000).astype(np.float32), 16000)
            rows.append({"id": str(i), "filename": name, "voice": "v", "frequency": "0", "word": f"x{i}{correct}",
                         "phones": "a", "length": "1", "correct": str(correct)})
    ev.write_gold(split / "gold.csv", COLUMNS, rows)

    def cfg(out: str, *extra: str):
        return _compose([f"model_path={tmp_path / 'lm'}", f"tokenizer_dir={tmp_path / 'tokenizer'}",
                         "tokenizer_device=cpu", f"benchmarks.swuggy.dir={tmp_path / 'lexical'}",
                         f"out_dir={tmp_path / out}", "cache_dir=off", "device=cpu", "progress=false", *extra])

    return tmp_path, split, cfg


def _exit_code(run, cfg, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        run(cfg)
    except SystemExit as e:
        return int(e.code), capsys.readouterr().err
    return 0, capsys.readouterr().err


def test_an_unreadable_listed_wav_fails_the_run_naming_it_unless_allowed(setup, capsys):
    from twist.cli.eval import main

    root, split, cfg = setup
    (split / "w1_0.wav").write_bytes(b"")  # 0 bytes: rejected, so the pair of id 1 cannot be scored
    rc, err = _exit_code(main.run, cfg("strict"), capsys)
    assert rc == 2 and "w1_0" in err and "allow_incomplete=true" in err
    summary = json.loads((root / "strict" / "results.json").read_text())["benchmarks"]["sWUGGY/dev"]
    assert summary["submission_complete"] is False and summary["missing_files"] == ["w1_0"]  # recorded all the same
    rc, err = _exit_code(main.run, cfg("allowed", "allow_incomplete=true"), capsys)
    assert rc == 0 and "w1_0" in err  # still warned
    summary = json.loads((root / "allowed" / "results.json").read_text())["benchmarks"]["sWUGGY/dev"]
    assert summary["n_pairs"] == 2 and summary["n_pairs_skipped"] == 1 and summary["complete"] is False


def test_a_truncated_listed_wav_is_a_reject_with_the_reason_and_fails_the_run(setup, capsys):
    from twist.cli.eval import main
    from twist.rejects import RejectsLog

    root, split, cfg = setup
    wav = split / "w1_0.wav"
    wav.write_bytes(wav.read_bytes()[:-4000])  # the header still promises 8000 frames
    rc, err = _exit_code(main.run, cfg("strict"), capsys)
    assert rc == 2 and "w1_0" in err
    summary = json.loads((root / "strict" / "results.json").read_text())["benchmarks"]["sWUGGY/dev"]
    assert summary["complete"] is False and summary["missing_files"] == ["w1_0"]
    reasons = {Path(r["item"]).name: r["reason"] for r in RejectsLog.read(root / "strict" / "rejects.jsonl")}
    assert "truncated" in reasons["w1_0.wav"] and "8000 frames" in reasons["w1_0.wav"]


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
def test_a_listed_fifo_is_a_reject_saying_what_it_is_not_a_missing_file(setup, capsys):
    import os

    from twist.cli.eval import main
    from twist.rejects import RejectsLog

    root, split, cfg = setup
    (split / "w1_0.wav").unlink()
    os.mkfifo(split / "w1_0.wav")  # opening it would block the run: refused unopened
    rc, err = _exit_code(main.run, cfg("strict"), capsys)
    assert rc == 2 and "w1_0" in err and "does not exist" not in err
    reasons = {Path(r["item"]).name: r["reason"] for r in RejectsLog.read(root / "strict" / "rejects.jsonl")}
    assert reasons == {"w1_0.wav": "not a regular file (a FIFO)"}


def test_an_extra_wav_not_in_gold_csv_fails_the_run_naming_it_unless_allowed(setup, capsys):
    import shutil

    from twist.cli.eval import main

    root, split, cfg = setup
    shutil.copy(split / "w0_1.wav", split / "stray.wav")
    rc, err = _exit_code(main.run, cfg("strict"), capsys)
    assert rc == 2 and "stray.wav" in err
    summary = json.loads((root / "strict" / "results.json").read_text())["benchmarks"]["sWUGGY/dev"]
    assert summary["extra_files"] == ["stray.wav"] and summary["complete"] is False
    rc, _ = _exit_code(main.run, cfg("allowed", "allow_incomplete=true"), capsys)
    assert rc == 0


def test_a_complete_split_passes_and_says_so(setup, capsys):
    from twist.cli.eval import main

    root, _, cfg = setup
    rc, err = _exit_code(main.run, cfg("ok"), capsys)
    assert rc == 0, err
    summary = json.loads((root / "ok" / "results.json").read_text())["benchmarks"]["sWUGGY/dev"]
    assert summary["complete"] is True and summary["missing_files"] == [] and summary["extra_files"] == []


def test_progress_bars_name_their_benchmark_and_progress_false_silences_every_bar(setup, capsys):
    from twist.cli.eval import main

    root, _, cfg = setup
    ssc = root / "sSC"
    ssc.mkdir()
    import shutil

    shutil.copy(root / "lexical" / "dev" / "w0_1.wav", ssc / "a.wav")
    shutil.copy(root / "lexical" / "dev" / "w0_0.wav", ssc / "b.wav")
    (ssc / "pairs.jsonl").write_text(json.dumps({"id": "s0", "positive": "a.wav", "negative": "b.wav"}) + "\n")
    rc, err = _exit_code(main.run, cfg("bars", "progress=true", f"benchmarks.ssc.path={ssc}"), capsys)
    assert rc == 0, err
    bars = [line for line in err.replace("\r", "\n").splitlines() if "it/s" in line or "s/it" in line or "|" in line]
    assert any(line.lstrip().startswith("sWUGGY/dev") for line in bars), bars
    assert any(line.lstrip().startswith("sSC") for line in bars), bars
    rc, err = _exit_code(main.run, cfg("quiet", "progress=false", f"benchmarks.ssc.path={ssc}"), capsys)
    assert rc == 0 and "|" not in err and "Loading weights" not in err, err
