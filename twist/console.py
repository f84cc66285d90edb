"""Messages for the user: printed on stdout and kept in the run's log file.

Hydra gives every command a log file in its run directory (``train.log``, ``tokenize.log``,
...) that receives only ``logging`` records; the lines a stage prints for its user (what it
is doing, where it resumed, how it ended) would otherwise never reach it. :func:`say`
prints a line and hands the same line to every file handler of the root logger, so the
console keeps its plain lines and the log file holds them too.
"""

from __future__ import annotations

import importlib.util
import logging
import sys


def say(message: str, *, name: str = "twist") -> None:
    """Print ``message`` (flushed) and write it to the run's log file(s), if any."""
    print(message, flush=True)
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not handlers:
        return
    record = logging.LogRecord(name, logging.INFO, __file__, 0, message, None, None)
    for h in handlers:
        if record.levelno >= h.level:
            h.handle(record)


def quiet_third_party_progress() -> None:
    """Silence the progress bars libraries draw on their own (transformers' "Loading weights")."""
    if "transformers" in sys.modules or importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # also turns off huggingface_hub's bars
