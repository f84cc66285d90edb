"""Write-then-rename helpers: no stage ever leaves a half-written output behind.

Every file a stage produces goes through here. The bytes land in a temporary file in the
same directory, are flushed and fsynced, and only then replace the destination with
``os.replace`` (atomic on POSIX). A crash, a kill -9 or a full disk leaves either the old
file or the new one, never a torn one. :func:`read_json_object` reads the small JSON files
stages exchange back, with one-line errors that name the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from twist.errors import DiskFullError, InputError, MissingInputError

# errno values that mean "the disk (or the user's quota) is full"
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full_cause(e: BaseException) -> OSError | None:
    """The ``OSError`` reporting a full disk or an exhausted quota that ``e`` is or that led
    to it, or ``None``.

    The chain is followed because a writer may mask the ``ENOSPC`` with an error of its own
    while cleaning up: torch's zip writer raises ``RuntimeError: ... unexpected pos`` from
    its ``__exit__`` after the write that filled the disk.
    """
    seen: set[int] = set()
    while e is not None and id(e) not in seen and not isinstance(e, DiskFullError):
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return e
        e = e.__cause__ or e.__context__
    return None


def disk_full_error(where: str | Path, cause: OSError, intact: str = "") -> DiskFullError:
    """The one-line :class:`DiskFullError` for ``cause``: the file or directory that could not be
    written, the system's words for it and, with ``intact``, what was kept."""
    tail = f"; {intact}" if intact else ""
    err = DiskFullError(f"cannot write {where}: {cause.strerror or os.strerror(cause.errno)}{tail}")
    err.path = str(where)  # (setting errno/filename would change how the message prints)
    return err


@contextlib.contextmanager
def disk_full_guard(where: str | Path, *, intact: str = "") -> Iterator[None]:
    """Turn an error a full disk caused inside the block into one :class:`DiskFullError` line
    that names ``where`` and the cause (and, with ``intact``, what was kept)."""
    try:
        yield
    except Exception as e:
        cause = disk_full_cause(e)
        if cause is None:
            raise
        raise disk_full_error(where, cause, intact) from None


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=(suffix or path.suffix) + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with disk_full_guard(path, intact="the previous file, if any, is unchanged"):
            yield tmp_path
            # mkstemp makes 0600, and some writers (safetensors) recreate the file 0600: outputs
            # get the permissions the umask gives, like any file the user writes
            if not tmp_path.is_symlink():
                os.chmod(tmp_path, 0o666 & ~_umask())
            _fsync(tmp_path)
            os.replace(tmp_path, path)
            _fsync(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open()`` for writing, committed by rename when the block exits cleanly."""
    if not any(c in mode for c in "wx"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w"), **kwargs) as f:
        yield f
        f.flush()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one line of strict JSON (no newline): a NaN or +/-inf float is written as
    ``null``, since the bare ``NaN``/``Infinity`` Python writes is not JSON and strict readers
    (``jq``, JavaScript, pandas' default) reject the whole file."""
    def strict(v: Any) -> Any:
        if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # a numpy or torch scalar
            v = v.item()
        elif getattr(v, "ndim", 0) and hasattr(v, "tolist"):  # an array
            v = v.tolist()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: strict(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [strict(x) for x in v]
        return v

    return json.dumps(strict(record), allow_nan=False, default=_json_default)


def atomic_save(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp_path)`` (e.g. ``torch.save``/``save_file``) and commit by rename."""
    with atomic_path(path) as tmp:
        writer(tmp)


def atomic_replace_dir(src: str | Path, dst: str | Path) -> None:
    """Move a finished directory onto ``dst``; an old ``dst`` is swapped out then deleted.

    ``src`` must be a sibling of ``dst`` (same filesystem). The window in which neither
    exists is a single rename; a reader never sees a half-filled ``dst``.
    """
    import shutil

    src, dst = Path(src), Path(dst)
    umask_modes(src)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
    os.replace(src, dst)
    _fsync(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def umask_modes(root: str | Path) -> None:
    """Give ``root`` and everything under it the modes the umask gives new files and dirs.

    Staging areas come from ``mkdtemp`` (0700) and some writers create files 0600; without
    this a finished output would be readable by its owner only.
    """
    mask = _umask()
    root = Path(root)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, 0o777 & ~mask)
        else:
            executable = os.stat(p).st_mode & 0o111
            os.chmod(p, (0o777 if executable else 0o666) & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's entry to disk (best effort; some filesystems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json_object(path: str | Path, *, what: str = "file") -> dict[str, Any]:
    """The JSON object in ``path``; a missing file, a file that is not JSON, or JSON that is not
    an object is one :class:`~twist.errors.TwistError` line naming the file (and ``what`` it is)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingInputError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_jsonl_objects(path: str | Path, *, what: str = "row", require: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for each non-blank line of a JSONL file, ``where`` being ``path:line``; a
    line that is not a JSON object, or lacks a ``require``d key, is one
    :class:`~twist.errors.InputError` line naming it."""
    path = Path(path)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: bad JSON line: {e}") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: a {what} must be a JSON object")
        for k in require:
            if k not in row:
                raise InputError(f"{where}: a {what} needs an {k!r} field" if k[0] in "aeiou" else
                                 f"{where}: a {what} needs a {k!r} field")
        yield where, row

