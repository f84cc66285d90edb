"""twist-tokenize under hostile conditions: broken symlinks, kill -9 of the parent, a full disk."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from twist.errors import DiskFullError, InputError
from twist.rejects import RejectsLog
from twist.schema import to_typed
from twist.tokenizer.config import TokenizeRunConfig
from twist.tokenizer.pipeline import list_inputs, run_tokenize

CLI = [sys.executable, "-m", "twist.cli.tokenize"]
FAST = ["tokenizer.n_units=8", "progress=false", "fit.niter=5"]


def _env(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"OMP_NUM_THREADS": "1", **kw})
    return env


def _settings(out_dir, **kw):
    """A tokenize config from the schema: tiny log-mel, K=8, no workers; ``audio_dir``/``manifest`` go to input."""
    inp = {k: kw.pop(k) for k in ("audio_dir", "manifest") if k in kw}
    return to_typed(TokenizeRunConfig, {"out_dir": str(out_dir), "num_workers": 0, "progress": False, "fit": {"niter": 5},
                                        "tokenizer": {"encoder": {"name": "logmel"}, "n_units": 8, "frame_rate": 50.0},
                                        "input": inp, **kw})


def _wavs_with_bad_links(root: Path) -> list[str]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(root / f"u{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    os.symlink(root / "gone.wav", root / "dangling.wav")  # target never existed
    os.symlink(root / "loop_b.wav", root / "loop_a.wav")  # a -> b -> a
    os.symlink(root / "loop_a.wav", root / "loop_b.wav")
    os.symlink(root / "u0.wav", root / "alias.wav")  # a good link is an ordinary input
    return ["dangling", "loop_a", "loop_b"]


def test_broken_symlinks_in_audio_dir_are_rejected_like_manifest_entries(tmp_path):
    wavs = tmp_path / "wavs"
    bad = _wavs_with_bad_links(wavs)
    ids = [it.id for it in list_inputs(audio_dir=str(wavs))]
    assert set(bad) <= set(ids) and "alias" in ids  # listed, not silently dropped

    by_dir = run_tokenize(_settings(tmp_path / "a", audio_dir=str(wavs)))
    rej_dir = {r["id"]: r["reason"] for r in RejectsLog.read(tmp_path / "a" / "rejects.jsonl")}
    assert sorted(rej_dir) == bad and by_dir["rejected"] == 3 and by_dir["utterances"] == 5
    assert "dangling symlink" in rej_dir["dangling"] and "symlink loop" in rej_dir["loop_a"]

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(wavs / f"{i}.wav")}) + "\n" for i in sorted(ids)))
    run_tokenize(_settings(tmp_path / "b", manifest=str(manifest)))
    rej_manifest = {Path(r["item"]).stem: r["reason"] for r in RejectsLog.read(tmp_path / "b" / "rejects.jsonl")}
    assert rej_manifest == rej_dir  # the same paths, the same reasons, whichever way they came in

    with pytest.raises(InputError, match="dangling"):
        run_tokenize(_settings(tmp_path / "c", audio_dir=str(wavs), strict=True))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_rejected_with_the_same_reason_from_a_dir_and_from_a_manifest(tmp_path):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(wavs / f"u{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    os.mkfifo(wavs / "pipe.wav")  # opening it for reading would block: it must be refused unopened
    assert "pipe" in [it.id for it in list_inputs(audio_dir=str(wavs))]  # listed, not silently dropped

    by_dir = run_tokenize(_settings(tmp_path / "a", audio_dir=str(wavs)))
    rej_dir = {r["id"]: r["reason"] for r in RejectsLog.read(tmp_path / "a" / "rejects.jsonl")}
    assert by_dir["utterances"] == 3 and rej_dir == {"pipe": "not a regular file (a FIFO)"}

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(wavs / f"{i}.wav"), "id": i}) + "\n"
                                for i in ("pipe", "u0", "u1", "u2")))
    by_manifest = run_tokenize(_settings(tmp_path / "b", manifest=str(manifest)))
    rej_manifest = {r["id"]: r["reason"] for r in RejectsLog.read(tmp_path / "b" / "rejects.jsonl")}
    assert by_manifest["utterances"] == 3 and rej_manifest == rej_dir


def test_a_truncated_wav_is_rejected_with_the_reason_and_the_rest_tokenized(tmp_path):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(wavs / f"u{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    cut = wavs / "u1.wav"
    cut.write_bytes(cut.read_bytes()[:-6000])  # the header still promises 8000 frames
    summary = run_tokenize(_settings(tmp_path / "out", audio_dir=str(wavs)))
    assert summary["utterances"] == 2 and summary["rejected"] == 1
    (rej,) = RejectsLog.read(tmp_path / "out" / "rejects.jsonl")
    assert rej["id"] == "u1" and "truncated" in rej["reason"] and "8000 frames" in rej["reason"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (already dead, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children") as f:
            out += [int(x) for x in f.read().split()]
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_decode_workers_die_with_a_killed_tokenize_and_a_rerun_finishes(tmp_path):
    wavs, out = tmp_path / "wavs", tmp_path / "out"
    wavs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):  # 5 s each: a decoded batch fills the queue's pipe, as real audio does
        sf.write(wavs / f"u{i:03d}.wav", (0.1 * rng.standard_normal(80000)).astype(np.float32), 16000)
    run_tokenize(_settings(out, audio_dir=str(wavs)), mode="fit")
    cmd = [*CLI, "mode=apply", f"input.audio_dir={wavs}", f"out_dir={out}", "num_workers=2",
           "batch.max_items=1", "shard_items=1", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    workers: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= 2 and list((out / "shards").glob("r*.jsonl")):
            break
        time.sleep(0.01)
    assert len(workers) >= 2, "the run should have started its decode workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:  # do not leave them behind when the check fails
        os.kill(w, signal.SIGKILL)
    assert not orphans, "decode workers outlived their parent"
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "done: 60 utterances" in r.stdout


def test_disk_full_during_tokenize_is_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    """A real ENOSPC: the second unit shard's temporary file is swapped for a link to /dev/full,
    so the kernel itself refuses the write, as on a full disk."""
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        sf.write(wavs / f"u{i}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    s = _settings(tmp_path / "out", audio_dir=str(wavs), shard_items=2)
    run_tokenize(s, mode="fit")
    import twist.units as units_mod

    real_atomic_path = units_mod.atomic_path
    seen = {"shards": 0}

    @contextlib.contextmanager
    def atomic_path_on_a_full_disk(path, **kw):
        with real_atomic_path(path, **kw) as tmp:
            if str(path).endswith(".units.u16"):
                seen["shards"] += 1
                if seen["shards"] == 2:
                    tmp.unlink()
                    tmp.symlink_to("/dev/full")
            yield tmp

    monkeypatch.setattr(units_mod, "atomic_path", atomic_path_on_a_full_disk)
    with pytest.raises(DiskFullError) as e:
        run_tokenize(s, mode="apply")
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and str(tmp_path / "out") in msg
    assert not [p for p in (tmp_path / "out" / "shards").iterdir() if p.is_symlink()]
    monkeypatch.undo()
    summary = run_tokenize(s, mode="apply")
    assert summary["utterances"] == 6 and summary["rejected"] == 0
