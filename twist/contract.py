"""The unit vocabulary contract and the token-id layout shared by every stage.

A unit dataset, a speech LM and a vocoder each carry a :class:`UnitContract`. It records
how the units were made (encoder, its checkpoint fingerprint, layer, frame rate, k-means
codebook, K, dedup, sample rate) and how they become token ids. Every stage checks the
contract of what it reads against the contract of what it holds, and refuses a mismatch
with an error that names both sides. In older toolkits a mismatched unit dictionary
silently produced gibberish; here it must be an error.

Token-id layout (:class:`VocabLayout`), for K units::

    0 .. K-1        the speech units, id == unit index (no offset)
    K               <bos>  (begins every utterance)
    K+1             <eos>  (ends every utterance)
    K+2             <pad>  (padding; never a training target)
    K+3 .. V-1      alignment padding up to a multiple of 64 (never receives probability mass)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from twist.atomic import read_json_object
from twist.errors import ConfigError, ContractMismatch, InputError

CONTRACT_VERSION = 1
LAYOUT_NAME = "units-first/bos-eos-pad/v1"

# Fields (as the contract files name them) that decide which unit index means which sound.
# Any difference is a mismatch.
IDENTITY_FIELDS = (
    "encoder",
    "encoder_fingerprint",
    "layer",
    "frame_rate",
    "n_units",
    "kmeans_fingerprint",
    "sample_rate",
    "layout",
)


# the name every stage has imported; one class, so catching either catches both
ContractMismatchError = ContractMismatch


@dataclasses.dataclass(frozen=True)
class UnitContract:
    """What a sequence of unit ids means.

    Attributes:
        encoder: encoder family, e.g. ``"hubert"`` or ``"logmel"``.
        encoder_fingerprint: a hash of the encoder's weights or, for a weight-free
            encoder, of its parameters. Two HuBERTs with different weights differ here.
        layer: the encoder layer the features come from (``None`` if not layered).
        frame_rate: unit frames per second before dedup (50.0 or 25.0).
        n_units: K, the number of k-means centroids.
        kmeans_fingerprint: a hash of the centroid values.
        dedup: whether runs of repeated units are collapsed (durations kept aside).
        sample_rate: audio sample rate the encoder consumes.
        layout_name: the token-id layout's name (see module docstring); stored as ``layout``
            in contract files. :attr:`layout` is the layout itself.
    """

    encoder: str
    encoder_fingerprint: str
    layer: int | None
    frame_rate: float
    n_units: int
    kmeans_fingerprint: str
    dedup: bool = True
    sample_rate: int = 16000
    layout_name: str = LAYOUT_NAME

    def __post_init__(self) -> None:
        if self.n_units < 1 or self.n_units > 65000:
            raise ConfigError(f"n_units must be in [1, 65000] (uint16 storage), got {self.n_units}")
        if self.frame_rate <= 0:
            raise ConfigError(f"frame_rate must be positive, got {self.frame_rate}")

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # files name the layout ``layout``, in the place it always had
        d = {("layout" if k == "layout_name" else k): v for k, v in dataclasses.asdict(self).items()}
        d["version"] = CONTRACT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> UnitContract:
        d = {("layout_name" if k == "layout" else k): v for k, v in d.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise InputError(f"unit contract in {source} lacks field(s) {missing}")
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ValueError) as e:  # a field of the wrong type or out of range
            raise InputError(f"unit contract in {source}: {e}") from None

    def save(self, path: str | Path) -> None:
        from twist.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> UnitContract:
        path = Path(path)
        d = read_json_object(path, what="unit contract file")
        if "contract" in d and isinstance(d["contract"], dict):  # meta.json embeds it
            d = d["contract"]
        return cls.from_dict(d, source=str(path))

    # ---- checks ----------------------------------------------------------------------------
    def differences(self, other: UnitContract, ignore: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
        fields = [f for f in (*IDENTITY_FIELDS, "dedup") if f not in set(ignore)]
        mine, theirs = self.to_dict(), other.to_dict()
        out = {}
        for f in fields:
            a, b = mine[f], theirs[f]
            if f == "frame_rate":
                same = math.isclose(float(a), float(b))
            else:
                same = a == b
            if not same:
                out[f] = (a, b)
        return out

    def check_compatible(
        self,
        other: UnitContract,
        *,
        mine: str = "model",
        theirs: str = "data",
        ignore: Iterable[str] = (),
    ) -> None:
        """Raise :class:`twist.errors.ContractMismatch` naming both sides if the contracts differ.

        Args:
            other: the contract of the artefact being used with this one.
            mine: a human name for this side, e.g. ``"model /runs/lm"``.
            theirs: a human name for the other side, e.g. ``"dataset /data/units"``.
            ignore: fields not to compare (a vocoder with a duration predictor accepts
                deduplicated and raw units alike, so it ignores ``dedup``).
        """
        diff = self.differences(other, ignore)
        if diff:
            lines = [f"  {k}: {mine} has {a!r}, {theirs} has {b!r}" for k, (a, b) in diff.items()]
            raise ContractMismatch(
                f"unit contract mismatch between {mine} and {theirs}:\n"
                + "\n".join(lines)
                + "\nThese were made with different tokenizers; re-tokenize or use matching artefacts."
            )

    @property
    def layout(self) -> VocabLayout:
        """The token-id layout of these units: what every stage builds batches and vocabularies with."""
        return VocabLayout(self.n_units)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read a block at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_arrays(*arrays: np.ndarray | Any, extra: str = "") -> str:
    """A short, stable sha256 over array bytes (and an optional string)."""
    h = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):
            a = a.detach().cpu().float().numpy()
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    h.update(extra.encode())
    return h.hexdigest()[:16]


def fingerprint_state_dict(state_dict: dict[str, Any]) -> str:
    """Fingerprint a model's weights independent of dict order."""
    keys = sorted(state_dict)
    return fingerprint_arrays(*(state_dict[k] for k in keys), extra="|".join(keys))


def check_unit_range(units: Any, n_units: int, *, where: str = "units", hint: str = "") -> None:
    """Refuse unit ids outside ``[0, n_units)``: the one check every reader of units uses.

    The message names the first bad id itself (negative or too large), where it is (``where``
    and its position) and the valid range.

    Args:
        units: unit ids, a numpy array or a torch tensor of any shape.
        n_units: K, the number of units (for a vocoder: its unit table's size).
        where: what the ids are, for the message, e.g. ``"utterance 'u7'"``.
        hint: appended to the message (what the mismatch likely means).
    """
    if hasattr(units, "detach"):  # a torch tensor (the vocoder's input)
        units = units.detach().cpu().numpy()
    ids = np.asarray(units)
    if ids.size == 0:
        return
    bad = (ids < 0) | (ids >= n_units)
    if not bad.any():
        return
    first = np.argwhere(bad)[0]
    at = int(first[0]) if ids.ndim == 1 else tuple(int(i) for i in first)
    raise InputError(f"{where}: unit id {int(ids[tuple(first)])} is outside [0, {n_units}) at position {at}{hint}")


@dataclasses.dataclass(frozen=True)
class VocabLayout:
    """Token ids for K units plus specials, padded to a multiple of ``pad_multiple``."""

    n_units: int
    pad_multiple: int = 64

    @property
    def bos_id(self) -> int:
        return self.n_units

    @property
    def eos_id(self) -> int:
        return self.n_units + 1

    @property
    def pad_id(self) -> int:
        return self.n_units + 2

    @property
    def n_real(self) -> int:
        """Ids that exist: units and the three specials."""
        return self.n_units + 3

    @property
    def vocab_size(self) -> int:
        m = max(1, self.pad_multiple)
        return int(math.ceil(self.n_real / m) * m)

    def valid_mask(self, *, allow_specials: bool = True):
        """A bool tensor over ``vocab_size``: True where an id may receive probability mass.

        Alignment-padding rows are always False. With ``allow_specials=False`` only the
        units and eos stay True (what sampling may emit).
        """
        import torch

        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        if allow_specials:
            m[: self.n_real] = True
        else:
            m[: self.n_units] = True
            m[self.eos_id] = True
        return m

    def encode(self, units: np.ndarray, *, bos: bool = True, eos: bool = True) -> np.ndarray:
        """Units -> token ids (int64) with bos/eos as the contract says."""
        units = np.asarray(units)
        check_unit_range(units, self.n_units)
        parts = []
        if bos:
            parts.append(np.array([self.bos_id], dtype=np.int64))
        parts.append(units.astype(np.int64))
        if eos:
            parts.append(np.array([self.eos_id], dtype=np.int64))
        return np.concatenate(parts)

    def decode(self, ids: Iterable[int]) -> np.ndarray:
        """Token ids -> units, dropping specials and stopping at the first eos."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if 0 <= i < self.n_units:
                out.append(i)
        return np.asarray(out, dtype=np.int64)
