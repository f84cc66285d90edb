"""The TWIST trainer: a speech LM trained on packed unit sequences, resumable exactly.

Recipe (Hassid et al. 2023, §3.2 and appendix A.1): a text LM warm- or cold-started on a unit
vocabulary (twist.lm), next-unit cross-entropy, AdamW, an inverse-sqrt schedule with 100
warmup steps (cosine with 500 for the LLaMA-7B recipe), learning rates from ``init/``, a
global batch of 64 sequences of up to 704 tokens whatever the number of GPUs (gradient
accumulation fills the gap), gradient clipping, and the best-validation-PPL checkpoint kept
and exported.

This module is the loop: build, :meth:`Trainer.train_step`, :meth:`Trainer.validate`,
:meth:`Trainer.fit`, the same for one process, DDP and FSDP2. The machinery is beside it: the
strategy (parallelize) lays out and compiles the model and owns gradient sync and state dicts;
the checkpointer saves, resumes (with its checks) and exports; step has forward + loss and the
guarded update; data the stream. The trainer's own state, all progress that must survive a
resume, is :class:`TrainState`; on CPU with a fixed seed a resumed run is bit-identical (tested).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from twist.console import say
from twist.contract import UnitContract
from twist.dist import all_reduce_sum, all_reduce_tensor, init_distributed
from twist.schema import to_typed
from twist.train.checkpointer import Checkpointer
from twist.train.config import TrainRunConfig
from twist.train.loggers import ThroughputMeter, check_logger_packages, open_run_logs, progress_bar
from twist.train.objective import build_objective
from twist.train.optim import build_optimizer
from twist.train.parallelize import build_model, build_strategy
from twist.train.schedule import build_schedule
from twist.train.signals import StopSignals, stop_reason
from twist.train.step import GuardedUpdate, supports_found_inf

log = logging.getLogger("twist.train")


@dataclass
class TrainState:
    """Everything about progress that is not inside the model, optimiser or data stream."""

    step: int = 0
    tokens: int = 0
    best_value: float = math.inf  # of the objective's selection metric (valid PPL; held-out DPO loss)
    best_step: int = -1
    last_valid_step: int = -1
    elapsed_s: float = 0.0
    skipped_steps: int = 0  # optimiser updates skipped for a non-finite gradient, in the whole run
    nonfinite_in_a_row: int = 0  # the current streak of them (train.skip_nonfinite bounds it)


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    tokens: int
    best_metric: str
    best_value: float
    best_step: int
    stop_reason: str
    export_dir: Path | None


class Trainer:
    """Train a speech LM from a ``twist-train`` config.

    Args:
        cfg: a :class:`~twist.train.config.TrainRunConfig`, or a config Hydra composed (or any
            mapping) with its fields; unknown keys and wrong types are refused.
        model: an already built speech LM to train instead of building one from
            ``cfg.model`` (tests and the throughput benchmark use this).
    """

    def __init__(self, cfg: TrainRunConfig | Any, *, model: torch.nn.Module | None = None) -> None:
        self.cfg = c = to_typed(TrainRunConfig, cfg)
        check_logger_packages(tensorboard=c.logger.tensorboard, wandb=c.logger.wandb)
        if c.train.num_threads:
            torch.set_num_threads(c.train.num_threads)
        self.info = init_distributed(c.train.device)
        self.device = self.info.device
        torch.manual_seed(c.seed)
        self.out_dir = Path(c.out_dir)
        # data first: bad input fails before any model is built (next-unit LM or preference pairs)
        self.objective = build_objective(c, self.info)
        self.contract: UnitContract = self.objective.contract
        # one process, DDP or FSDP2: wrapping, compile, gradient sync and state dicts
        self.strategy = build_strategy(c.train, self.info)
        self.checkpointer = Checkpointer(c, self.contract, self.strategy, tokenizer=self.objective.tokenizer)
        # the checkpoint to continue from; when FSDP2 builds the model, only rank 0 reads full weights
        resume = self.checkpointer.resume_point(rank0_reads=self.strategy.builds_on_meta(model))
        built = build_model(c, self.contract, self.strategy, resume, model=model)
        self.model, self.attention, self.flops_per_token = built.model, built.attention, built.flops_per_token
        self.optimizer = build_optimizer(self.model, c.optim, self.device)
        # the loss (compiled once per kind of batch with train.compile; FSDP2 compiles the model instead) and stream
        self.objective.bind(self.model, built, compile=self.strategy.compile_step)
        self.stream = self.objective.stream
        self.schedule = build_schedule(self.optimizer, c)
        self.checkpointer.attach(self.model, self.optimizer, self.schedule, self.stream)
        self.resumed = resume is not None
        self.state = TrainState(**self.checkpointer.restore(resume)) if self.resumed else TrainState()
        # clip + step-or-skip; with a fused optimiser the skip is decided on the device and the
        # norms are read only when numbers are needed on the host (log, validation, checkpoint)
        self.update = GuardedUpdate(self.model.parameters, self.optimizer, clip=c.optim.grad_clip,
                                    limit=c.train.skip_nonfinite, defer=supports_found_inf(self.optimizer),
                                    in_a_row=self.state.nonfinite_in_a_row)
        self.logger = None  # the metrics logs, opened by fit(): building a trainer writes nothing

    def _open_outputs(self) -> None:
        """The run's first writes: the contract, the metrics logs (cut back to the checkpoint on a resume)."""
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.contract.save(self.out_dir / "contract.json")
            if self.resumed:
                say(self.checkpointer.resume_message(self.state.step, self.state.tokens))
        self.logger = open_run_logs(self.cfg, enabled=self.info.is_main,
                                    resumed_at=self.state.step if self.resumed else None)
        self.objective.prepare(self.out_dir)  # e.g. the reference's log-probabilities, once (DPO)

    def save(self, names: tuple[str, ...]) -> None:
        """Write checkpoints ``names`` (e.g. ``("best", "last")``), atomically; collective."""
        self._settle()
        self.checkpointer.save(names, asdict(self.state))

    def export(self) -> Path | None:
        """Write the best checkpoint (the last one without validation) as a speech LM dir."""
        return self.checkpointer.export({"best": self.state.best_step, "last": self.state.step})

    def train_step(self) -> dict[str, Any]:
        """One optimiser step over the global batch; returns its loss, grad norm (0-d device
        tensors: the step never waits for the device; ``float()`` them to read), lr and tokens."""
        self.model.train()
        host_batches = self.stream.next_step()
        n_targets, n_tokens = all_reduce_sum(self.objective.counts(host_batches), self.device)
        # each summed micro-batch loss over the targets (tokens; pairs) of the whole global batch (all
        # micro-batches, all ranks): 1 and N processes get the same gradient. DDP averages over ranks; undo that.
        scale = self.info.world_size / max(1.0, n_targets)
        # summed on the device: a host read per micro-batch would wait for every backward
        loss_sum, extra = torch.zeros((), dtype=torch.float64, device=self.device), {}
        for i, b in enumerate(host_batches):
            # gradients are reduced over ranks once, after the last micro-batch
            with self.strategy.gradient_sync(self.model, sync=i == len(host_batches) - 1):
                ls, sums = self.objective.loss(b.to(self.device))
                (ls * scale).backward()
            loss_sum += ls.detach().double()
            extra = {k: extra.get(k, 0.0) + v.double() for k, v in sums.items()}
        lr = self.schedule.lr
        grad_norm = self.update(self.state.step + 1)  # the global norm: every rank makes the same choice
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        sums = torch.stack([loss_sum, *extra.values()])
        all_reduce_tensor(sums)
        self.state.step += 1
        self.state.tokens += int(n_tokens)
        t, step = self.cfg.train, self.state.step
        host_read = step == t.max_steps or any(e and step % e == 0 for e in (t.log_every, t.valid_every, t.save_every))
        if not self.update.defer or host_read:  # deferred norms are read when the loop reads numbers anyway
            self._settle()
        means = dict(zip(("loss", *extra), sums / max(1.0, n_targets)))
        return {**means, "lr": lr, "grad_norm": grad_norm, "step_tokens": n_tokens}

    def _settle(self) -> None:
        """Read deferred gradient norms: count skipped steps, stop on divergence (train.skip_nonfinite)."""
        try:
            self.update.settle()
        finally:
            self.state.skipped_steps += self.update.take_skipped()
            self.state.nonfinite_in_a_row = self.update.in_a_row

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The objective's validation metrics (valid PPL; held-out pair loss and accuracy)."""
        self.model.eval()
        out = self.objective.validate()
        self.model.train()
        return out

    def _validate_and_select(self) -> tuple[str, ...]:
        """Validate; return the checkpoint names to write (``best`` on a new best, ``last``)."""
        v, s = self.validate(), self.state
        s.last_valid_step = s.step
        if v:
            self.logger.log(v, step=s.step)
        if v and v[self.objective.metric] < s.best_value:
            s.best_value, s.best_step = v[self.objective.metric], s.step
            return ("best", "last")
        return ("last",)

    def fit(self) -> TrainResult:
        """Train until a stop condition; validate, save and export at the end (a stop signal
        only saves ``last``: the rerun resumes there, and validates and exports at its end)."""
        t, s = self.cfg.train, self.state
        if self.logger is None:
            self._open_outputs()
        bar = progress_bar(self.info.is_main and t.progress, total=t.max_steps, initial=s.step)
        started, elapsed0 = time.monotonic(), s.elapsed_s
        meter = ThroughputMeter(self.flops_per_token, self.device, self.info.world_size)
        with StopSignals(t.stop_signals) as signals:
            while not (reason := stop_reason(t, s, signals, started, self.device)):
                t0 = time.monotonic()
                m = self.train_step()
                logging_step = s.step % t.log_every == 0 or s.step == t.max_steps
                if logging_step:  # the one host read of the window, inside the timed part
                    m = {k: float(v) for k, v in m.items()}
                meter.add(time.monotonic() - t0, m.pop("step_tokens"))  # training only, not validation or saving
                s.elapsed_s = elapsed0 + time.monotonic() - started
                bar.update(1)
                if logging_step:
                    bar.set_postfix(loss=f"{m['loss']:.3f}", lr=f"{m['lr']:.2e}")
                    self.logger.log({**m, "tokens": s.tokens, **meter.record(), "epoch": self.stream.position.epoch},
                                    step=s.step)
                names = self._validate_and_select() if t.valid_every and s.step % t.valid_every == 0 else ()
                if names or (t.save_every and s.step % t.save_every == 0):
                    self.save(names or ("last",))
        bar.close()
        export = None
        if reason.startswith("signal"):  # pre-emption: save the position and leave quickly
            self.save(("last",))
            log.warning("stopped by %s at step %d; checkpoint saved, run the same command to resume", reason, s.step)
        else:
            self.save(self._validate_and_select() if self.objective.validates and s.last_valid_step != s.step
                      else ("last",))
            export = self.export()
        self.logger.log({"event": "stopped" if export is None else "end", "stop_reason": reason,
                         "best_step": s.best_step, f"best_{self.objective.metric}": s.best_value}, step=s.step)
        self.logger.close()
        return TrainResult(self.out_dir, s.step, s.tokens, self.objective.metric, s.best_value, s.best_step, reason,
                           export)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
