"""Streaming training and validation data from a unit dataset (twist.units).

The training stream follows the TWIST recipe's data side (paper §3.2, Table 6):

* the ``train`` split of a unit dataset, optionally reduced to a nested data ``fraction``
  (1 / 10 / 100 %), both fixed functions of the utterance ids (twist.units);
* every epoch, a seeded permutation of the utterances (or of a mixture's documents,
  twist.train.mixture), then greedy packing into windows of ``max_tokens`` (twist.lm.packing).
  The plan is computed from the documents' lengths alone (the manifest's; a mixture's from its
  alignments and text too); units are read from the memory-mapped shards only for the windows this
  rank uses;
* window ``j`` of a step's global batch goes to rank ``j % world_size``, so the union of
  what all ranks see in a step is the same global batch whatever the number of processes;
* the data position is ``(epoch, windows consumed in the epoch)``. A resumed run rebuilds
  the epoch's plan and skips to that position, so it sees exactly what it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twist.contract import VocabLayout
from twist.errors import ConfigError, InputError, MissingInputError
from twist.lm.packing import Batch, Piece, pack_sequences, pad_documents, plan_windows
from twist.train.mixture import UnitDocuments, unit_targets
from twist.units import UnitDataset


def open_split(path: str | Path, split: str, *, fraction: float = 1.0, fraction_seed: int = 0) -> UnitDataset:
    """Open one split of a unit dataset, checked: not empty, unit ids below K."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"unit dataset not found: {path}")
    ds = UnitDataset(path)
    if len(ds) == 0:
        raise InputError(f"unit dataset {path} is empty (0 utterances); tokenize some audio first")
    view = ds.split(split)
    if fraction < 1.0:
        view = view.fraction(fraction, seed=fraction_seed)
    if len(view) == 0 or view.n_units_total == 0:
        raise InputError(
            f"unit dataset {path}: the {split!r} split"
            + (f" at data fraction {fraction}" if fraction < 1.0 else "")
            + f" has no units ({len(view)} utterances of {len(ds)} in the dataset); "
            "use a larger dataset, a larger fraction, or other split fractions"
        )
    view.validate()
    return view


@dataclass
class DataPosition:
    """Where the training stream stands: epoch, and windows consumed within it."""

    epoch: int = 0
    window: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "window": self.window}

    @classmethod
    def from_state(cls, d: dict) -> DataPosition:
        return cls(int(d["epoch"]), int(d["window"]))


class TrainStream:
    """Deterministic, rank-sharded, resumable stream of training micro-batches.

    Args:
        dataset: the training view (split and fraction already applied).
        max_tokens: window length.
        global_batch: windows per optimiser step, summed over ranks.
        micro_batch: windows per forward pass on one rank.
        rank, world_size: this process and the number of processes.
        seed: the shuffling seed.
        packing: ``packed`` (document-masked windows) or ``padded`` (one document per row).
        layout: the model's token-id layout (its contract's); default the dataset's own,
            units-first. A text+units model reads the same units at its offset, each
            utterance opened by ``<speech>``.
        source: the epoch's documents (twist.train.mixture); default each utterance of
            ``dataset`` as ``layout`` frames it. A mixture of text, interleaved and speech
            documents (``data.interleave``) is a :class:`twist.train.mixture.MixedDocuments`.
    """

    def __init__(
        self,
        dataset: UnitDataset,
        *,
        max_tokens: int,
        global_batch: int,
        micro_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        packing: str = "packed",
        layout: VocabLayout | None = None,
        source: Any = None,
    ) -> None:
        if global_batch % (micro_batch * world_size):
            raise ConfigError(
                f"train.global_batch {global_batch} is not a multiple of micro_batch {micro_batch} x world size "
                f"{world_size}; pick micro_batch so that it divides {global_batch // world_size if global_batch % world_size == 0 else global_batch}"
            )
        self.ds = dataset
        self.layout = layout if layout is not None else dataset.contract.layout
        self.max_tokens = max_tokens
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.accum_steps = global_batch // (micro_batch * world_size)
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.packing = packing
        self.position = DataPosition()
        self.source = source if source is not None else UnitDocuments(dataset, self.layout)
        self._plan: Iterator[list[Piece]] | None = None
        self._plan_epoch = -1

    # -- plan -----------------------------------------------------------------------------
    def _epoch_plan(self, epoch: int) -> Iterator[list[Piece]]:
        lengths = self.source.lengths(epoch)  # framing included
        order = np.random.default_rng([self.seed, epoch]).permutation(len(lengths))
        pairs = ((int(i), int(lengths[i])) for i in order)
        if self.packing == "packed":
            return plan_windows(pairs, self.max_tokens, 0)
        # padded: every document is its own row
        return ([p] for w in plan_windows(pairs, self.max_tokens, 0) for p in w)

    def _next_window(self) -> tuple[int, list[Piece]]:
        while True:
            if self._plan is None or self._plan_epoch != self.position.epoch:
                self._plan = self._epoch_plan(self.position.epoch)
                self._plan_epoch = self.position.epoch
                for _ in range(self.position.window):  # fast-forward after a resume
                    next(self._plan)
            w = next(self._plan, None)
            if w is not None:
                self.position.window += 1
                return self.position.epoch, w
            self.position = DataPosition(self.position.epoch + 1, 0)
            self._plan = None

    # -- batches ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return self.position.state_dict()

    def load_state_dict(self, d: dict) -> None:
        self.position = DataPosition.from_state(d)
        self._plan = None

    def next_step(self) -> list[Batch]:
        """This rank's micro-batches for the next optimiser step."""
        mine: list[tuple[int, list[Piece]]] = []
        for j in range(self.global_batch):
            w = self._next_window()
            if j % self.world_size == self.rank:
                mine.append(w)
        return [
            self.make_batch([w for _, w in mine[i : i + self.micro_batch]], [e for e, _ in mine[i : i + self.micro_batch]])
            for i in range(0, len(mine), self.micro_batch)
        ]

    def make_batch(self, windows: Sequence[list[Piece]], epochs: Sequence[int] | None = None) -> Batch:
        """The batch of ``windows`` (each window's pieces from the epoch in ``epochs``; default 0)."""
        if epochs is None:
            if not isinstance(self.source, UnitDocuments):
                raise ValueError("make_batch: a mixture's documents depend on the epoch: pass each window's epoch")
            epochs = [0] * len(windows)
        docs = [[self._read(p, e) for p in w] for w, e in zip(windows, epochs)]
        if self.packing == "packed":
            batch = pack_sequences(docs, self.layout, self.max_tokens)
        else:
            batch = pad_documents([d[0] for d in docs], self.layout)
        return unit_targets(batch, self.layout) if self.source.loss_units else batch

    def _read(self, p: Piece, epoch: int = 0) -> np.ndarray:
        return self.source.document(p.index, epoch)[p.start : p.stop]


def valid_batches(
    dataset: UnitDataset,
    *,
    max_tokens: int,
    micro_batch: int,
    rank: int = 0,
    world_size: int = 1,
    packing: str = "packed",
    max_windows: int | None = None,
    layout: VocabLayout | None = None,
) -> Iterator[tuple[Batch, bool]]:
    """Validation windows in manifest order (no shuffle), this rank's share only.

    Yields ``(batch, counted)``. Every rank yields the same number of batches: a rank with
    fewer windows repeats one with ``counted=False`` (its loss is ignored), because FSDP
    forward passes are collective and a rank that stopped early would hang the others.
    """
    stream = TrainStream(
        dataset,
        max_tokens=max_tokens,
        global_batch=micro_batch * world_size,
        micro_batch=micro_batch,
        rank=rank,
        world_size=world_size,
        packing=packing,
        layout=layout,
    )
    pairs = ((i, int(n)) for i, n in enumerate(stream.source.lengths(0)))
    windows = list(plan_windows(pairs, max_tokens, 0))
    if packing == "padded":
        windows = [[p] for w in windows for p in w]
    if max_windows:
        windows = windows[:max_windows]
    mine = windows[rank::world_size]
    n_batches = -(-len(windows[0::world_size]) // micro_batch)  # rank 0 has the most
    for i in range(n_batches):
        chunk = mine[i * micro_batch : (i + 1) * micro_batch]
        if chunk:
            yield stream.make_batch(chunk), True
        else:
            yield stream.make_batch(windows[:1]), False


def open_valid_sets(path: str | Path, extra_paths: Sequence[str | Path], train_contract: Any) -> dict[str, UnitDataset]:
    """The validation splits a run scores: its own dataset's (when it has one) and those of
    ``data.valid_paths``, each checked against the training data's unit contract. Keyed by
    dataset directory name (made unique)."""
    import logging

    sets: dict[str, UnitDataset] = {}
    try:
        sets[Path(path).name or "valid"] = open_split(path, "valid")
    except InputError as e:
        if "has no units" not in str(e):
            raise
        logging.getLogger("twist.train").warning(
            "no validation split in %s: best checkpoint selection falls back to the last one", path)
    for p in extra_paths:
        view = open_split(p, "valid")
        view.contract.check_compatible(train_contract, mine=f"validation set {p}", theirs=f"training set {path}")
        name = Path(p).name
        while name in sets:
            name += "_"
        sets[name] = view
    return sets
