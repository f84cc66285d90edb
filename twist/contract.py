"""The unit vocabulary contract and the token-id layout shared by every stage.

A unit dataset, a speech LM and a vocoder each carry a :class:`UnitContract`. It records
how the units were made (encoder, its checkpoint fingerprint, layer, frame rate, k-means
codebook, K, dedup, sample rate) and how they become token ids. Every stage checks the
contract of what it reads against the contract of what it holds, and refuses a mismatch
with an error that names both sides. In older toolkits a mismatched unit dictionary
silently produced gibberish; here it must be an error.

Token-id layouts (:class:`VocabLayout`), for K units. The unit-only layout of TWIST,
``units-first/bos-eos-pad/v1`` (what every unit dataset, tokenizer and vocoder holds)::

    0 .. K-1        the speech units, id == unit index (no offset)
    K               <bos>  (begins every utterance)
    K+1             <eos>  (ends every utterance)
    K+2             <pad>  (padding; never a training target)
    K+3 .. V-1      alignment padding up to a multiple of 64 (never receives probability mass)

The text+units layout, ``text+units/speech-text-markers/v1``, for a speech LM that keeps its
text LM's tokenizer (speech-text interleaving, as SpiritLM and Slam's SIMS do), with V_text
the text tokenizer's size::

    0 .. V_text-1             the text tokenizer's ids, unchanged (its bos/eos/pad are the layout's)
    V_text .. V_text+K-1      the speech units: unit u is id V_text + u (``unit_offset`` = V_text)
    V_text+K                  <speech>  (opens a speech span: a speech-only sequence is <bos> <speech> units <eos>)
    V_text+K+1                <text>    (opens a text span)
    V_text+K+2 .. V-1         alignment padding up to a multiple of 64

A speech LM's contract names its layout; a unit dataset's, a tokenizer's and a vocoder's are
units-first by nature and fit a model of either layout with the same units
(:meth:`UnitContract.check_same_units`), while two models of different layouts do not
(:meth:`UnitContract.check_compatible`).
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
TEXT_UNITS_LAYOUT = "text+units/speech-text-markers/v1"
LAYOUTS = (LAYOUT_NAME, TEXT_UNITS_LAYOUT)

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

# The fields that say how units become token ids in a model beyond ``layout``'s name: set for
# the text+units layout only (a contract file then also records the unit offset and marker ids
# they give, for readers, checked on load).
TEXT_LAYOUT_FIELDS = ("text_vocab", "text_bos_id", "text_eos_id", "text_pad_id", "text_tokenizer",
                      "text_tokenizer_fingerprint")
# What check_compatible compares about the layout and check_same_units leaves out. ``text_tokenizer``
# (a label) is not compared: the same tokenizer read from another path is the same tokenizer.
LAYOUT_FIELDS = ("layout", "text_vocab", "text_bos_id", "text_eos_id", "text_pad_id", "text_tokenizer_fingerprint")


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
        text_vocab: text+units layout only: V_text, the text tokenizer's size; units start there.
        text_bos_id, text_eos_id, text_pad_id: text+units only: the text tokenizer's specials,
            which are the layout's (a tokenizer without bos or pad uses its eos).
        text_tokenizer: text+units only: which text tokenizer (a label: its model name or path).
        text_tokenizer_fingerprint: text+units only: a hash of the text tokenizer (vocabulary,
            merges, normaliser, its own added tokens), so that two models whose text ids mean
            different strings are told apart.
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
    text_vocab: int | None = None
    text_bos_id: int | None = None
    text_eos_id: int | None = None
    text_pad_id: int | None = None
    text_tokenizer: str | None = None
    text_tokenizer_fingerprint: str | None = None

    def __post_init__(self) -> None:
        if self.n_units < 1 or self.n_units > 65000:
            raise ConfigError(f"n_units must be in [1, 65000] (uint16 storage), got {self.n_units}")
        if self.frame_rate <= 0:
            raise ConfigError(f"frame_rate must be positive, got {self.frame_rate}")
        if self.layout_name == TEXT_UNITS_LAYOUT:
            absent = [f for f in ("text_vocab", "text_eos_id", "text_tokenizer_fingerprint") if getattr(self, f) is None]
            if absent:
                raise ConfigError(f"a {TEXT_UNITS_LAYOUT} contract needs {', '.join(absent)}")
        else:
            stray = [f for f in TEXT_LAYOUT_FIELDS if getattr(self, f) is not None]
            if stray:
                raise ConfigError(f"layout {self.layout_name!r} has no text vocabulary, but {', '.join(stray)} set")

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # files name the layout ``layout``, in the place it always had; a units-first contract
        # writes exactly the keys it always wrote
        text = set(TEXT_LAYOUT_FIELDS)
        d = {("layout" if k == "layout_name" else k): v for k, v in dataclasses.asdict(self).items()
             if k not in text or self.layout_name == TEXT_UNITS_LAYOUT}
        if self.layout_name == TEXT_UNITS_LAYOUT:
            d.update(self._derived())
        d["version"] = CONTRACT_VERSION
        return d

    def _derived(self) -> dict[str, int]:
        lay = self.layout
        return {"unit_offset": lay.unit_offset, "speech_id": lay.speech_id, "text_id": lay.text_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> UnitContract:
        d = {("layout_name" if k == "layout" else k): v for k, v in d.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise InputError(f"unit contract in {source} lacks field(s) {missing}")
        try:
            out = cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ValueError) as e:  # a field of the wrong type or out of range
            raise InputError(f"unit contract in {source}: {e}") from None
        if out.layout_name == TEXT_UNITS_LAYOUT:
            for k, v in out._derived().items():
                if k in d and d[k] != v:
                    raise InputError(f"unit contract in {source}: {k} is {d[k]!r}, but its layout fields give {v}")
        return out

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
        fields = [f for f in dict.fromkeys((*IDENTITY_FIELDS, "dedup", *LAYOUT_FIELDS)) if f not in set(ignore)]
        mine, theirs = self.to_dict(), other.to_dict()
        out = {}
        for f in fields:
            a, b = mine.get(f), theirs.get(f)
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

    def check_same_units(
        self,
        other: UnitContract,
        *,
        mine: str = "model",
        theirs: str = "data",
        ignore: Iterable[str] = (),
    ) -> None:
        """:meth:`check_compatible` on the units alone, whatever token ids either side gives them.

        For a unit dataset, a tokenizer, a vocoder or a pair dataset: their ids are units,
        units-first by nature, and a model of either layout reads them through its own
        (:attr:`layout`). Two models are compared with :meth:`check_compatible`.
        """
        self.check_compatible(other, mine=mine, theirs=theirs, ignore=(*ignore, *LAYOUT_FIELDS))

    @property
    def layout(self) -> VocabLayout:
        """The token-id layout of these units: what every stage builds batches and vocabularies with."""
        if self.layout_name == LAYOUT_NAME:
            return VocabLayout(self.n_units)
        if self.layout_name == TEXT_UNITS_LAYOUT:
            return VocabLayout.text_units(self.n_units, text_vocab=int(self.text_vocab), bos_id=self.text_bos_id,
                                          eos_id=int(self.text_eos_id), pad_id=self.text_pad_id)
        raise InputError(f"unknown token-id layout {self.layout_name!r} (this twist knows {', '.join(LAYOUTS)})")


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
    """The token ids of K units (and, in the text+units layout, of a text vocabulary), padded
    to a multiple of ``pad_multiple``. One type for both layouts (module docstring): every
    consumer asks it for ids, offsets and masks, so a units-first model computes exactly what
    it always did and a text+units model finds its units at ``unit_offset``.

    Attributes:
        n_units: K.
        pad_multiple: the vocabulary is padded to a multiple of this (alignment, speed).
        text_vocab: V_text, the text tokenizer's size; 0 (the default) is the units-first layout.
        text_bos_id, text_eos_id, text_pad_id: the text tokenizer's specials (text+units only;
            bos and pad default to eos, for tokenizers that have none). Build a text+units
            layout with :meth:`text_units`.
    """

    n_units: int
    pad_multiple: int = 64
    text_vocab: int = 0
    text_bos_id: int | None = None
    text_eos_id: int | None = None
    text_pad_id: int | None = None

    def __post_init__(self) -> None:
        if self.text_vocab < 0:
            raise ConfigError(f"text_vocab must be >= 0, got {self.text_vocab}")
        if not self.text_vocab:
            return
        if self.text_eos_id is None:
            raise ConfigError("a text+units layout needs the text tokenizer's eos id")
        for name in ("text_bos_id", "text_pad_id"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.text_eos_id)
        for name in ("text_bos_id", "text_eos_id", "text_pad_id"):
            i = getattr(self, name)
            if not 0 <= int(i) < self.text_vocab:
                raise ConfigError(f"{name.removeprefix('text_')}={i} is not a text id (text vocabulary of {self.text_vocab})")

    @classmethod
    def text_units(cls, n_units: int, *, text_vocab: int, bos_id: int | None, eos_id: int, pad_id: int | None = None,
                   pad_multiple: int = 64) -> VocabLayout:
        """The text+units layout: text ids ``[0, text_vocab)`` kept, unit u at ``text_vocab + u``,
        then ``<speech>`` and ``<text>``; bos/eos/pad are the text tokenizer's (eos where it has
        no bos or pad)."""
        if text_vocab < 1:
            raise ConfigError(f"a text+units layout needs a text vocabulary, got text_vocab={text_vocab}")
        return cls(n_units, pad_multiple, text_vocab, bos_id, eos_id, pad_id)

    # ---- ids -------------------------------------------------------------------------------
    @property
    def has_text(self) -> bool:
        """Whether the layout keeps a text vocabulary (text+units) or holds units only."""
        return self.text_vocab > 0

    @property
    def name(self) -> str:
        """The layout's name, as contracts record it (``layout``)."""
        return TEXT_UNITS_LAYOUT if self.has_text else LAYOUT_NAME

    @property
    def unit_offset(self) -> int:
        """The id of unit 0: unit u is id ``unit_offset + u``."""
        return self.text_vocab

    @property
    def bos_id(self) -> int:
        return int(self.text_bos_id) if self.has_text else self.n_units

    @property
    def eos_id(self) -> int:
        return int(self.text_eos_id) if self.has_text else self.n_units + 1

    @property
    def pad_id(self) -> int:
        return int(self.text_pad_id) if self.has_text else self.n_units + 2

    @property
    def speech_id(self) -> int | None:
        """``<speech>``, the marker that opens a speech span (None: the units-first layout has none)."""
        return self.text_vocab + self.n_units if self.has_text else None

    @property
    def text_id(self) -> int | None:
        """``<text>``, the marker that opens a text span (None: the units-first layout has none)."""
        return self.text_vocab + self.n_units + 1 if self.has_text else None

    @property
    def marker_ids(self) -> tuple[int, ...]:
        """The modality markers' ids: ``(<speech>, <text>)``, or none."""
        return (self.speech_id, self.text_id) if self.has_text else ()

    @property
    def n_real(self) -> int:
        """Ids that exist: units and the three specials (units-first), or text, units and the
        two markers (text+units)."""
        return self.text_vocab + self.n_units + 2 if self.has_text else self.n_units + 3

    @property
    def vocab_size(self) -> int:
        m = max(1, self.pad_multiple)
        return int(math.ceil(self.n_real / m) * m)

    @property
    def framing_tokens(self) -> int:
        """Tokens :meth:`encode` adds around an utterance's units: ``<bos>`` (``<speech>``) ``<eos>``."""
        return 3 if self.has_text else 2

    # ---- masks -----------------------------------------------------------------------------
    def unit_mask(self, *, eos: bool = True, markers: Iterable[int] = ()):
        """A bool tensor over ``vocab_size``: True at the units, at eos (``eos``), and at the
        given marker ids (e.g. ``(layout.text_id,)``: speech that may switch to text)."""
        import torch

        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        m[self.unit_offset : self.unit_offset + self.n_units] = True
        if eos:
            m[self.eos_id] = True
        for i in markers:
            if i not in self.marker_ids:
                raise ConfigError(f"unit_mask: {i} is not a marker id of this layout (markers: {self.marker_ids})")
            m[i] = True
        return m

    def valid_mask(self, *, allow_specials: bool = True):
        """A bool tensor over ``vocab_size``: True where an id may receive probability mass.

        Alignment-padding rows are always False. With ``allow_specials=False`` only the
        units and eos stay True (what sampling speech may emit; in the text+units layout the
        text ids and markers go too).
        """
        import torch

        if not allow_specials:
            return self.unit_mask()
        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        m[: self.n_real] = True
        return m

    def speech_support(self):
        """A bool tensor over ``vocab_size``: the ids a speech-only score normalises over.

        Units-first: every real id, as unit-only scoring always did. Text+units: the units and
        eos, so the text logits are masked and a unit's log-probability is renormalised over
        what speech can continue with (Slam, Maimon et al. 2025, masks text tokens out of
        speech-only benchmarks the same way).
        """
        return self.unit_mask() if self.has_text else self.valid_mask()

    def text_mask(self, *, bos_pad: bool = True, markers: Iterable[int] = ()):
        """A bool tensor over ``vocab_size``: True at the text ids (text+units only) and at the
        given marker ids (e.g. ``(layout.speech_id,)``: text that may switch to speech).

        Args:
            bos_pad: keep the text tokenizer's bos and pad (scoring keeps every text id); false
                leaves them out, as sampling does, unless one of them is also its eos.
        """
        if not self.has_text:
            raise ConfigError(f"text_mask: the {self.name} layout has no text ids (its ids are units)")
        m = self.unit_mask(eos=False, markers=markers)
        m[self.unit_offset : self.unit_offset + self.n_units] = False
        m[: self.text_vocab] = True
        if not bos_pad:
            m[[i for i in (self.bos_id, self.pad_id) if i != self.eos_id]] = False
        return m

    def text_support(self):
        """A bool tensor over ``vocab_size``: the ids a text span is scored over (cross-modal
        StoryCloze's text endings): every text id, eos among them, and no unit or marker; the
        text counterpart of :meth:`speech_support`."""
        return self.text_mask()

    # ---- units <-> ids ---------------------------------------------------------------------
    def unit_ids(self, units: np.ndarray) -> np.ndarray:
        """Units -> their token ids (int64), range-checked."""
        units = np.asarray(units)
        check_unit_range(units, self.n_units)
        return units.astype(np.int64) + self.unit_offset

    def encode(self, units: np.ndarray, *, bos: bool = True, eos: bool = True, marker: bool | None = None) -> np.ndarray:
        """Units -> token ids (int64) with bos/eos as the contract says.

        Args:
            bos: begin with ``<bos>``.
            eos: end with ``<eos>``.
            marker: text+units: put ``<speech>`` before the units (a marker opens every
                sequence); ``None`` follows ``bos``. The units-first layout has no marker.
        """
        parts = []
        if bos:
            parts.append(np.array([self.bos_id], dtype=np.int64))
        if self.has_text and (bos if marker is None else marker):
            parts.append(np.array([self.speech_id], dtype=np.int64))
        parts.append(self.unit_ids(units))
        if eos:
            parts.append(np.array([self.eos_id], dtype=np.int64))
        return np.concatenate(parts)

    def decode(self, ids: Iterable[int]) -> np.ndarray:
        """Token ids -> units, dropping every other id (specials, text, markers) and stopping
        at the first eos."""
        out = []
        lo, hi = self.unit_offset, self.unit_offset + self.n_units
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if lo <= i < hi:
                out.append(i - lo)
        return np.asarray(out, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        """The ids, as a speech LM's config records them (``config.twist.layout``)."""
        d: dict[str, Any] = {"name": self.name, "n_units": self.n_units, "bos_id": self.bos_id,
                             "eos_id": self.eos_id, "pad_id": self.pad_id, "vocab_size": self.vocab_size}
        if self.has_text:
            d.update(text_vocab=self.text_vocab, unit_offset=self.unit_offset, speech_id=self.speech_id,
                     text_id=self.text_id)
        return d
