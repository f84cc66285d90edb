"""What every CLI shares: compose the config, check it against its schema, map errors, save it.

A stage's CLI module is three things: its schema (a dataclass from ``twist/<stage>/config.py``),
a body that calls the library, and ``main = hydra_cli(prog, config_name, schema, body)``.
:func:`hydra_cli` registers every schema with Hydra's ConfigStore (the YAML files extend
them), checks the command line before any work (:func:`check_command_line`), runs Hydra, and
turns a :class:`twist.errors.TwistError` into one line and exit code 2. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twist.atomic import atomic_write_text
from twist.errors import ConfigError, TwistError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Hydra's own flags: they print or configure, and need no valid job config
_INFO_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--cfg", "-c",
               "--package", "-p", "--resolve")


def user_errors(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a CLI body so a :class:`TwistError` ends with ``prog: error: ...`` and exit code 2.

    Set ``TWIST_TRACEBACK=1`` to see the full traceback instead.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except TwistError as e:
                if os.environ.get("TWIST_TRACEBACK"):
                    raise
                fail(prog, str(e))

        return wrapper

    return deco


def fail(prog: str, message: str) -> None:
    """Print ``prog: error: message`` (one line) and exit 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def save_resolved_config(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the fully resolved config next to a stage's outputs, so any result can be rerun."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(cfg):
        cfg = OmegaConf.structured(cfg)
    path = Path(out_dir) / name
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def choices(group: str) -> list[str]:
    """The config files available in a group (``configs/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


# ---------------------------------------------------------------------------------------
# schemas and the command-line check
# ---------------------------------------------------------------------------------------
def register_schemas() -> None:
    """Store every stage's schema in Hydra's ConfigStore as ``<config name>_schema``; the
    primary YAML files list it first in their defaults, so they extend it."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from twist.cli.schemas import SCHEMAS

    if not OmegaConf.has_resolver("basename"):
        OmegaConf.register_new_resolver("basename", lambda p: Path(str(p)).name)
    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema)


def check_command_line(prog: str, config_name: str, schema: type, argv: list[str]) -> None:
    """Compose the config the way Hydra will and check it against ``schema`` first, so an
    unknown key (with or without ``+``), a wrong type, an unknown group choice or a missing
    required setting ends in one line naming it, before Hydra starts or any work is done.
    Under ``-m`` every value of every sweep is checked."""
    if any(a.split("=")[0] in _INFO_FLAGS for a in argv):
        return
    register_schemas()
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        for variant in _variants(config_name, schema, overrides, multirun):
            _compose_and_check(config_name, schema, variant)
    except TwistError as e:
        fail(prog, str(e))


def _compose(config_name: str, overrides: list[str], *, hydra: bool = False) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=hydra)


def _variants(config_name: str, schema: type, overrides: list[str], multirun: bool) -> Iterator[list[str]]:
    """The override lists to check: the command line as it is, or under ``-m`` one list per
    sweep value (the other sweeps at their first value), with the experiment's own
    ``hydra.sweeper.params`` where the command line does not set the key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    if not multirun:
        yield plain
        return
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(plain)
        swept = _compose(config_name, [o.input_line for o in parsed if not o.is_sweep_override()], hydra=True)
        params = dict(swept.hydra.sweeper.get("params") or {})
    except HydraException as e:
        from twist.schema import describe_config_error

        raise ConfigError(describe_config_error(e, schema)) from None
    given = {o.get_key_element().lstrip("+~") for o in parsed}
    parsed += parser.parse_overrides([f"{k}={v}" for k, v in params.items() if str(k).lstrip("+~") not in given])
    axes = [[o.input_line] if not o.is_sweep_override()
            else [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    base = [a[0] for a in axes]
    yield base
    for i, axis in enumerate(axes):
        for value in axis[1:]:
            yield base[:i] + [value] + base[i + 1:]


def _compose_and_check(config_name: str, schema: type, overrides: list[str]) -> None:
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from twist.schema import describe_config_error, to_typed

    try:
        cfg = _compose(config_name, overrides)
    except MissingConfigException as e:
        raise ConfigError(_unknown_choice(e)) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(describe_config_error(e, schema)) from None
    missing = set(OmegaConf.missing_keys(cfg))
    for group in sorted(g for g in missing if (CONFIGS / g).is_dir()):
        raise ConfigError(f"no {group} chosen: add +{group}=<name> to the command line; choose one of: "
                          f"{', '.join(choices(group))}")
    to_typed(schema, cfg)


def _unknown_choice(e: Any) -> str:
    """``unknown model 'opt-351m'; choose one of: ... (did you mean opt-350m?)``."""
    missing = str(getattr(e, "missing_cfg_file", "") or "")
    group, _, value = missing.rpartition("/")
    options = list(getattr(e, "options", None) or (choices(group) if group else []))
    if not group or not options:
        return _one_line(e)
    hint = difflib.get_close_matches(value, options, n=1)
    return (f"unknown {group} {value!r}; choose one of: {', '.join(options)} (files in {CONFIGS / group})"
            + (f"; did you mean {hint[0]}?" if hint else ""))


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def hydra_cli(prog: str, config_name: str, schema: type, body: Callable[[Any], Any]) -> Callable[[], None]:
    """The ``main`` of a stage CLI: check the command line, then run ``body(cfg)`` under Hydra
    with user errors mapped to one line. ``body`` receives Hydra's composed DictConfig; it turns
    it into the typed object with :func:`twist.schema.to_typed`."""
    import hydra

    register_schemas()

    def _app(cfg: Any) -> None:
        user_errors(prog)(body)(cfg)

    # Hydra names the job (and its log file, <out_dir>/<job>.log) after the task function's
    # module: name it after the stage, e.g. train.log, not after this shared module
    _app.__module__ = "twist.cli." + prog.removeprefix("twist-").replace(" ", "_")
    _app = hydra.main(config_path="../configs", config_name=config_name, version_base="1.3")(_app)

    def main() -> None:
        check_command_line(prog, config_name, schema, sys.argv[1:])
        _app()

    return main
