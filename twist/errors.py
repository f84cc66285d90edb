"""The errors twist shows to users as one line (``<prog>: error: ...``, exit code 2).

Every CLI catches :class:`TwistError` and nothing broader: a ``KeyError`` or any other
exception from deep inside the library is a bug and keeps its traceback. Raise one of
these where the cause is something the user can fix (a setting, an input file, the disk),
with a message that names the key, the file or the value.

Each class also derives from the built-in exception a caller would expect (``ValueError``
for a bad value, ``FileNotFoundError`` for a missing path, ...), so library code that
catches those keeps working.
"""

from __future__ import annotations


class TwistError(Exception):
    """Base class: a user-facing error. CLIs print its message on one line and exit 2."""


class ConfigError(TwistError, ValueError):
    """A setting is unknown, of the wrong type, or has a value that cannot work; the message names the key."""


class InputError(TwistError, ValueError):
    """An input (audio, dataset, checkpoint, benchmark file) is malformed; the message names the file or item."""


class MissingInputError(TwistError, FileNotFoundError):
    """A path the user gave, or a file it must contain, does not exist."""


class RunExistsError(TwistError, FileExistsError):
    """An output directory already holds a run that this command would overwrite."""


class RunIdentityError(RunExistsError):
    """A rerun into an existing run directory would use other settings than the ones that made it."""


class ContractMismatch(InputError):
    """Two artefacts carry different unit contracts (encoder, layer, K, frame rate, ...)."""


class UnsafeFileError(InputError):
    """A file would run code when loaded (pickle) and the user has not allowed it."""


class MissingDependencyError(TwistError, ImportError):
    """An optional package or program the command needs is not installed; the message says how to install it."""


class DiskFullError(TwistError, OSError):
    """Writing an output failed for lack of space; the previous output is intact."""


class Diverged(TwistError, FloatingPointError):
    """Training produced non-finite gradients too many steps in a row and stopped itself."""
