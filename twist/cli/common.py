"""What every CLI shares: user-facing errors instead of deep tracebacks, saved configs."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twist.atomic import atomic_write_text
from twist.errors import TwistError

# Errors that mean "the user gave bad input" (or, FloatingPointError, a training run that
# diverged and stopped itself): print one clear line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (TwistError, ValueError, FileNotFoundError, KeyError, FileExistsError,
                                                FloatingPointError)


def user_errors(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a CLI body so bad input ends with ``prog: error: ...`` and exit code 2.

    Set ``TWIST_TRACEBACK=1`` to see the full traceback instead.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as e:
                if os.environ.get("TWIST_TRACEBACK"):
                    raise
                msg = e.args[0] if isinstance(e, KeyError) and e.args else e
                print(f"{prog}: error: {msg}", file=sys.stderr)
                sys.exit(2)

        return wrapper

    return deco


def save_resolved_config(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the fully resolved config next to a stage's outputs, so any result can be rerun."""
    from omegaconf import OmegaConf

    path = Path(out_dir) / name
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path
