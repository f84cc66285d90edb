"""Atomic, safe training checkpoints, shared by the LM trainer and the vocoder trainer.

A checkpoint is a directory::

    <name>/state.pt     everything torch: model, optimizer, scheduler, RNG states, step, ...
    <name>/meta.json    small human-readable facts (step, metrics) for quick inspection
    <name>/shards/      (sharded checkpoints only) model and optimiser state written by every
                        rank with torch.distributed.checkpoint; state.pt then holds the rest

The directory is assembled under a temporary name beside the destination and renamed into
place in one step (``twist.atomic.atomic_replace_dir``), so a crash, a kill -9 or a full
disk during a save leaves the previous checkpoint intact and loadable. Loading uses
``torch.load(weights_only=True)``: no pickle is executed. Everything saved is therefore
tensors, numbers, strings, lists, tuples and dicts; RNG states are converted to those.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.atomic import atomic_replace_dir, disk_full_guard
from twist.errors import ConfigError, InputError, MissingInputError, UnsafeFileError

KEPT = "the previous checkpoint there is intact; free space and rerun the same command to resume"

STATE = "state.pt"
META = "meta.json"
SHARDS = "shards"  # torch.distributed.checkpoint files of a sharded checkpoint


def save_checkpoint(path: str | Path, state: dict[str, Any], *, meta: dict[str, Any] | None = None) -> Path:
    """Write ``state`` to the checkpoint directory ``path`` atomically.

    Args:
        path: destination directory; an existing checkpoint there is replaced only once
            the new one is completely written.
        state: a dict of tensors / state dicts / plain Python values.
        meta: optional JSON-serialisable facts stored in ``meta.json``.
    """
    tmp = staging_dir(path)
    try:
        with disk_full_guard(path, intact=KEPT):
            commit_checkpoint(tmp, path, state, meta=meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(path)


def staging_dir(path: str | Path) -> Path:
    """A fresh, empty directory beside the checkpoint ``path`` to assemble a new one in.

    Writers that are not one process (sharded checkpoints: every rank writes its part into
    ``<staging>/shards``) fill it first; :func:`commit_checkpoint` then moves it into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))


def commit_checkpoint(tmp: str | Path, path: str | Path, state: dict[str, Any], *,
                      meta: dict[str, Any] | None = None) -> Path:
    """Write ``state.pt`` and ``meta.json`` into the staging dir ``tmp``, then rename it to ``path``."""
    tmp = Path(tmp)
    with disk_full_guard(path, intact=KEPT):
        # through a Python file: given a path, torch's own writer reports a full disk as
        # "unexpected pos" with the errno lost
        with open(tmp / STATE, "wb") as f:
            torch.save(state, f)
        (tmp / META).write_text(json.dumps(meta or {}, indent=2, default=_jsonable) + "\n")
        atomic_replace_dir(tmp, path)
    return Path(path)


def copy_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a finished checkpoint directory to ``dst``, atomically (e.g. ``last`` to ``best``)."""
    tmp = staging_dir(dst)
    try:
        with disk_full_guard(dst, intact=KEPT):
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            atomic_replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(dst)


def shards_dir(path: str | Path) -> Path | None:
    """``<path>/shards`` when the checkpoint keeps model and optimiser state sharded."""
    d = Path(path) / SHARDS
    return d if d.is_dir() else None


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint directory written by :func:`save_checkpoint` (no pickle)."""
    path = Path(path)
    f = path / STATE if path.is_dir() else path
    if not f.exists():
        raise MissingInputError(f"checkpoint not found: {f}")
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise pickle_refusal(f"checkpoint {f}", e, "resume from a checkpoint twist wrote, or start a new out_dir") from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(f"checkpoint {f} cannot be read: {type(e).__name__}: {first}") from None


def pickle_refusal(what: str, e: BaseException, advice: str) -> UnsafeFileError:
    """The one-line refusal of a file that ``torch.load(weights_only=True)`` would not read.

    torch's own message is many lines and advises ``weights_only=False``, which twist never
    does; this names the file and the pickled object instead.
    """
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    obj = f"a pickled {found.group(1)}" if found else "pickled Python objects"
    return UnsafeFileError(f"{what} holds {obj}, which loading would have to execute; twist only loads tensors, "
                           f"numbers, strings and containers without running pickle: {advice}")


@contextlib.contextmanager
def refuse_pickled_weights(model_dir: str | Path) -> Iterator[None]:
    """Around ``from_pretrained(model_dir)``: a ``*.bin`` that needs pickle becomes one line."""
    try:
        yield
    except pickle.UnpicklingError as e:
        bins = sorted(p.name for p in Path(model_dir).glob("*.bin")) if Path(model_dir).is_dir() else []
        where = ", ".join(str(Path(model_dir) / b) for b in bins) or str(model_dir)
        raise pickle_refusal(where, e, "convert it to safetensors (save_pretrained(..., safe_serialization=True)) "
                             "where you trust it, and give twist that directory") from None


# config fields that say nothing about the model's shape or maths
_NOT_ARCHITECTURE = ("transformers_version", "dtype", "torch_dtype", "architectures", "use_cache", "return_dict",
                     "output_attentions", "output_hidden_states", "attn_implementation", "problem_type")


def model_config(model: Any) -> dict[str, Any]:
    """The model's architecture as plain values (from ``model.config``), for a checkpoint to keep."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "to_dict"):
        return {}
    return {k: v for k, v in cfg.to_dict().items()
            if not k.startswith("_") and k not in _NOT_ARCHITECTURE and isinstance(v, (bool, int, float, str))}


def check_same_model(ckpt: dict[str, Any], model: torch.nn.Module, where: str | Path) -> None:
    """Refuse, in one line, to resume from a checkpoint whose model is not the one the config builds.

    Checks the checkpoint's tensors against the model's (names and shapes) and, where the
    checkpoint recorded it, its ``model_config``; the message names the config fields that
    differ (or, for a checkpoint without one, the first tensor).
    """
    mine = model.state_dict()
    theirs = ckpt.get("model")
    bad_tensors: list[str] = []
    if isinstance(theirs, dict):
        for name in sorted(set(mine) | set(theirs)):
            a, b = theirs.get(name), mine.get(name)
            if a is None or b is None or tuple(a.shape) != tuple(b.shape):
                bad_tensors.append(f"{name}: checkpoint {_shape(a)}, config {_shape(b)}")
    recorded = ckpt.get("model_config") or {}
    now = model_config(model)
    fields = [f"{k}: checkpoint {recorded[k]!r}, config {now[k]!r}"
              for k in sorted(recorded) if k in now and recorded[k] != now[k]
              and (bad_tensors or (not isinstance(theirs, dict) and isinstance(now[k], int)))]
    if not bad_tensors and not fields:
        return
    detail = "; ".join(fields) if fields else f"{bad_tensors[0]}; {len(bad_tensors)} tensor(s) differ"
    raise ConfigError(f"cannot resume from {where}: the checkpoint's model differs from the config ({detail}); "
                      "resume with the model settings the run started with, or use a new out_dir")


def _shape(t: Any) -> str:
    return "absent" if t is None else str(list(t.shape))


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    p = Path(path) / META
    return json.loads(p.read_text()) if p.exists() else {}


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / STATE).is_file()


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states, in a ``weights_only``-loadable form."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)
