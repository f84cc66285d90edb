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
    ("cli/asr.py", "asr_run"), ("cli/mos.py", "mos_build"), ("cli/", None),  # cli/<stage>.py -> <stage>.yaml
    ("mos/score.py", "mos_score"), ("mos/ratings.py", "mos_score"), ("mos/", "mos_build"),
    ("tokenizer/", "tokenize"), ("audio.py", "tokenize"), ("units.py", "tokenize"), ("asr.py", "asr_run"),
    ("train/plot.py", "plot"), ("train/", "train"), ("lm/", "train"), ("checkpoint.py", "train"),
    ("eval/", "eval"), ("vocoder/", "vocoder"), ("generate.py", "generate"),
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
    """Every key of ``<primary>.yaml``, of the schema it extends, and of the config groups it can compose."""
    from twist.cli.schemas import SCHEMAS
    from twist.schema import reference_rows

    data = yaml.safe_load((CONFIGS / f"{primary}.yaml").read_text()) or {}
    keys = set(_keys(data))
    if primary in SCHEMAS:  # typed configs: the keys live in the dataclass, not in the YAML file
        for key, *_ in reference_rows(SCHEMAS[primary]):
            parts = key.split(".")
            keys.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
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
