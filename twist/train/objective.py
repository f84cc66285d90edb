"""What a training run optimises: next-unit prediction (TWIST) or preferences (DPO, Slam).

The trainer (twist.train.trainer) runs the same loop, checkpoints, schedule, strategy and
loggers for both; an objective supplies what differs:

* its data: the unit dataset's splits, or a pair dataset's (twist.pairs); opened before any
  model is built, so bad input fails first; and ``contract``, the unit contract the model
  carries: the data's, or (``init.vocab=text+units``; a text+units DPO policy) the same units
  in the text+units layout, whose ``tokenizer`` the export ships;
* its stream of micro-batches, resumable (``state_dict``) and rank-sharded so that one and N
  processes see the same global batch;
* ``counts(batches)``: what a step's loss is averaged over (target tokens; pairs) and the
  tokens it read;
* ``loss(batch)``: a summed loss and summed metrics, each divided by the global count;
* ``validate()``: the validation metrics and ``metric``, the one that picks the best checkpoint
  (lower is better).

``LMObjective`` is the TWIST recipe's next-unit cross-entropy. ``DPOObjective`` is Slam's
preference stage: the policy starts from ``dpo.policy``, the reference is the same model,
frozen (or its log-probabilities, computed once with ``dpo.precompute_reference``), the loss
is twist.train.dpo_loss's, and validation reports the held-out pairs' loss, rewards and pair
accuracy under TRL's ``eval_*`` names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.atomic import atomic_write_json
from twist.dist import DistInfo, all_reduce_tensor, barrier
from twist.errors import ConfigError, InputError
from twist.lm.families import family
from twist.train.config import TrainRunConfig
from twist.train.data import TrainStream, open_split, open_valid_sets, valid_batches
from twist.train.dpo import PairRows, pair_logps, pair_rows
from twist.train.dpo_loss import PairLogps, preference_loss
from twist.train.loggers import progress_items
from twist.train.step import ForwardLoss, perplexity


def build_objective(cfg: TrainRunConfig, info: DistInfo) -> LMObjective | DPOObjective:
    """The run's objective, its data opened and checked (no model yet)."""
    return DPOObjective(cfg, info) if cfg.objective == "dpo" else LMObjective(cfg, info)


class LMObjective:
    """Next-unit cross-entropy on packed unit sequences (TWIST); best checkpoint by valid PPL."""

    metric = "valid_ppl"

    def __init__(self, cfg: TrainRunConfig, info: DistInfo) -> None:
        from twist.lm.build import speech_contract, speech_tokenizer_for

        d = cfg.data
        self.cfg, self.info = cfg, info
        self.train_ds = open_split(d.path, "train", fraction=d.fraction, fraction_seed=d.fraction_seed)
        self.valid_sets = open_valid_sets(d.path, d.valid_paths, self.train_ds.contract)
        # the model's contract: the data's units, in the layout init.vocab asks for (text+units:
        # the text tokenizer is read here, before any model, and its extension kept for the export)
        self.contract = speech_contract(cfg.model, self.train_ds.contract, cfg.init.vocab)
        self.tokenizer = speech_tokenizer_for(cfg.model, self.contract)
        # data.interleave: text, interleaved and speech documents (twist.train.mixture), built and
        # checked here, before any model; otherwise each utterance as the layout frames it
        self.source = None
        if d.interleave.active:
            from twist.train.mixture import MixedDocuments

            self.source = MixedDocuments(self.train_ds, self.contract.layout, d.interleave, self.tokenizer,
                                         seed=cfg.seed, progress=cfg.train.progress and info.rank == 0)

    def bind(self, model: torch.nn.Module, built: Any, *, compile: bool) -> None:
        """Attach the built model: forward + loss (compiled once per kind of batch with
        train.compile) and the training stream in the attention plan's packing."""
        c, t = self.cfg, self.cfg.train
        self.packing = built.attention.packing
        self.forward_loss = ForwardLoss(model, self.contract.layout, built.attention, autocast=built.autocast_dtype,
                                        compile=compile, backend=t.compile_backend)
        self.stream = TrainStream(self.train_ds, max_tokens=c.data.max_tokens, global_batch=t.global_batch,
                                  micro_batch=t.micro_batch, rank=self.info.rank, world_size=self.info.world_size,
                                  seed=c.seed, packing=self.packing, layout=self.contract.layout, source=self.source)

    def prepare(self, out_dir: Path) -> None:
        """With ``data.interleave``: say what epoch 0 holds, in the log and ``<out_dir>/mixture.json``."""
        if self.source is None or self.info.rank != 0:
            return
        import logging

        counts = self.source.kinds_of(0)
        logging.getLogger("twist.train").info("data.interleave: epoch 0 holds %s documents", ", ".join(
            f"{n} {k}" for k, n in counts.items()))
        atomic_write_json(out_dir / "mixture.json", {"epoch0_documents": counts})

    @staticmethod
    def counts(batches: Sequence[Any]) -> list[float]:
        return [sum(b.n_targets for b in batches), sum(b.n_tokens for b in batches)]

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.forward_loss(batch), {}

    def validate(self) -> dict[str, float]:
        """Speech-token PPL on every validation set; ``valid_ppl`` is their mean."""
        t, d, info = self.cfg.train, self.cfg.data, self.info
        out: dict[str, float] = {}
        for name, ds in self.valid_sets.items():
            batches = valid_batches(ds, max_tokens=d.max_tokens, micro_batch=t.valid_micro_batch or t.micro_batch,
                                    rank=info.rank, world_size=info.world_size, packing=self.packing,
                                    max_windows=d.valid_max_windows, layout=self.contract.layout)
            out[f"valid_ppl/{name}"] = perplexity(self.forward_loss, batches, info.device)
        if out:
            out["valid_ppl"] = sum(out.values()) / len(out)
        return out

    @property
    def validates(self) -> bool:
        return bool(self.valid_sets)


# ---------------------------------------------------------------------------------------
# preference optimisation
# ---------------------------------------------------------------------------------------
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected")


class PairStream:
    """Deterministic, rank-sharded, resumable stream of pair micro-batches.

    Every epoch is a seeded permutation of the training pairs; pair ``j`` of a step's global
    batch goes to rank ``j % world_size``, so 1 and N processes see the same global batch.
    The position is ``(epoch, pairs consumed in the epoch)``.
    """

    def __init__(self, pairs: Sequence[Any], layout: Any, *, max_tokens: int, global_batch: int, micro_batch: int,
                 rank: int, world_size: int, seed: int, shared: bool, padded: bool) -> None:
        if global_batch % (micro_batch * world_size):
            raise ConfigError(f"train.global_batch {global_batch} is not a multiple of micro_batch {micro_batch} x "
                              f"world size {world_size}")
        self.ds, self.layout = list(pairs), layout
        self.max_tokens, self.global_batch, self.micro_batch = max_tokens, global_batch, micro_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shared, self.padded = shared, padded
        self.packing = "shared" if shared else ("padded" if padded else "separate")
        self.epoch, self.index = 0, 0
        self._order: np.ndarray | None = None

    @property
    def position(self) -> Any:
        return self  # .epoch, as TrainStream.position has it

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "window": self.index}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.index, self._order = int(d["epoch"]), int(d["window"]), None

    def _next(self) -> Any:
        if self._order is None:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.ds))
        if self.index >= len(self._order):
            self.epoch, self.index, self._order = self.epoch + 1, 0, None
            return self._next()
        pair = self.ds[int(self._order[self.index])]
        self.index += 1
        return pair

    def next_step(self) -> list[PairRows]:
        """This rank's micro-batches for the next optimiser step."""
        mine = [p for j in range(self.global_batch) if (p := self._next()) is not None and j % self.world_size == self.rank]
        return [self.rows(mine[i: i + self.micro_batch]) for i in range(0, len(mine), self.micro_batch)]

    def rows(self, pairs: Sequence[Any]) -> PairRows:
        return pair_rows(pairs, self.layout, max_tokens=self.max_tokens, shared=self.shared, padded=self.padded)


class DPOObjective:
    """DPO against a frozen reference (Slam's second stage); best checkpoint by held-out DPO loss."""

    metric = "eval_loss"

    def __init__(self, cfg: TrainRunConfig, info: DistInfo) -> None:
        from twist.pairs import PairDataset

        self.cfg, self.info = cfg, info
        if cfg.train.compile:
            raise ConfigError("train.compile is not supported with objective=dpo (set train.compile=false)")
        if cfg.train.strategy == "fsdp":
            raise ConfigError("train.strategy=fsdp is not supported with objective=dpo yet; use ddp (or auto)")
        if not Path(cfg.data.path).exists():
            from twist.errors import MissingInputError

            raise MissingInputError(f"pair dataset not found: {cfg.data.path} (build one with twist-bench task=prefs)")
        from twist.lm import read_contract

        policy_contract = read_contract(cfg.dpo.policy)
        self.pairs = PairDataset(cfg.data.path, expected=policy_contract, expected_name=f"speech LM {cfg.dpo.policy}")
        # the pairs' units, read in the policy's layout (a text+units policy ships its tokenizer on)
        self.contract = policy_contract
        self.tokenizer = None
        if policy_contract.layout.has_text:
            from twist.lm import load_speech_tokenizer

            self.tokenizer = load_speech_tokenizer(cfg.dpo.policy)
        self.train_pairs, self.valid_pairs = self.pairs.split("train"), self.pairs.split("valid")
        if not self.train_pairs:
            raise InputError(f"pair dataset {cfg.data.path} has no train pairs ({self.pairs.counts})")
        self.reference: Any = None

    def bind(self, model: torch.nn.Module, built: Any, *, compile: bool) -> None:
        """Attach the policy; choose the pair layout from its family; load the live reference."""
        c, t, d = self.cfg, self.cfg.train, self.cfg.dpo
        self.model, self.plan, self.autocast = model, built.attention, built.autocast_dtype
        row = family(getattr(getattr(_unwrapped(model), "config", None), "model_type", None))
        can_share = row.packable and row.own_attention is None and self.plan.packing == "packed"
        if d.shared_prompt == "true" and not can_share:
            raise ConfigError(f"dpo.shared_prompt=true: the {row.model_type} family cannot take the shared-prompt "
                              "mask (it does not pack, or keeps its own attention); use auto or false")
        shared = can_share and d.shared_prompt != "false"
        self.stream = PairStream(self.train_pairs, self.contract.layout, max_tokens=c.data.max_tokens,
                                 global_batch=t.global_batch, micro_batch=t.micro_batch, rank=self.info.rank,
                                 world_size=self.info.world_size, seed=c.seed, shared=shared,
                                 padded=not row.packable or self.plan.packing == "padded")
        if not d.precompute_reference:
            self.reference = LiveReference(load_reference(c, self.info.device), self.plan, self.contract.layout,
                                           self.autocast)

    def prepare(self, out_dir: Path) -> None:
        """With ``dpo.precompute_reference``: score every pair with the reference once (resumable)."""
        if self.cfg.dpo.precompute_reference:
            self.reference = precompute_reference(self.cfg, self, out_dir)

    @staticmethod
    def counts(batches: Sequence[PairRows]) -> list[float]:
        return [sum(b.n_pairs for b in batches), sum(b.n_tokens for b in batches)]

    def loss(self, rows: PairRows) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        policy = pair_logps(self.model, rows, self.plan, self.contract.layout, autocast=self.autocast)
        return preference_loss(policy, self.reference.logps(rows), beta=self.cfg.dpo.beta,
                               loss_type=self.cfg.dpo.loss)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Held-out pairs: DPO loss, rewards, margins and pair accuracy (``eval_*``, TRL's names)."""
        if not self.valid_pairs:
            return {}
        t, info = self.cfg.train, self.info
        step = (t.valid_micro_batch or t.micro_batch) * info.world_size
        total = torch.zeros(2 + len(METRICS), dtype=torch.float64, device=info.device)
        for start in range(0, len(self.valid_pairs), step):
            mine = self.valid_pairs[start:start + step][info.rank::info.world_size]
            if not mine:  # every rank runs the same number of forwards
                mine, weight = self.valid_pairs[:1], 0.0
            else:
                weight = 1.0
            loss, sums = self.loss(self.stream.rows(mine).to(info.device))
            total += weight * torch.stack([loss.double(), torch.tensor(float(len(mine)), device=info.device),
                                           *(sums[k].double() for k in METRICS)])
        all_reduce_tensor(total)
        n = float(total[1])
        return {"eval_loss": float(total[0]) / n, **{f"eval_{k}": float(v) / n for k, v in zip(METRICS, total[2:])}}

    @property
    def validates(self) -> bool:
        return bool(self.valid_pairs)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def load_reference(cfg: TrainRunConfig, device: torch.device) -> torch.nn.Module:
    """The reference: the starting policy, frozen, in eval mode, on ``device``."""
    from twist.lm import load_speech_lm

    model, _ = load_speech_lm(cfg.dpo.policy, device=device)
    model.requires_grad_(False)
    return model.eval()


class LiveReference:
    """Reference log-probabilities from the frozen reference model, batch by batch."""

    def __init__(self, model: torch.nn.Module, plan: Any, layout: Any, autocast: torch.dtype | None) -> None:
        self.model, self.plan, self.layout, self.autocast = model, plan, layout, autocast

    @torch.no_grad()
    def logps(self, rows: PairRows) -> PairLogps:
        return pair_logps(self.model, rows, self.plan, self.layout, autocast=self.autocast)


class TableReference:
    """Reference log-probabilities read from the table :func:`precompute_reference` wrote."""

    def __init__(self, table: dict[str, tuple[float, float]], device: torch.device) -> None:
        self.table, self.device = table, device

    def logps(self, rows: PairRows) -> PairLogps:
        vals = torch.tensor([self.table[i] for i in rows.ids], dtype=torch.float32, device=self.device)
        n = rows.n_pairs
        counts = torch.bincount(rows.score_slot, minlength=2 * n).to(torch.float32)
        return PairLogps(vals[:, 0], vals[:, 1], counts[0::2], counts[1::2])


REFERENCE_DIR = "reference"
CHUNK = 256


def precompute_reference(cfg: TrainRunConfig, objective: DPOObjective, out_dir: Path) -> TableReference:
    """Score every pair (train and valid) with the reference once, into ``<out_dir>/reference/``.

    Pairs go in chunks of 256 in dataset order, chunk ``i`` to rank ``i % world_size``; each
    chunk is a JSON file written then renamed, so a killed run redoes at most one chunk per
    rank. The table is keyed by pair id; every rank reads all of it."""
    info = objective.info
    root = out_dir / REFERENCE_DIR
    pairs = objective.train_pairs + objective.valid_pairs
    chunks = [pairs[i:i + CHUNK] for i in range(0, len(pairs), CHUNK)]
    todo = [k for k in range(len(chunks)) if k % info.world_size == info.rank and not (root / f"{k:05d}.json").is_file()]
    if todo:
        reference = LiveReference(load_reference(cfg, info.device), objective.plan, objective.contract.layout,
                                  objective.autocast)
        step = cfg.train.valid_micro_batch or cfg.train.micro_batch
        for k in progress_items(todo, info.is_main and cfg.train.progress, desc="reference log-probs", unit="chunk"):
            table: dict[str, list[float]] = {}
            for s in range(0, len(chunks[k]), step):
                part = chunks[k][s:s + step]
                lp = reference.logps(objective.stream.rows(part).to(info.device))
                for p, c, r in zip(part, lp.chosen.tolist(), lp.rejected.tolist()):
                    table[p.id] = [c, r]
            atomic_write_json(root / f"{k:05d}.json", table, indent=None)
        del reference
    barrier()
    table = {}
    for k in range(len(chunks)):
        table.update({i: tuple(v) for i, v in json.loads((root / f"{k:05d}.json").read_text()).items()})
    missing = [p.id for p in pairs if p.id not in table]
    if missing:
        raise InputError(f"{root}: reference log-probabilities missing for pairs {missing[:3]}; remove the dir to recompute")
    return TableReference(table, info.device)


__all__ = ["DPOObjective", "LMObjective", "PairStream", "build_objective", "precompute_reference"]
