"""twist-tokenize end to end: bad files, strict mode, manifests, resume after kill -9, sharding."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from twist.rejects import RejectsLog
from twist.schema import to_typed
from twist.tokenizer import UnitTokenizer
from twist.tokenizer.config import TokenizeRunConfig
from twist.tokenizer.pipeline import (
    length_batches,
    list_inputs,
    merge_outputs,
    run_tokenize,
)
from twist.units import UnitDataset, dedup, expand

CLI = [sys.executable, "-m", "twist.cli.tokenize"]
FAST = ["tokenizer.n_units=8", "num_workers=0", "progress=false", "fit.niter=5"]


def _env(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"OMP_NUM_THREADS": "1", **kw})
    return env


def _settings(audio_dir, out_dir, **kw):
    """A tokenize config from the schema: tiny log-mel, K=8, no workers; ``audio_dir``/``manifest`` go to input."""
    inp = {k: kw.pop(k) for k in ("audio_dir", "manifest") if k in kw}
    inp.setdefault("audio_dir", str(audio_dir))
    return to_typed(TokenizeRunConfig, {"out_dir": str(out_dir), "num_workers": 0, "progress": False, "fit": {"niter": 5},
                                        "tokenizer": {"encoder": {"name": "logmel"}, "n_units": 8, "frame_rate": 50.0},
                                        "input": inp, **kw})


def test_bad_files_are_rejected_and_good_ones_tokenized(tmp_path, audio_dir):
    wavs, good = audio_dir
    out = tmp_path / "out"
    r = subprocess.run([*CLI, f"input.audio_dir={wavs}", f"out_dir={out}", *FAST],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "done:" in r.stdout and "rejected" in r.stdout  # the summary
    ds = UnitDataset(out)
    assert sorted(ds.ids) == sorted(good)
    tok = UnitTokenizer.load(out / "tokenizer")
    for i, row in enumerate(ds.rows):
        assert abs(row["n_frames"] - good[row["id"]] * 50) <= 1 + 1e-9, row
        raw = tok.encode_file(wavs / f"{row['id']}.wav")
        u, d = dedup(raw)
        np.testing.assert_array_equal(ds[i], u)
        np.testing.assert_array_equal(expand(ds[i], ds.durations(i)), raw)
    rejects = {Path(r["item"]).stem: r["reason"] for r in RejectsLog.read(out / "rejects.jsonl")}
    assert set(rejects) == {"corrupt", "empty", "tiny"}
    assert "empty" in rejects["empty"] and "unreadable" in rejects["corrupt"] and "too short" in rejects["tiny"]
    assert (out / "config.yaml").exists() and (out / "tokenizer" / "tokenizer.json").exists()
    assert "done:" in (out / "tokenize.log").read_text()  # the run's log keeps what it printed
    meta = json.loads((out / "meta.json").read_text())
    assert meta["contract"]["frame_rate"] == 50.0 and meta["contract"]["n_units"] == 8

    strict = subprocess.run([*CLI, f"input.audio_dir={wavs}", f"out_dir={tmp_path / 'strict'}", "strict=true", *FAST],
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert strict.returncode == 2
    assert "twist-tokenize: error:" in strict.stderr and ("corrupt" in strict.stderr or "empty" in strict.stderr)


def test_manifests_list_the_same_inputs(tmp_path, audio_dir):
    wavs, _ = audio_dir
    from_dir = list_inputs(audio_dir=str(wavs))
    tsv = tmp_path / "train.tsv"
    lines = [str(wavs)] + [f"{Path(it.path).name}\t{123}" for it in from_dir]
    tsv.write_text("\n".join(lines) + "\n")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps({"path": str(Path(it.path).relative_to(tmp_path))}) + "\n" for it in from_dir))
    for items in (list_inputs(manifest=str(tsv)), list_inputs(manifest=str(jsonl))):
        assert [(i.id, Path(i.path).resolve()) for i in items] == [(i.id, Path(i.path).resolve()) for i in from_dir] or \
            [Path(i.path).resolve() for i in items] == [Path(i.path).resolve() for i in from_dir]
    assert list_inputs(manifest=str(tsv))[0].n_samples == 123
    with pytest.raises(ValueError, match="exactly one"):
        list_inputs(audio_dir=str(wavs), manifest=str(tsv))


def test_length_batches_cover_everything_once():
    lengths = [3.0, 0.5, 10.0, 0.7, 2.9, 3.1, 0.6]
    batches = length_batches(lengths, max_seconds=7.0, max_items=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 2 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 7.0)


def test_merge_is_idempotent(tmp_path, audio_dir):
    wavs, _ = audio_dir
    s = _settings(wavs, tmp_path / "out")
    run_tokenize(s)
    files = ["manifest.jsonl", "meta.json", "rejects.jsonl"]
    before = {f: (tmp_path / "out" / f).read_bytes() for f in files}
    merge_outputs(tmp_path / "out", split=dataclasses.asdict(s.split))
    run_tokenize(s, mode="merge")
    assert {f: (tmp_path / "out" / f).read_bytes() for f in files} == before
    # a rerun of a finished run does no work and changes nothing
    summary = run_tokenize(s)
    assert summary["this_rank"]["ok"] == 0 and summary["utterances"] == len(UnitDataset(tmp_path / "out"))
    assert len(RejectsLog.read(tmp_path / "out" / "rejects.jsonl")) == 3


def test_a_rerun_refuses_an_input_that_changed_since_it_was_tokenized_naming_it(tmp_path, audio_dir):
    from twist.errors import InputError

    wavs, _ = audio_dir
    out = tmp_path / "out"
    s = _settings(wavs, out)
    run_tokenize(s)
    dataset = {f: (out / f).read_bytes() for f in ("manifest.jsonl", "meta.json", "rejects.jsonl")}
    st = (wavs / "utt1.wav").stat()
    os.utime(wavs / "utt1.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, the bytes the same
    assert run_tokenize(s)["this_rank"]["ok"] == 0  # kept: nothing changed that the units depend on

    sf.write(wavs / "utt1.wav", np.zeros(int(st.st_size / 2) - 22, dtype=np.int16), 16000)  # other audio, same size
    assert (wavs / "utt1.wav").stat().st_size == st.st_size
    with pytest.raises(InputError) as e:
        run_tokenize(s)
    msg = str(e.value)
    assert "\n" not in msg and str(wavs / "utt1.wav") in msg and "changed since it was tokenized" in msg, msg
    assert {f: (out / f).read_bytes() for f in dataset} == dataset  # the dataset is as it was

    sf.write(wavs / "utt1.wav", np.zeros(800, dtype=np.int16), 16000)  # shorter: the size alone tells
    with pytest.raises(InputError, match=r"utt1\.wav changed since it was tokenized .*size"):
        run_tokenize(s)
    (wavs / "utt1.wav").unlink()
    (wavs / "corrupt.wav").write_bytes((wavs / "utt0.wav").read_bytes())  # a rejected file, since repaired
    with pytest.raises(InputError, match=r"corrupt\.wav changed since .* rejected it"):
        run_tokenize(s)


def _many_files(root: Path, n: int) -> list[str]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        sf.write(root / f"u{i:03d}.wav", (0.1 * rng.standard_normal(4000 + 160 * (i % 7))).astype(np.float32), 16000)
        ids.append(f"u{i:03d}")
    (root / "broken.wav").write_bytes(b"not audio at all")
    return ids


def _committed_ids(out: Path) -> list[str]:
    ids = []
    for p in sorted((out / "shards").glob("r*.jsonl")):
        ids += [json.loads(line)["id"] for line in p.read_text().splitlines() if line.strip()]
    return ids


@pytest.mark.slow
def test_resume_after_kill9(tmp_path):
    wavs, out = tmp_path / "wavs", tmp_path / "out"
    ids = _many_files(wavs, 120)
    run_tokenize(_settings(wavs, out), mode="fit")
    cmd = [*CLI, "mode=apply", f"input.audio_dir={wavs}", f"out_dir={out}", "shard_items=1", "batch.max_items=1", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.time() + 120
    while len(list((out / "shards").glob("r*.jsonl"))) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = _committed_ids(out)
    assert 10 <= len(committed) < len(ids), "the run should have been killed halfway"
    assert not (out / "meta.json").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(_committed_ids(out)) == ids  # every good file exactly once
    assert sorted(UnitDataset(out).ids) == ids
    rejects = RejectsLog.read(out / "rejects.jsonl")
    assert [Path(x["item"]).name for x in rejects] == ["broken.wav"]


@pytest.mark.slow
def test_two_ranks_under_torchrun_equal_one_process(tmp_path, audio_dir):
    wavs, _ = audio_dir
    one, two = tmp_path / "one", tmp_path / "two"
    args = [f"input.audio_dir={wavs}", *FAST, "shard_items=2"]
    r1 = subprocess.run([*CLI, f"out_dir={one}", *args], capture_output=True, text=True, env=_env(), timeout=300)
    assert r1.returncode == 0, r1.stderr
    torchrun = shutil.which("torchrun") or pytest.fail("torchrun not found")
    r2 = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29581", "-m", "twist.cli.tokenize",
                         f"out_dir={two}", *args], capture_output=True, text=True, env=_env(), timeout=300)
    assert r2.returncode == 0, r2.stderr
    assert {p.name.split("-")[0] for p in (two / "shards").glob("*.jsonl")} == {"r0000", "r0001"}
    a, b = UnitDataset(one), UnitDataset(two)
    assert a.contract == b.contract
    assert a.ids == b.ids
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i], b[i])
        np.testing.assert_array_equal(a.durations(i), b.durations(i))
    assert RejectsLog.read(one / "rejects.jsonl") == RejectsLog.read(two / "rejects.jsonl")


def test_merge_with_default_config_keeps_the_recorded_split(tmp_path, audio_dir):
    # `twist-tokenize mode=merge out_dir=...` runs with the config's default split; it must
    # not silently re-split a dataset that was made with another one
    wavs, _ = audio_dir
    out = tmp_path / "out"
    run_tokenize(_settings(wavs, out, split={"seed": 3, "valid": 0.3, "test": 0.3}))
    before = {f: (out / f).read_bytes() for f in ("manifest.jsonl", "meta.json")}
    run_tokenize(_settings(wavs, out, split={"seed": 0, "valid": 0.02, "test": 0.02}), mode="merge")
    assert {f: (out / f).read_bytes() for f in before} == before
    assert json.loads((out / "meta.json").read_text())["split"] == {"seed": 3, "valid": 0.3, "test": 0.3}
