"""Run identity: which settings made a run directory's contents, checked on every rerun.

Every stage writes into a run directory (``out_dir``) and most of them resume or reuse what
is already there: a training run continues from its checkpoint, generation skips finished
prompts, tokenization skips committed shards. That is only honest while the rerun would
make the same outputs. So each stage's schema says which of its settings define what its
outputs contain, and which may change on a rerun (``RERUN_FREE``: step limits, logging,
workers, devices). The rest, plus a fingerprint of the artefacts the stage reads (a model
or vocoder dir, ``identity_inputs()``), is the run's *identity*, stored in
``<out_dir>/identity.json`` with the outputs.

A rerun into the same directory whose identity differs is refused in one line that names
each setting that differs with its old and new value, before anything is written. The user
can go on deliberately with ``allow_changes=[key, ...]`` (or ``[all]``); the change is then
recorded in ``identity.json``'s ``history``, next to every accepted change of a free setting,
so the directory keeps telling the truth about what made it.

Settings compared are those present on both sides: a setting added to a schema later, or a
section a stage leaves out of this run's identity (``twist-bench``'s tasks not built this
time), is not a difference.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from twist.errors import InputError, RunIdentityError

IDENTITY_FILE = "identity.json"
ALLOW_KEY = "allow_changes"
# content fingerprints read at most this much of a file: whole small files, sampled large ones
_WHOLE_FILE_BYTES = 1 << 20
_CHUNK = 1 << 16
_SAMPLES = 8


# ---------------------------------------------------------------------------------------
# what a run is
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """The settings and input fingerprints that define a run directory's contents."""

    stage: str
    settings: dict[str, Any]
    inputs: dict[str, str]

    @property
    def fingerprint(self) -> str:
        """A short hash of everything compared on a rerun."""
        payload = json.dumps({"stage": self.stage, "settings": self.settings, "inputs": self.inputs},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Settings and inputs in one mapping; inputs as ``input:<name>``."""
        return {**self.settings, **{f"input:{k}": v for k, v in self.inputs.items()}}


def identity_of(stage: str, cfg: Any) -> RunIdentity:
    """The identity of a typed stage config: every setting except the schema's ``RERUN_FREE``
    ones (and ``allow_changes``), plus fingerprints of its ``identity_inputs()``.

    A schema may narrow its settings further with ``identity_settings(flat) -> flat``.
    """
    flat = flatten_settings(cfg)
    free = (*getattr(cfg, "RERUN_FREE", ()), ALLOW_KEY)
    settings = {k: v for k, v in flat.items() if not is_free(k, free)}
    narrow = getattr(cfg, "identity_settings", None)
    if callable(narrow):
        settings = narrow(settings)
    inputs_of = getattr(cfg, "identity_inputs", None)
    paths = inputs_of() if callable(inputs_of) else {}
    inputs = {name: fingerprint_path(p) for name, p in paths.items() if p}
    return RunIdentity(stage, settings, inputs)


def flatten_settings(cfg: Any) -> dict[str, Any]:
    """``{dotted key: JSON-able value}`` for a typed config (dataclass), a DictConfig or a mapping."""
    from omegaconf import OmegaConf

    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = OmegaConf.structured(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(f"{prefix}{k}" if not prefix else f"{prefix}.{k}", v)
        else:
            out[prefix] = _json_value(node)

    walk("", plain)
    out.pop("hydra", None)
    return out


def is_free(key: str, free: Iterable[str]) -> bool:
    """``key`` is one of ``free``, below one (``logger`` covers ``logger.wandb``), or matches a glob."""
    for pattern in free:
        if key == pattern or key.startswith(pattern + ".") or fnmatch.fnmatchcase(key, pattern):
            return True
    return False


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


# ---------------------------------------------------------------------------------------
# fingerprints of input artefacts
# ---------------------------------------------------------------------------------------
def fingerprint_path(path: str | Path) -> str:
    """A content fingerprint of a file or a directory (every regular file under it, by relative
    path). Small files are hashed whole; large ones (model weights) by size and evenly spaced
    samples, which any retraining or re-export changes. Copying or moving keeps it; the path
    itself is a setting and compared as one.

    A path that does not exist fingerprints as ``missing``: the stage's own check names it.
    """
    p = Path(path)
    if p.is_file():
        return _hash_file(p)[:16]
    if not p.is_dir():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and not _ignored(q.relative_to(p))):
        h.update(f.relative_to(p).as_posix().encode() + b"\0" + _hash_file(f).encode() + b"\n")
    return h.hexdigest()[:16]


def _ignored(rel: Path) -> bool:
    # what a run writes beside its artefact and that does not change it: logs and our own records
    return any(part.startswith(".") for part in rel.parts) or rel.name in (IDENTITY_FILE,) or rel.suffix == ".log"


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode() + b"\0")
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE_BYTES:
            h.update(f.read())
        else:
            for i in range(_SAMPLES):
                f.seek((size - _CHUNK) * i // (_SAMPLES - 1))
                h.update(f.read(_CHUNK))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# the rerun check and the record
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Change:
    key: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def read_identity(out_dir: str | Path) -> dict[str, Any] | None:
    """The stored identity record of a run dir, or ``None`` if it has none."""
    path = Path(out_dir) / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable run identity ({e}); move it away to start the run afresh") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("settings"), dict):
        raise InputError(f"{path}: not a twist run identity (no settings); move it away to start afresh")
    return rec


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """The settings present on both sides whose values differ."""
    return [Change(k, old[k], new[k]) for k in sorted(set(old) & set(new)) if old[k] != new[k]]


def check_rerun(out_dir: str | Path, identity: RunIdentity, allow: Iterable[str] = (), *,
                free_settings: Mapping[str, Any] | None = None) -> list[Change]:
    """Refuse a rerun into ``out_dir`` whose identity differs from the stored one, unless every
    differing key is in ``allow`` (``all`` allows any). Returns the accepted changes.

    Raises:
        RunIdentityError: one line naming every differing setting, its old and new value.
    """
    rec = read_identity(out_dir)
    if rec is None:
        return []
    if rec.get("stage") not in (None, identity.stage):
        raise RunIdentityError(f"{out_dir} holds a {rec.get('stage')} run, not a {identity.stage} run; "
                               "choose another out_dir")
    old = {**rec["settings"], **{f"input:{k}": v for k, v in (rec.get("inputs") or {}).items()}}
    changes = compare(old, identity.flat())
    allowed = set(allow)
    refused = [c for c in changes if "all" not in allowed and c.key not in allowed]
    if refused:
        keys = ",".join(c.key for c in refused if not c.key.startswith("input:"))
        inputs = [c.key.removeprefix("input:") for c in refused if c.key.startswith("input:")]
        advice = [f"add {ALLOW_KEY}=[{keys}] to go on with the change recorded" if keys else ""]
        if inputs:
            advice.append(f"the content of {', '.join(inputs)} changed since this dir was made "
                          f"({ALLOW_KEY}=[{','.join('input:' + i for i in inputs)}] accepts it)")
        raise RunIdentityError(
            f"{out_dir} was made with other settings ({'; '.join(c.describe() for c in refused)}); rerun with the "
            f"same settings or choose another out_dir, or {' and '.join(a for a in advice if a)}")
    if free_settings is not None:
        changes += compare(rec.get("free") or {}, free_settings)
    return changes


def record_identity(out_dir: str | Path, identity: RunIdentity, changes: Iterable[Change] = (), *,
                    free_settings: Mapping[str, Any] | None = None, note: Mapping[str, Any] | None = None) -> Path:
    """Write (or update) ``<out_dir>/identity.json``: the identity, the free settings of this
    invocation, and a history entry for each invocation that changed something."""
    from twist.atomic import atomic_write_json

    out = Path(out_dir)
    rec = read_identity(out) or {}
    history = list(rec.get("history") or [])
    changes = list(changes)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if not rec:
        history.append({"at": now, "event": "created", **dict(note or {})})
    elif changes:
        history.append({"at": now, "event": "changed", **dict(note or {}),
                        "changes": {c.key: {"old": c.old, "new": c.new} for c in changes}})
    # keys a narrower rerun left out (another bench task, an older schema) stay recorded
    settings = {**(rec.get("settings") or {}), **identity.settings}
    inputs = {**(rec.get("inputs") or {}), **identity.inputs}
    path = out / IDENTITY_FILE
    atomic_write_json(path, {"stage": identity.stage, "fingerprint": RunIdentity(identity.stage, settings,
                                                                                 inputs).fingerprint,
                             "settings": settings, "inputs": inputs, "free": dict(free_settings or {}),
                             "history": history})
    return path


def free_settings_of(cfg: Any) -> dict[str, Any]:
    """The settings a rerun may change (recorded, not compared): the schema's ``RERUN_FREE``."""
    flat = flatten_settings(cfg)
    free = getattr(cfg, "RERUN_FREE", ())
    return {k: v for k, v in flat.items() if is_free(k, free) and k != ALLOW_KEY}


def _show(v: Any) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def dir_has_outputs(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` exists and holds anything."""
    try:
        return any(os.scandir(out_dir))
    except (FileNotFoundError, NotADirectoryError):
        return False
