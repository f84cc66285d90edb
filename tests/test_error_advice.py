"""Every setting an error message tells the user to pass exists in the configs, under that name."""

import ast
import re
from pathlib import Path

import yaml

import twist

ROOT = Path(twist.__file__).resolve().parent
CONFIGS = ROOT / "configs"

# ``key=`` right after words that give advice ("pass X=...", "set X=...", "e.g. X=...")
ADVICE = re.compile(r"\b(?:pass|set|use|with|needs|add|e\.g\.|or|first:|once:)\s+\+{0,2}([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*)=",
                    re.IGNORECASE)
# names that look like settings in a message but are something else, each with where it lives
NOT_SETTINGS = {
    "weights_only": "the torch.load argument, named to say how twist reads a file",
    "offset": "an argument of twist.lm.import_textlesslib_lm (a library call, no CLI)",
}


# the primary config whose command surfaces a module's errors (first match wins)
OWNER = [
    ("cli/", None),  # cli/<stage>.py -> <stage>.yaml
    ("schema.py", "train"), ("mos/", "mos"),
    ("tokenizer/", "tokenize"), ("audio.py", "tokenize"), ("units.py", "tokenize"),
    ("train/plot.py", "plot"), ("train/", "train"), ("lm/", "train"), ("checkpoint.py", "train"),
    ("eval/", "eval"), ("vocoder/", "vocoder"), ("asr.py", "asr"), ("generate.py", "generate"),
    ("bench/", "bench"), ("demo/", "demo"),
]
# groups twist-train takes with +group=name (not in its defaults list)
PLUS_GROUPS = {"train": ["model", "init", "experiment"]}


def _keys(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}{k}"
            yield key
            yield from _keys(v, key + ".")


def _group_keys(group: str) -> set[str]:
    keys = {group}  # a group is chosen as group=name
    for f in (CONFIGS / group).glob("*.yaml"):
        text = f.read_text()
        is_global = "@package _global_" in "".join(text.splitlines(True)[:2])
        keys.update(_keys(yaml.safe_load(text) or {}, "" if is_global else group + "."))
    return keys


def config_keys(primary: str) -> set[str]:
    """Every key of ``<primary>.yaml``'s schema (twist.cli.schemas) and YAML, and of the config
    groups it can compose."""
    from twist.cli.schemas import SCHEMAS
    from twist.schema import declared_keys

    name = {"asr": "asr_run", "mos": "mos_build"}.get(primary, primary)
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()) or {}
    keys = set(_keys(data))
    schema = SCHEMAS.get(name)
    if schema is not None:
        keys |= set(declared_keys(schema))
    if primary == "mos":
        keys |= set(declared_keys(SCHEMAS["mos_score"]))
    groups = [next(iter(d)) for d in data.get("defaults") or [] if isinstance(d, dict)]
    for g in [*groups, *PLUS_GROUPS.get(primary, [])]:
        if (CONFIGS / g).is_dir():
            keys |= _group_keys(g)
    return keys


def owner(rel: str) -> str:
    for prefix, primary in OWNER:
        if rel.startswith(prefix):
            return primary or Path(rel).stem
    raise AssertionError(f"no command owns {rel}: add it to OWNER")


def advice_in_errors() -> list[tuple[str, str]]:
    out = []
    for f in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = " ".join(n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str))
                out += [(f"{f.relative_to(ROOT)}:{node.lineno}", m.group(1)) for m in ADVICE.finditer(text)]
    return out


def test_every_key_an_error_advises_exists_in_that_commands_config():
    advice = advice_in_errors()
    assert len(advice) > 10  # the scan finds the advice it is meant to check
    wrong = [(where, key) for where, key in advice
             if key not in NOT_SETTINGS and key not in config_keys(owner(where.split(":")[0]))]
    assert not wrong, f"errors advise settings that do not exist: {wrong}"
