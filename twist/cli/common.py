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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twist.atomic import atomic_write_text
from twist.errors import ConfigError, TwistError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Hydra's own flags that print help: they need no valid job config
_HELP_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i", "--shell-completion", "-sc")
# flags that print the composed config: its keys are checked, no run dir is
_INFO_FLAGS = ("--cfg", "-c", "--package", "-p", "--resolve")


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
            except PermissionError as e:  # the machine's, not twist's: say which file
                if os.environ.get("TWIST_TRACEBACK"):
                    raise
                fail(prog, f"permission denied: {e.filename or e} ({e.strerror or 'not allowed'}); "
                           "choose a writable out_dir or fix the permissions")

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


class RunDir:
    """A stage's run directory, checked before anything is written and written when work starts.

    Creating it checks the run's identity (:mod:`twist.run_identity`) against the one stored in
    ``out_dir``, and refuses a rerun whose identity differs; it writes nothing. The stage then
    validates its inputs and calls :meth:`start` just before its first output: that creates the
    directory and writes ``config.yaml``, Hydra's ``.hydra/`` files, ``identity.json`` (with
    any accepted change in its history) and opens ``<out_dir>/<log_name>.log``. So a refused
    or failed start leaves the disk as it was.

    Args:
        stage: the identity's stage name (the primary config's name: ``train``, ``mos_build``).
        typed: the stage's typed config (declares ``RERUN_FREE``, ``identity_inputs``).
        raw: the config Hydra composed (saved as ``config.yaml``); ``None`` saves ``typed``.
        out_dir: the run directory (default ``typed.out_dir``).
        log_name: the log file's stem (default: the stage).
    """

    def __init__(self, stage: str, typed: Any, raw: Any = None, *, out_dir: str | Path | None = None,
                 log_name: str | None = None, config_name: str = "config.yaml") -> None:
        from twist.run_identity import check_rerun, free_settings_of, identity_of

        self.stage = stage
        self.typed, self.raw = typed, raw
        self.out_dir = Path(out_dir if out_dir is not None else typed.out_dir)
        self.log_name = log_name or stage
        self.config_name = config_name
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(f"out_dir {self.out_dir} is a file, not a directory")
        self.identity = identity_of(stage, typed) if has_identity(typed) else None
        self.free = free_settings_of(typed)
        self.changes = [] if self.identity is None else check_rerun(
            self.out_dir, self.identity, getattr(typed, "allow_changes", ()) or (), free_settings=self.free)
        self.started = False

    def start(self, note: dict[str, Any] | None = None) -> Path:
        """Create the directory and write the run's records; idempotent."""
        if self.started:
            return self.out_dir
        from twist.run_identity import record_identity
        from twist.schema import with_choices

        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            saved = self.typed if self.raw is None else with_choices(self.raw, self.typed)
            save_resolved_config(saved, self.out_dir, self.config_name)
            _save_hydra_files(self.out_dir, self.raw)
            if self.identity is not None:
                record_identity(self.out_dir, self.identity, self.changes, free_settings=self.free, note=note)
        except PermissionError as e:
            raise ConfigError(f"out_dir {self.out_dir} is not writable ({e.strerror}: {e.filename}); "
                              "choose another out_dir or fix its permissions") from None
        _open_log_file(self.out_dir / f"{self.log_name}.log")
        self.started = True
        if self.changes:
            from twist.console import say

            say(f"[{self.stage}] {self.out_dir}: changed since the last run, recorded in identity.json: "
                + "; ".join(c.describe() for c in self.changes))
        return self.out_dir


_LOG_HANDLERS: list[Any] = []


def _open_log_file(path: Path) -> None:
    """Send ``logging`` records (and :func:`twist.console.say` lines) to ``path`` too."""
    import logging

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    _LOG_HANDLERS.append(handler)


def close_log_files() -> None:
    """Close the log files :class:`RunDir` opened (each cell of a sweep gets its own)."""
    import logging

    while _LOG_HANDLERS:
        h = _LOG_HANDLERS.pop()
        logging.getLogger().removeHandler(h)
        h.close()


def _save_hydra_files(out_dir: Path, raw: Any) -> None:
    """Hydra's own record of the job (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``),
    written by twist after validation instead of by Hydra before it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    d = out_dir / ".hydra"
    d.mkdir(exist_ok=True)
    atomic_write_text(d / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))
    if raw is not None and OmegaConf.is_config(raw):
        atomic_write_text(d / "config.yaml", OmegaConf.to_yaml(raw))
    atomic_write_text(d / "overrides.yaml", OmegaConf.to_yaml(hc.overrides.task))


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
    from twist.schema import schema_node

    if not OmegaConf.has_resolver("basename"):
        OmegaConf.register_new_resolver("basename", lambda p: Path(str(p)).name)
    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema_node(schema))


def check_command_line(prog: str, config_name: str, schema: type, argv: list[str]) -> None:
    """Compose the config the way Hydra will and check it against ``schema`` first, so an
    unknown key (with or without ``+``), a wrong type, an unknown group choice, a group of
    another stage or a missing required setting ends in one line naming it, before Hydra
    starts or any work is done. Then every run (every cell of a ``-m`` sweep) is checked
    against what its ``out_dir`` already holds (:class:`RunDir`), and a sweep whose cells
    would share an ``out_dir`` is refused: a refused command writes nothing."""
    if any(a.split("=")[0] in _HELP_FLAGS for a in argv):
        return
    register_schemas()
    multirun = any(a in ("-m", "--multirun") for a in argv)
    info = any(a.split("=")[0] in _INFO_FLAGS for a in argv)
    overrides = _overrides(argv)
    try:
        _check_groups(config_name, overrides)
        cells = _cells(config_name, schema, overrides, multirun)
        typed = [_compose_and_check(config_name, schema, cell, job_num=i if multirun else None)
                 for i, cell in enumerate(cells)]
        if info:  # --cfg job and friends print the config: the keys are checked, the run dirs are not
            return
        _check_run_dirs(config_name, typed, cells)
    except TwistError as e:
        fail(prog, str(e))


# Hydra flags followed by a value (``--cfg job``, ``-p train``)
_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun")


def _overrides(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line, without Hydra's flags and their values."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in _FLAGS_WITH_VALUE
        else:
            out.append(a)
    return out


def _check_groups(config_name: str, overrides: list[str]) -> None:
    """A config group of another command (``twist-train +tts=espeak``) names the command it belongs to."""
    from twist.cli.schemas import COMMANDS, GROUPS

    own = GROUPS.get(config_name, ())
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" not in o or "." in key or key in own or not (CONFIGS / key).is_dir() or key == "hydra":
            continue
        owners = [COMMANDS[n] for n, groups in GROUPS.items() if key in groups]
        theirs = f"a config group of {' and '.join(owners)}" if owners else "not a config group of this command"
        mine = f"this command's groups: {', '.join(own)}" if own else "this command has no config groups"
        raise ConfigError(f"{key} is {theirs}, not of {COMMANDS.get(config_name, config_name)} ({mine})")


def print_help(prog: str, config_name: str, schema: type) -> None:
    """``--help``: what the command does, its own config groups and their choices, where the keys are."""
    from twist.cli.schemas import GROUPS

    doc = (schema.__doc__ or "").strip().splitlines()[0]
    lines = [f"usage: {prog} [key=value ...] [+group=choice ...] [-m] [--cfg job] [--hydra-help]", "", doc, ""]
    groups = GROUPS.get(config_name, ())
    if groups:
        lines.append("config groups (choose with group=choice, or +group=choice where there is no default):")
        lines += [f"  {g}: {', '.join(choices(g))}" for g in groups]
        lines.append("")
    lines += [f"every key, its type, default and meaning: docs/config-reference.md, section {config_name}.yaml",
              f"the composed config without running: {prog} [overrides] --cfg job",
              f"a sweep: {prog} -m key=a,b (each cell needs its own out_dir)"]
    print("\n".join(lines))


def has_identity(typed: Any) -> bool:
    """Whether a stage config's out_dir carries a run identity (schemas declaring ``RERUN_FREE``;
    ``identity_applies()`` may exclude some modes, e.g. a standalone merge)."""
    applies = getattr(typed, "identity_applies", None)
    return getattr(typed, "RERUN_FREE", None) is not None and (not callable(applies) or bool(applies()))


def _check_run_dirs(config_name: str, typed: list[Any], cells: list[list[str]]) -> None:
    """Each cell's out_dir: its stored identity agrees, and no two cells share it."""
    seen: dict[Path, int] = {}
    for i, (t, cell) in enumerate(zip(typed, cells)):
        out = getattr(t, "out_dir", None)
        if out is None:
            continue
        key = Path(str(out)).resolve()
        if key in seen:
            j = seen[key]
            differ = [o for o in cell if o not in cells[j]] or cell
            raise ConfigError(
                f"sweep cells {j} and {i} would share out_dir {out} (cell {i}: {' '.join(differ)}); put the swept "
                "settings in out_dir, e.g. 'out_dir=runs/${hydra:job.override_dirname}' or 'out_dir=runs/${hydra:job.num}'")
        seen[key] = i
        if has_identity(t):
            RunDir(config_name, t)


def _compose(config_name: str, overrides: list[str], *, hydra: bool = False) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=hydra)


def _cells(config_name: str, schema: type, overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every run: the command line as it is, or under ``-m`` every cell of
    the sweep in the order Hydra's basic sweeper launches them (so ``${hydra:job.num}`` is
    the same here and in the job), with the experiment's ``hydra.sweeper.params``."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    if not multirun:
        return [plain]
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(plain)
        base = _compose(config_name, [o.input_line for o in parsed if not o.is_sweep_override()], hydra=True)
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
        batches = BasicSweeper.split_arguments(parser.parse_overrides(params + plain), None)
    except HydraException as e:
        from twist.schema import describe_config_error

        raise ConfigError(describe_config_error(e, schema)) from None
    return [list(cell) for batch in batches for cell in batch]


def _compose_and_check(config_name: str, schema: type, overrides: list[str], *, job_num: int | None = None) -> Any:
    """The typed config of one run; ``${hydra:...}`` in its values resolves as in the job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from twist.schema import describe_config_error, to_typed

    try:
        cfg = _compose(config_name, overrides, hydra=True)
    except MissingConfigException as e:
        raise ConfigError(_unknown_choice(e)) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(describe_config_error(e, schema)) from None
    with open_dict(cfg):
        if job_num is not None:
            cfg.hydra.job.num = job_num
            cfg.hydra.job.id = job_num
        cfg.hydra.runtime.output_dir = str(Path.cwd())
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        missing = set(OmegaConf.missing_keys(task))
        for group in sorted(g for g in missing if (CONFIGS / g).is_dir()):
            raise ConfigError(f"no {group} chosen: add +{group}=<name> to the command line; choose one of: "
                              f"{', '.join(choices(group))}")
        OmegaConf.resolve(task)
        return to_typed(schema, task)
    except OmegaConfBaseException as e:
        raise ConfigError(describe_config_error(e, schema)) from None
    finally:
        HydraConfig.instance().cfg = previous


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
    with user errors mapped to one line (:func:`user_errors`, applied here and nowhere else).
    ``body`` receives Hydra's composed DictConfig; it turns it into the typed object with
    :func:`twist.schema.to_typed`.

    The returned ``main`` has ``main.run(cfg)``: the body as the command runs it (a
    :class:`TwistError` ends in one line and exit code 2), for callers that composed ``cfg``
    themselves, as the tests do."""
    import hydra

    register_schemas()
    guarded = user_errors(prog)(body)

    def _app(cfg: Any) -> None:
        try:
            guarded(cfg)
        finally:
            close_log_files()

    # Hydra names the job (and its log file, <out_dir>/<job>.log) after the task function's
    # module: name it after the stage, e.g. train.log, not after this shared module
    _app.__module__ = "twist.cli." + prog.removeprefix("twist-").replace(" ", "_")
    _app = hydra.main(config_path="../configs", config_name=config_name, version_base="1.3")(_app)

    def main() -> None:
        if any(a in ("-h", "--help") for a in sys.argv[1:]):
            print_help(prog, config_name, schema)
            sys.exit(0)
        check_command_line(prog, config_name, schema, sys.argv[1:])
        _app()

    main.run = guarded  # type: ignore[attr-defined]
    return main
