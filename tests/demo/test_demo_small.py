"""The demo's wiring, end to end at a tiny size: every stage CLI, the cache and the report.

The full-size run is ``make demo`` (timed in the README); this one shrinks every knob so it
fits in CI while still running each real stage as a subprocess.
"""

import json
import os
import subprocess
import sys
import time

import pytest

TINY = [
    "corpus.n_sentences=14", "corpus.voices_per_sentence=2", "corpus.voices=[en-us,en-us+f3]",
    "tokenize.split.valid=0.2", "tokenize.split.test=0.2",
    "bench.blimp.n_per_paradigm=2", "bench.wuggy.n_words=12", "bench.storycloze.limit=4",
    "train.model.num_layers=1", "train.data.max_tokens=64", "train.train.global_batch=4", "train.train.micro_batch=4",
    "train.train.max_steps=4", "train.train.valid_every=2", "train.train.save_every=2", "train.schedule.warmup_steps=2",
    "vocoder.train.steps=3", "vocoder.train.batch_size=2", "vocoder.train.max_minutes=1",
    "generate.sampling.max_seconds=0.5", "threads=1",
]  # fmt: skip


def _demo(out, *extra):
    cmd = [sys.executable, "-m", "twist.cli.demo", f"out_dir={out}", *TINY, *extra]
    # run from the output's parent: no stage may write beside the user's working directory
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=out.parent)


@pytest.mark.slow
def test_demo_runs_end_to_end_then_reuses_its_cache(tmp_path):
    out = tmp_path / "demo"
    p = _demo(out)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for path in [
        "units/meta.json", "bench/lexical/dev/gold.csv", "train/warm/speech_lm/config.json",
        "train/cold/speech_lm/config.json", "eval/warm/results.json", "eval/cold/results.json",
        "plot/valid_ppl.png", "vocoder", "resynth", "generate", "generate_cold", "mos/page/index.html", "mos/key.json",
    ]:  # fmt: skip
        assert (out / path).exists(), path
    # the listening test pairs warm and cold continuations of one prompt, with the original as gold
    key = json.loads((out / "mos" / "key.json").read_text())
    assert key["systems"] == ["warm", "cold"] and key["gold_system"] == "original" and len(key["items"]) == 3
    assert f"listening-test page (open it in a browser): {out / 'mos' / 'page' / 'index.html'}" in p.stdout
    assert list((out / "resynth").rglob("*.wav")) and list((out / "generate").rglob("*.wav"))
    table = p.stdout
    assert "warm" in table and "cold" in table and "Outputs:" in table
    for init in ("warm", "cold"):
        res = json.loads((out / "eval" / init / "results.json").read_text())
        assert "ppl" in json.dumps(res).lower()

    t0 = time.time()
    again = _demo(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert time.time() - t0 < 60
    assert again.stdout.count("cached") >= 12 and "running" not in again.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_failed_step_names_itself_and_how_to_rerun(tmp_path):
    out = tmp_path / "demo"
    # no TTS engine on the PATH makes the first step fail fast
    p = subprocess.run(
        [sys.executable, "-m", "twist.cli.demo", f"out_dir={out}", *TINY],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": str(tmp_path)},
    )  # fmt: skip
    assert p.returncode == 1
    assert "step 'corpus' failed" in p.stderr and "rerun it alone with" in p.stderr and "only=corpus" in p.stderr
