"""Run identity: a run directory tells the truth about what made it.

A rerun into an existing run dir with a setting that defines its contents changed is refused
in one line naming the setting (old and new value), and leaves every file as it was; a
refused command writes nothing anywhere; a sweep is checked whole before its first cell runs.
The runs are made by the real CLIs, once per module, on toy data.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.vocoder.conftest import tone_audio
from tests.vocoder.test_cli import SMALL_GEN

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN = ["+model=tiny", "data.max_tokens=64", "train.global_batch=4", "train.micro_batch=2", "logger=jsonl",
         "train.progress=false", "train.valid_every=0", "train.num_threads=1"]


def _cli(module: str, *args: str, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600, env=ENV,
                       cwd=cwd)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` with its content hash (directories: ``dir``)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One run of every stage, each made by its CLI: tokenize, train, vocoder train and
    resynth, generate, eval, bench and mos build."""
    from twist.audio import save_audio

    root = tmp_path_factory.mktemp("identity")
    rng = np.random.default_rng(0)
    wavs = root / "wavs"
    for i in range(6):
        frames = np.repeat(rng.integers(0, 8, 10), rng.integers(2, 6, 10))
        save_audio(wavs / f"u{i}.wav", tone_audio(frames), 16000)
    r = {"root": root, "wavs": wavs}
    r["tokenize"] = root / "units"
    r["tokenize_args"] = [f"input.audio_dir={wavs}", f"out_dir={r['tokenize']}", "tokenizer.n_units=8",
                          "num_workers=0", "device=cpu", "progress=false", "split.valid=0.2"]
    _cli("twist.cli.tokenize", *r["tokenize_args"])
    r["train"] = root / "train"
    r["train_args"] = [*TRAIN, "+init=cold", f"data.path={r['tokenize']}", f"out_dir={r['train']}",
                       "train.max_steps=2"]
    _cli("twist.cli.train", *r["train_args"])
    r["vocoder"] = root / "voc"
    r["vocoder_args"] = ["mode=train", f"units_dir={r['tokenize']}", f"audio_dir={wavs}", f"out_dir={r['vocoder']}",
                         "train.steps=2", "train.batch_size=2", "train.n_valid=1", "progress=false", *SMALL_GEN]
    _cli("twist.cli.vocoder", *r["vocoder_args"])
    r["resynth"] = root / "resynth"
    r["resynth_args"] = ["mode=resynth", f"vocoder={r['vocoder']}", f"tokenizer_dir={r['tokenize']}/tokenizer",
                         f"audio={wavs}", f"out_dir={r['resynth']}", "asr=none", "limit=2", "rtf_seconds=null"]
    _cli("twist.cli.vocoder", *r["resynth_args"])
    r["generate"] = root / "gen"
    r["generate_args"] = [f"lm={r['train']}/speech_lm", f"tokenizer_dir={r['tokenize']}/tokenizer",
                          f"vocoder={r['vocoder']}", f"prompts=[{wavs}]", f"out_dir={r['generate']}", "limit=2",
                          "sampling.max_seconds=0.3", "sampling.seed=5", "prompt_seconds=0.5",
                          "sampling.stop_at_eos=false"]
    _cli("twist.cli.generate", *r["generate_args"])
    r["eval"] = root / "eval"
    r["eval_args"] = [f"model_path={r['train']}/speech_lm", f"benchmarks.ppl.dataset={r['tokenize']}",
                      "benchmarks.ppl.split=all", f"out_dir={r['eval']}", "progress=false"]
    _cli("twist.cli.eval", *r["eval_args"])
    r["bench"] = root / "bench"
    r["bench_args"] = ["task=blimp", f"out_dir={r['bench']}", "blimp.limit=4", "blimp.n_voices=1", "progress=false",
                       "workers=1"]
    _cli("twist.cli.bench", *r["bench_args"])
    r["mos_build"] = root / "mos"
    r["mos_build_args"] = ["build", f"systems={{a: {r['generate']}}}", f"out_dir={r['mos_build']}", "progress=false"]
    _cli("twist.cli.mos", *r["mos_build_args"])
    return r


def _refused(module: str, args: list[str], capsys, monkeypatch) -> str:
    """Run a CLI's ``main`` in this process; it must stop with one line and exit code 2."""
    import importlib

    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", [module, *args])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# stage, module, the change, the key the error must name (and its old and new value)
CHANGES = [
    ("tokenize", "twist.cli.tokenize", ["tokenizer.n_units=9"], "tokenizer.n_units: 8 -> 9"),
    ("train", "twist.cli.train", ["optim.weight_decay=0.5"], "optim.weight_decay: 0.01 -> 0.5"),
    ("train", "twist.cli.train", ["data.interleave.span=5"], "data.interleave.span: 10.0 -> 5.0"),
    ("vocoder", "twist.cli.vocoder", ["train.lr=0.005"], "train.lr: 0.001 -> 0.005"),
    ("resynth", "twist.cli.vocoder", ["predict_durations=true"], "predict_durations: false -> true"),
    ("generate", "twist.cli.generate", ["sampling.temperature=0.5"], "sampling.temperature: 1.0 -> 0.5"),
    ("generate", "twist.cli.generate", ["prompt_order=speech_first"], 'prompt_order: "text_first" -> "speech_first"'),
    ("eval", "twist.cli.eval", ["benchmarks.prefs.split=all"], 'benchmarks.prefs.split: "valid" -> "all"'),
    ("eval", "twist.cli.eval", ["score_eos=false"], "score_eos: true -> false"),
    ("bench", "twist.cli.bench", ["seed=3"], "seed: 0 -> 3"),
    ("mos_build", "twist.cli.mos", ["page.seed=1"], "page.seed: 0 -> 1"),
]


@pytest.mark.parametrize("stage,module,change,named", CHANGES, ids=[f"{c[0]}-{c[2][0].split('=')[0]}" for c in CHANGES])
def test_a_rerun_with_a_changed_identity_setting_is_refused_naming_it_and_leaves_every_file_as_it_was(
        runs, stage, module, change, named, capsys, monkeypatch):
    out = runs[stage]
    before = snapshot(runs["root"])
    err = _refused(module, [*runs[f"{stage}_args"], *change], capsys, monkeypatch)
    assert named in err and str(out) in err and "allow_changes=[" in err
    assert snapshot(runs["root"]) == before


def test_a_rerun_with_only_free_settings_changed_goes_on_and_records_them(runs):
    args = [a for a in runs["resynth_args"] if not a.startswith("limit=")]
    _cli("twist.cli.vocoder", *args, "limit=3")
    rec = json.loads((runs["resynth"] / "identity.json").read_text())
    assert rec["free"]["limit"] == 3
    assert rec["history"][-1]["changes"] == {"limit": {"old": 2, "new": 3}}


def test_a_resume_with_another_init_is_refused_and_the_run_keeps_its_record(runs):
    before = snapshot(runs["train"])
    args = [a for a in runs["train_args"] if a not in ("+init=cold", "train.max_steps=2")]
    p = _cli("twist.cli.train", *args, "+init=warm", "train.max_steps=3", ok=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert 'init.name: "cold" -> "warm"' in p.stderr
    assert snapshot(runs["train"]) == before
    config = (runs["train"] / "config.yaml").read_text()
    assert "name: cold" in config and "name: warm" not in config


def test_a_refused_command_leaves_config_yaml_as_it_was(runs, capsys, monkeypatch):
    for stage, module, change in (("train", "twist.cli.train", "data.fraction=0.5"),
                                  ("mos_build", "twist.cli.mos", "page.seed=7")):
        config = (runs[stage] / "config.yaml").read_bytes()
        _refused(module, [*runs[f"{stage}_args"], change], capsys, monkeypatch)
        assert (runs[stage] / "config.yaml").read_bytes() == config


def test_allow_changes_goes_on_and_records_the_change(runs, tmp_path):
    import shutil

    run = tmp_path / "train"
    shutil.copytree(runs["train"], run)
    args = [a.replace(str(runs["train"]), str(run)) for a in runs["train_args"] if a != "train.max_steps=2"]
    _cli("twist.cli.train", *args, "train.max_steps=3", "optim.lr_max=1e-3", "allow_changes=[optim.lr_max]")
    rec = json.loads((run / "identity.json").read_text())
    assert rec["settings"]["optim.lr_max"] == 1e-3
    last = rec["history"][-1]
    assert last["step"] == 2 and last["changes"]["optim.lr_max"] == {"old": None, "new": 0.001}
    assert last["changes"]["train.max_steps"] == {"old": 2, "new": 3}


def test_a_generate_rerun_with_another_model_or_sampling_never_reuses_the_old_clips(runs, tmp_path):
    import shutil

    gen = tmp_path / "gen"
    shutil.copytree(runs["generate"], gen)
    args = [a.replace(str(runs["generate"]), str(gen)) for a in runs["generate_args"]]
    first = json.loads((gen / "u0.json").read_text())
    assert first["made_by"]["lm"] == f"{runs['train']}/speech_lm" and first["made_by"]["sampling"]["seed"] == 5
    assert first["made_by"]["lm_fingerprint"] and first["made_by"]["vocoder_fingerprint"]
    # another sampling seed: refused, unless allowed; then every clip is made again
    p = _cli("twist.cli.generate", *args, "sampling.seed=6", ok=False)
    assert p.returncode == 2 and "sampling.seed: 5 -> 6" in p.stderr
    p = _cli("twist.cli.generate", *[a for a in args if a != "sampling.seed=5"], "sampling.seed=6",
             "allow_changes=[sampling.seed]")
    assert "2 new continuations" in p.stdout
    assert json.loads((gen / "u0.json").read_text())["made_by"]["sampling"]["seed"] == 6
    # the same settings again: nothing to do
    p = _cli("twist.cli.generate", *[a for a in args if a != "sampling.seed=5"], "sampling.seed=6")
    assert "0 new continuations" in p.stdout
    # the model dir's content changed under the same path: refused, naming it
    lm = tmp_path / "lm"
    shutil.copytree(runs["train"] / "speech_lm", lm)
    args = [a.replace(f"{runs['train']}/speech_lm", str(lm)) for a in args]
    _cli("twist.cli.generate", *[a.replace(str(gen), str(tmp_path / "gen2")) for a in args])
    weights = lm / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)
    weights.write_bytes(bytes(data))
    p = _cli("twist.cli.generate", *[a.replace(str(gen), str(tmp_path / "gen2")) for a in args], ok=False)
    assert p.returncode == 2 and "content of lm changed" in p.stderr


def test_a_sweep_whose_cells_share_an_out_dir_is_refused_before_any_cell_runs(runs, tmp_path):
    args = [*TRAIN, "+init=cold", f"data.path={runs['tokenize']}", "train.max_steps=1"]
    p = _cli("twist.cli.train", "-m", *args, f"out_dir={tmp_path / 'm5'}", "optim.lr_max=1e-4,4e-3", ok=False,
             cwd=tmp_path)
    assert p.returncode == 2 and "would share out_dir" in p.stderr and "optim.lr_max=0.004" in p.stderr
    assert sorted(os.listdir(tmp_path)) == []  # no run dir, no multirun/ dir, no log


def test_hydra_interpolations_in_out_dir_give_each_cell_its_own_run(runs, tmp_path, capsys, monkeypatch):
    args = [*TRAIN, "+init=cold", f"data.path={runs['tokenize']}", "train.max_steps=1",
            f"out_dir={tmp_path}/sw/${{hydra:job.num}}", f"hydra.sweep.dir={tmp_path}/sweep"]
    _cli("twist.cli.train", "-m", *args, "optim.lr_max=1e-4,4e-3")
    lrs = [json.loads((tmp_path / "sw" / str(i) / "identity.json").read_text())["settings"]["optim.lr_max"]
           for i in (0, 1)]
    assert lrs == [1e-4, 4e-3]
    # a second sweep whose cell 1 would resume cell 1 of the first with another lr: refused
    # before cell 0 starts, and nothing is written anywhere
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    err = _refused("twist.cli.train", ["-m", *args, "optim.lr_max=1e-4,5e-3"], capsys, monkeypatch)
    assert "sw/1" in err and "optim.lr_max: 0.004 -> 0.005" in err
    assert snapshot(tmp_path) == before


def test_a_refused_command_writes_no_file_anywhere(runs, tmp_path, monkeypatch):
    """A bad input found after the command line was accepted: no run dir, no log, no .hydra."""
    work = tmp_path / "cwd"
    work.mkdir()
    for module, args in [
        ("twist.cli.train", [*TRAIN, "+init=cold", f"data.path={tmp_path}/nowhere", f"out_dir={work}/run"]),
        ("twist.cli.eval", [f"model_path={tmp_path}/nowhere", f"out_dir={work}/ev"]),
        ("twist.cli.tokenize", [f"input.audio_dir={tmp_path}/nowhere", f"out_dir={work}/u"]),
        ("twist.cli.generate", [*runs["generate_args"][:3], f"prompts=[{tmp_path}/nowhere]", f"out_dir={work}/g"]),
    ]:
        p = _cli(module, *args, ok=False, cwd=work)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, (module, p.stderr[-2000:])
        assert sorted(os.listdir(work)) == [], (module, os.listdir(work))


UNWRITABLE = "/sys/twist-test-unwritable/out"


@pytest.mark.parametrize("stage,module", [(c[0], c[1]) for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_an_unwritable_out_dir_is_one_line(runs, stage, module, capsys, monkeypatch):
    try:
        os.makedirs(UNWRITABLE)
    except PermissionError:
        pass
    else:  # pragma: no cover (a machine whose /sys is writable)
        pytest.skip("/sys is writable here")
    args = [a if not a.startswith("out_dir=") else f"out_dir={UNWRITABLE}" for a in runs[f"{stage}_args"]]
    err = _refused(module, args, capsys, monkeypatch)
    assert "not writable" in err and UNWRITABLE.rsplit("/", 1)[0] in err
