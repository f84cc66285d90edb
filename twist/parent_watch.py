"""Child processes (DataLoader decode workers) that end when the process that started them dies.

A ``kill -9`` of a ``twist-tokenize`` run gives its workers no chance to be told to stop:
they are reparented to PID 1 and can stay blocked for ever on a queue nobody reads,
holding the run's files open. :func:`die_with_parent` is a ``worker_init_fn`` that asks the
kernel to send the worker ``SIGKILL`` when its parent exits (Linux ``PR_SET_PDEATHSIG``)
and, where that is not available, starts a thread that watches the parent's pid.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, interval_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(1)


def die_with_parent(_worker_id: int | None = None, *, parent: int | None = None, interval_s: float = 1.0) -> None:
    """Make the calling (child) process end when its parent does; usable as ``worker_init_fn``.

    Args:
        parent: the parent's pid as the parent saw it (``functools.partial(die_with_parent,
            parent=os.getpid())``); lets a child that started after its parent died notice.
    """
    parent = os.getppid() if parent is None else parent
    if not _set_pdeathsig(signal.SIGKILL):
        threading.Thread(target=_watch, args=(parent, interval_s), daemon=True, name="parent-watch").start()
    # the parent may have died between fork and prctl: then the signal will never come
    if os.getppid() != parent:
        os._exit(1)
