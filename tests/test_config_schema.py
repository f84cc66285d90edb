"""Typed configs: every key is declared once, and a bad command line fails before any work, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from twist.cli.common import CONFIGS, check_command_line, register_schemas
from twist.cli.schemas import SCHEMAS, reference_markdown

ROOT = Path(__file__).resolve().parent.parent
BASE = {"train": ["+model=tiny", "+init=cold", "data.path=/data/units", "out_dir=/tmp/run"],
        "eval": ["model_path=/runs/x/speech_lm", "out_dir=/tmp/eval"],
        "tokenize": ["input.audio_dir=/data/wavs", "out_dir=/tmp/units"],
        "bench": ["out_dir=/tmp/bench"], "demo": [],
        "vocoder": ["out_dir=/tmp/voc", "units_dir=/data/units", "audio_dir=/data/wavs"]}


def _error(capsys, config: str, *argv: str, base: bool = True) -> str:
    with pytest.raises(SystemExit) as e:
        check_command_line(f"twist-{config}", config, SCHEMAS[config], [*(BASE.get(config, []) if base else []), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_config_reference_is_current():
    """docs/config-reference.md is generated from the schemas; regenerate it when a field changes."""
    assert (ROOT / "docs" / "config-reference.md").read_text() == reference_markdown(), (
        "run: python -m twist.cli.schemas > docs/config-reference.md")


def test_every_field_is_documented():
    from twist.schema import reference_rows

    undocumented = [f"{name}: {key}" for name, schema in SCHEMAS.items()
                    for key, _, _, meaning in reference_rows(schema) if not meaning]
    assert not undocumented


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_primary_configs_extend_their_schema_and_hold_no_defaults(name):
    """Defaults live in the schema only: the primary YAML lists its schema first and sets
    nothing but group choices and Hydra's own settings."""
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert data["defaults"][0] == f"{name}_schema"
    assert set(data) <= {"defaults", "hydra"}, sorted(set(data) - {"defaults", "hydra"})


@pytest.mark.parametrize("argv", [["train.max_step=5"], ["+train.max_step=5"]], ids=["plain", "plus"])
def test_unknown_key_fails_naming_it_and_the_closest_one(argv, capsys):
    err = _error(capsys, "train", *argv)
    assert err == "twist-train: error: unknown setting train.max_step (did you mean train.max_steps?)"


@pytest.mark.parametrize("argv,key,hint", [
    (["benchmarks.swuggy.dri=/x"], "benchmarks.swuggy.dri", "benchmarks.swuggy.dir"),
    (["+benchmarks.ppl.splitt=valid"], "benchmarks.ppl.splitt", "benchmarks.ppl.split"),
    (["batch_sise=4"], "batch_sise", "batch_size"),
])
def test_eval_unknown_keys_fail_naming_them(argv, key, hint, capsys):
    assert _error(capsys, "eval", *argv) == f"twist-eval: error: unknown setting {key} (did you mean {hint}?)"


@pytest.mark.parametrize("config,argv,key,hint", [
    ("tokenize", ["fit.nitre=3"], "fit.nitre", "fit.niter"),
    ("tokenize", ["+split.vaild=0.1"], "split.vaild", "split.valid"),
    ("bench", ["wuggy.n_word=10"], "wuggy.n_word", "wuggy.n_words"),
    ("demo", ["train.train.max_step=5"], "train.train.max_step", "train.train.max_steps"),
    ("vocoder", ["train.step=5"], "train.step", "train.steps"),
])
def test_every_stage_refuses_an_unknown_key_naming_it(config, argv, key, hint, capsys):
    assert _error(capsys, config, *argv) == f"twist-{config}: error: unknown setting {key} (did you mean {hint}?)"


def test_an_encoders_own_keys_are_checked_too(capsys):
    err = _error(capsys, "tokenize", "tokenizer=hubert-50hz-100", "tokenizer.encoder.path=/m", "+tokenizer.encoder.layr=6")
    assert "tokenizer.encoder.layr" in err and "tokenizer.encoder.layer" in err
    assert "tokenizer.encoder.path" in _error(capsys, "tokenize", "tokenizer=hubert-50hz-100")


def test_wrong_type_and_bad_choice_name_the_key(capsys):
    assert "train.max_steps" in _error(capsys, "train", "train.max_steps=ten")
    err = _error(capsys, "train", "train.precision=fp8")
    assert "train.precision" in err and "bf16" in err


def test_every_sweep_value_is_checked(capsys):
    err = _error(capsys, "train", "-m", "train.log_every=1,2,many")
    assert "train.log_every" in err and "many" in err
    err = _error(capsys, "train", "-m", "+experiment=table7_families", "data.path=/x", "+model=bloom-560m,bloom-9b",
                 base=False)
    assert "unknown model 'bloom-9b'" in err


def test_paper_sweeps_compose_for_every_cell():
    """Each experiment file's own sweep (hydra.sweeper.params) composes into valid configs."""
    for exp in ("table2_tokenizers", "table6_scaling", "table7_families", "table8_imagegpt"):
        check_command_line("twist-train", "train", SCHEMAS["train"], ["-m", f"+experiment={exp}", "data.path=/x"])


@pytest.mark.parametrize("config,group", [("train", "model"), ("train", "init"), ("train", "data"),
                                          ("train", "schedule"), ("train", "logger"), ("tokenize", "tokenizer"),
                                          ("bench", "tts"), ("vocoder", "vocoder_model"), ("vocoder", "asr")])
def test_every_group_file_fits_the_schema(config, group):
    """A stale or mistyped key in any group file fails this test rather than a user's run."""
    from twist.cli.common import _compose_and_check

    register_schemas()
    for option in sorted(p.stem for p in (CONFIGS / group).glob("*.yaml")):
        argv = [a for a in BASE[config] if not a.startswith(f"+{group}=")]
        prefix = "+" if group in ("model", "init") else ""
        extra = {"tokenizer": ["tokenizer.encoder.path=/m"] if option.startswith("hubert") else [],
                 "asr": ["asr.model_dir=/m"] if option == "hf-whisper" else []}.get(group, [])
        _compose_and_check(config, SCHEMAS[config], [*argv, f"{prefix}{group}={option}", *extra])


def test_the_cli_refuses_a_typo_before_any_work(tmp_path):
    """End to end: exit code 2, one line, and no run directory created."""
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "twist.cli.train", "+model=tiny", "+init=cold", f"data.path={tmp_path}",
                        f"out_dir={out}", "train.max_step=5"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == "twist-train: error: unknown setting train.max_step (did you mean train.max_steps?)"
    assert not out.exists()


def test_a_config_group_of_another_command_names_the_group_and_its_command(capsys):
    err = _error(capsys, "train", "+tts=espeak")
    assert err == ("twist-train: error: tts is a config group of twist-bench, not of twist-train (this command's "
                   "groups: model, init, objective, data, optim, schedule, logger, experiment)")
    err = _error(capsys, "eval", "+tokenizer=hubert-25hz-500")
    assert "tokenizer is a config group of twist-tokenize, not of twist-eval" in err


def test_help_lists_only_the_commands_own_config_groups():
    p = subprocess.run([sys.executable, "-m", "twist.cli.train", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    groups = [line.split(":")[0].strip() for line in p.stdout.splitlines() if line.startswith("  ")]
    assert groups == ["model", "init", "objective", "data", "optim", "schedule", "logger", "experiment"]
    assert "opt-350m" in p.stdout and "tts" not in p.stdout and "vocoder_model" not in p.stdout


def test_every_config_group_belongs_to_a_command_and_every_default_group_is_listed():
    from twist.cli.schemas import GROUPS

    groups = {p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name not in ("hydra", "__pycache__")}
    assert groups == {g for gs in GROUPS.values() for g in gs}
    for name in SCHEMAS:
        defaults = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["defaults"]
        listed = {next(iter(d)) for d in defaults if isinstance(d, dict) and not next(iter(d)).startswith("override")}
        assert listed <= set(GROUPS[name]), (name, listed)


def test_a_typo_under_cfg_job_goes_through_twists_check(capsys):
    err = _error(capsys, "train", "train.max_step=5", "--cfg", "job")
    assert err == "twist-train: error: unknown setting train.max_step (did you mean train.max_steps?)"
