"""Typed settings everywhere: every settings block is a dataclass whose defaults are written once.

Two checks over the whole tree of schemas:

* every settings block reachable from a stage's schema (nested dataclasses, and each option of a
  block chosen by a field, such as ``asr`` by ``backend``) refuses a mistyped key before any work,
  in one line that names the key and the closest valid one;
* no group file (``twist/configs/<group>/*.yaml``) sets a key to the value the schema already
  gives it: group files only select or override.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import MISSING

from twist.cli.common import CONFIGS, check_command_line
from twist.cli.schemas import COMMANDS, GROUPS, SCHEMAS
from twist.schema import CHOICE

# what each stage needs on its command line besides its required paths (filled with /x below)
NEEDS = {"train": ["+model=tiny", "+init=cold"], "generate": ["prompts=[/x]"], "plot": ["runs=[/x]"],
         "mos_build": ["systems={a: /x}"], "vocoder": ["units_dir=/x", "audio_dir=/x"]}


def _type_of(owner: type, f: dataclasses.Field) -> Any:
    tp = typing.get_type_hints(owner)[f.name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in typing.get_args(tp) else tp  # D | None: D


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def _blocks(schema: type, prefix: str = "", select: tuple[str, ...] = ()) -> list[tuple[str, type, tuple[str, ...]]]:
    """``(dotted key, dataclass, overrides that select it)`` for every typed block under ``schema``."""
    out = [(prefix, schema, select)] if prefix else []
    for f in dataclasses.fields(schema):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = _type_of(schema, f)
        choice = f.metadata.get(CHOICE)
        if choice is not None:
            for option, cls in choice.options.items():
                required = tuple(f"{key}.{g.name}=/x" for g in dataclasses.fields(cls)
                                 if g.default is MISSING or (g.default is dataclasses.MISSING
                                                             and g.default_factory is dataclasses.MISSING))
                out += _blocks(cls, key, (*select, f"{key}.{choice.key}={option}", *required))
        elif dataclasses.is_dataclass(tp):
            out += _blocks(tp, key, select)
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            for name in _default(f) or {}:
                out += _blocks(typing.get_args(tp)[1], f"{key}.{name}", select)
    return out


def _base(name: str) -> list[str]:
    schema = SCHEMAS[name]
    required = [f"{f.name}=/x" for f in dataclasses.fields(schema)
                if _default(f) is MISSING and _type_of(schema, f) is str]
    return required + NEEDS.get(name, [])


BLOCKS = [(name, key, cls, select) for name, schema in SCHEMAS.items() for key, cls, select in _blocks(schema)]


def _one_line_error(capsys, name: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        check_command_line(COMMANDS[name], name, SCHEMAS[name], argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_the_walk_finds_the_new_blocks():
    found = {(name, key, cls.__name__) for name, key, cls, _ in BLOCKS}
    for want in [("asr_run", "asr", "FasterWhisperSettings"), ("vocoder", "asr", "HfWhisperSettings"),
                 ("generate", "asr", "NoAsrSettings"), ("eval", "benchmarks.generation.asr", "FasterWhisperSettings"),
                 ("eval", "benchmarks.generation.text_lm", "TextLMConfig"), ("bench", "tts", "PiperSettings"),
                 ("tokenize", "tokenizer.encoder", "HubertSettings"), ("vocoder", "vocoder_model.generator", "GeneratorSettings"),
                 ("vocoder", "vocoder_model.discriminator", "DiscriminatorSettings"), ("vocoder", "vocoder_model.mel", "MelSettings")]:
        assert want in found, want


@pytest.mark.parametrize("name,key,cls,select", BLOCKS, ids=[f"{n}:{k}:{c.__name__}" for n, k, c, _ in BLOCKS])
def test_every_settings_block_refuses_a_mistyped_key_naming_it_and_the_closest(name, key, cls, select, capsys):
    """A key one letter off a real one, given where a user would type it, stops the command in one line."""
    good = max((f.name for f in dataclasses.fields(cls)), key=len)
    bad = good + good[-1]
    err = _one_line_error(capsys, name, [*_base(name), *select, f"{key}.{bad}=1"])
    assert err == f"{COMMANDS[name]}: error: unknown setting {key}.{bad} (did you mean {key}.{good}?)"


def test_a_key_of_another_backend_is_refused_naming_the_chosen_one(capsys):
    err = _one_line_error(capsys, "vocoder", [*_base("vocoder"), "asr=hf-whisper", "asr.model_dir=/m",
                                              "asr.compute_type=int8"])
    assert "asr.compute_type" in err and "hf-whisper" in err and "faster-whisper" in err


@pytest.mark.parametrize("argv,key,hint", [
    (["train.train.max_step=5"], "train.train.max_step", "train.train.max_steps"),
    (["tokenize.fit.max_frame=5"], "tokenize.fit.max_frame", "tokenize.fit.max_frames"),
    (["generate.sampling.top_kk=5"], "generate.sampling.top_kk", "generate.sampling.top_k"),
])
def test_the_demos_stage_overrides_are_checked_against_the_stage_schemas(argv, key, hint, capsys):
    assert _one_line_error(capsys, "demo", argv) == f"twist-demo: error: unknown setting {key} (did you mean {hint}?)"


# ---------------------------------------------------------------------------------------
# group files only select or override
# ---------------------------------------------------------------------------------------
GROUP_FILES = sorted(p for g in sorted({g for gs in GROUPS.values() for g in gs}) for p in (CONFIGS / g).glob("*.yaml"))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def _schema_default(schema: type, key: str, data: dict[str, Any]) -> Any:
    """The value ``schema`` gives ``key`` (``data``: the file's own keys, which pick a block's option)."""
    owner, parts, seen = schema, key.split("."), []
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if part not in fields:
            return MISSING
        f, rest = fields[part], parts[i + 1:]
        seen.append(part)
        choice = f.metadata.get(CHOICE)
        if choice is not None:
            if not rest or rest == [choice.key]:
                return MISSING  # the field that chooses the option is a selection, never a restatement
            picked = data.get(".".join([*seen, choice.key]), _default(f).get(choice.key))
            owner = choice.options[picked]
            continue
        tp = _type_of(owner, f)
        if not rest:
            return _default(f)
        if not dataclasses.is_dataclass(tp):
            return MISSING  # inside a free-form mapping (a model's HF config overrides)
        owner = tp
    return MISSING


def _same(a: Any, b: Any) -> bool:
    if dataclasses.is_dataclass(b) and not isinstance(b, type):
        b = dataclasses.asdict(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


@pytest.mark.parametrize("path", GROUP_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in GROUP_FILES])
def test_no_group_file_restates_a_schema_default(path: Path):
    """A group file that sets a key to its schema default writes that default a second time; the next
    change of the default would then silently not reach that group."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    group = path.parent.name
    first = text.splitlines()[0]
    package = first.split("@package", 1)[1].strip() if "@package" in first else group
    prefix = "" if package == "_global_" else package
    own = {k: v for k, v in data.items() if k not in ("defaults", "hydra")}
    flat = {k: v for k, v in _flat({prefix: own} if prefix else own).items() if k != prefix}
    restated = []
    for name in [n for n, gs in GROUPS.items() if group in gs]:
        for key, value in flat.items():
            default = _schema_default(SCHEMAS[name], key, flat)
            if default is not MISSING and _same(value, default):
                restated.append(f"{key}: {value!r}")
    assert not restated, f"{path.relative_to(CONFIGS)} restates schema defaults: {sorted(set(restated))}"


@pytest.mark.parametrize("name,argv,message", [
    ("vocoder", ["out_dir=/x", "mode=resynth"], "mode=resynth needs vocoder, tokenizer_dir, audio (e.g. vocoder=/path)"),
    ("vocoder", ["out_dir=/x"], "mode=train needs units_dir, audio_dir (e.g. units_dir=/path)"),
    ("vocoder", ["out_dir=/x", "mode=rtf", "rtf_seconds=null"], "mode=rtf needs rtf_seconds (e.g. rtf_seconds=10)"),
    ("tokenize", ["out_dir=/x", "mode=convert-legacy"], "mode=convert-legacy needs convert.src=<legacy k-means .bin>"),
    ("asr_run", ["asr=none"], "asr: choose a backend (asr=faster-whisper or asr=hf-whisper), not none"),
])
def test_each_modes_required_settings_are_the_schemas_to_check(name, argv, message, capsys):
    """The command line is refused before any work, by the schema, not by the CLI's body."""
    assert _one_line_error(capsys, name, argv) == f"{COMMANDS[name]}: error: {message}"
