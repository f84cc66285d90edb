"""The TWIST trainer: a speech LM trained on packed unit sequences, resumable exactly.

Recipe (Hassid et al. 2023, §3.2 and appendix A.1): a text LM warm- or cold-started on a
unit vocabulary (twist.lm), next-unit cross-entropy, AdamW, an inverse-sqrt schedule with
100 warmup steps (cosine with 500 for the LLaMA-7B recipe), learning rates from the
``init/`` config, a global batch of 64 sequences of up to 704 tokens whatever the number of
GPUs (gradient accumulation fills the gap), gradient clipping, and the checkpoint with the
best validation perplexity kept and exported.

The :class:`Trainer` holds its state explicitly (:class:`TrainState`) and writes it, with
model, optimiser, schedule, RNG states of every rank and the data position, into
``<out_dir>/checkpoints/{last,best}`` through twist.checkpoint (atomic). A new process
pointed at the same ``out_dir`` continues from ``last``: on CPU with a fixed seed the
losses that follow are bit-identical to an uninterrupted run (tested).

Loss normalisation: each micro-batch's summed token loss is divided by the number of
target tokens in the whole global batch (all micro-batches, all ranks), so one process and
N processes compute the same gradient for the same global batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from twist.atomic import atomic_write_text
from twist.checkpoint import (
    SHARDS,
    capture_rng_state,
    commit_checkpoint,
    copy_checkpoint,
    is_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    shards_dir,
    staging_dir,
)
from twist.contract import UnitContract, VocabLayout
from twist.train import distributed as D
from twist.train.attention import plan_attention
from twist.train.data import TrainStream, open_split, valid_batches
from twist.train.loggers import MetricsLogger, flops_per_token, peak_flops, read_metrics
from twist.train.packing import Batch
from twist.train.schedule import LRSchedule
from twist.train.step import ForwardLoss, GuardedUpdate, supports_found_inf

log = logging.getLogger("twist.train")


@dataclass
class TrainState:
    """Everything about progress that is not inside the model, optimiser or data stream."""

    step: int = 0
    tokens: int = 0
    best_ppl: float = math.inf
    best_step: int = -1
    last_valid_step: int = -1
    elapsed_s: float = 0.0
    skipped_steps: int = 0  # optimiser updates skipped for a non-finite gradient


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    tokens: int
    best_ppl: float
    best_step: int
    stop_reason: str
    export_dir: Path | None


class Trainer:
    """Train a speech LM from a resolved ``twist-train`` config (see configs/train.yaml).

    Args:
        cfg: the config: ``out_dir``, ``seed``, ``resume``, ``model``, ``init``, ``data``,
            ``optim``, ``schedule``, ``logger``, ``train``.
        model: an already built speech LM to train instead of building one from
            ``cfg.model`` (tests and the throughput benchmark use this).
    """

    def __init__(self, cfg: DictConfig | dict, *, model: torch.nn.Module | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        c = self.cfg
        self.out_dir = Path(c.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        t = c.train
        if t.get("num_threads"):
            torch.set_num_threads(int(t.num_threads))
        self.info = D.init_distributed(str(t.get("device", "auto")))
        self.device = self.info.device
        torch.manual_seed(int(c.seed))

        # -- data (validated before any model is built: bad input fails fast) ---------------
        d = c.data
        self.train_ds = open_split(d.path, "train", fraction=float(d.get("fraction", 1.0)),
                                   fraction_seed=int(d.get("fraction_seed", 0)))
        self.contract: UnitContract = self.train_ds.contract
        self.layout = VocabLayout(self.contract.n_units)
        self.valid_sets = self._open_valid_sets()

        # -- resume point -----------------------------------------------------------------
        self.state = TrainState()
        self._resume_from = self._find_resume()
        self.strategy = D.resolve_strategy(str(t.get("strategy", "auto")), self.info)
        # Under FSDP2 only rank 0 reads full weights (checkpoint or text LM); the other ranks
        # lay the model out on the meta device and receive their shards by broadcast, so a
        # node holds one full copy in host memory, not one per GPU (the 7B recipe).
        sharded_init = self.strategy == "fsdp" and model is None
        self.checkpoint_format = str(t.get("checkpoint_format", "full"))
        if self.checkpoint_format not in ("full", "sharded"):
            raise ValueError(f"train.checkpoint_format must be full or sharded; got {self.checkpoint_format!r}")
        # a sharded checkpoint's state.pt is small: every rank reads it, and its own shards
        resume_shards = shards_dir(self._resume_from) if self._resume_from else None
        ckpt = None
        if self._resume_from and (self.info.is_main or not sharded_init or resume_shards):
            ckpt = load_checkpoint(self._resume_from)
            UnitContract.from_dict(ckpt["contract"]).check_compatible(
                self.contract, mine=f"checkpoint {self._resume_from}", theirs=f"dataset {d.path}"
            )

        # -- model --------------------------------------------------------------------------
        full_weights: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        if sharded_init and resume_shards:
            model = self._meta_skeleton()
        elif sharded_init:
            model, full_weights = self._layout_on_meta(ckpt)
        elif model is None:
            model = self._build_model(resuming=ckpt is not None)
        from twist.lm import contract_of

        try:
            model_contract = contract_of(model)
        except (ValueError, AttributeError, KeyError):
            model_contract = None
        if model_contract is not None:
            model_contract.check_compatible(self.contract, mine=f"model {c.model.get('name', '?')}", theirs=f"dataset {d.path}")
        vocab = model.get_input_embeddings().weight.shape[0]
        if vocab < self.layout.n_real:
            raise ValueError(f"model vocabulary ({vocab}) is smaller than the unit layout needs ({self.layout.n_real})")
        self.autocast_dtype = _precision(str(t.get("precision", "auto")), self.device)
        # attention kernel, packing and mask form (twist.train.attention); logged once
        self.attention = plan_attention(model, str(t.get("attn_implementation") or "auto"),
                                        str(d.get("packing", "auto")), device=self.device,
                                        compute_dtype=self.autocast_dtype, announce=self.info.is_main)
        self.packing = self.attention.packing
        self.seq_len = int(d.max_tokens)
        self.flops_per_token = flops_per_token(model, self.seq_len)
        if not sharded_init:
            model.to(self.device)
        if t.get("activation_checkpointing"):
            # recompute each block's activations in backward: less memory, ~1/3 more compute
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ValueError(f"train.activation_checkpointing: {type(model).__name__} does not support it")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if t.get("compile") and self.strategy == "fsdp":
            model.compile()  # FSDP2: in place, per module; elsewhere forward + loss compile together (below)
        self.model = D.wrap_model(model, self.strategy, self.info,
                                  fsdp_param_dtype=_fsdp_param_dtype(t.get("fsdp_param_dtype", "auto"),
                                                                     self.autocast_dtype))
        if sharded_init and resume_shards:
            D.materialize_with_buffers(self.model, ckpt["buffers"], self.device)  # weights: _load_state
        elif sharded_init:
            D.materialize_from_rank0(self.model, full_weights, self.info)
            del full_weights

        # -- optimisation -----------------------------------------------------------------
        o = c.optim
        lr_max = float(o.lr_max if o.get("lr_max") is not None else c.init.lr_max)
        lr_final = float(o.lr_final if o.get("lr_final") is not None else c.init.lr_final)
        self.optimizer = _adamw(self.model, o, self.device)
        s = c.schedule
        self.schedule = LRSchedule(
            self.optimizer,
            kind=str(s.name),
            lr_max=lr_max,
            lr_final=lr_final,
            warmup_steps=int(s.warmup_steps),
            total_steps=int(s.total_steps) if s.get("total_steps") else (int(t.max_steps) if t.get("max_steps") else None),
        )
        self.stream = TrainStream(
            self.train_ds,
            max_tokens=self.seq_len,
            global_batch=int(t.global_batch),
            micro_batch=int(t.micro_batch),
            rank=self.info.rank,
            world_size=self.info.world_size,
            seed=int(c.seed),
            packing=self.packing,
        )
        # forward + loss, compiled once per kind of batch when train.compile is set (twist.train.step)
        self.forward_loss = ForwardLoss(self.model, self.layout, self.attention, autocast=self.autocast_dtype,
                                        compile=bool(t.get("compile")) and self.strategy != "fsdp",
                                        backend=str(t.get("compile_backend") or "inductor"))
        # clip + step-or-skip; with a fused optimiser the skip is decided on the device and the
        # norms are read only when numbers are needed on the host (log, validation, checkpoint)
        self.update = GuardedUpdate(self.model.parameters, self.optimizer,
                                    clip=float(c.optim.get("grad_clip") or 0.0),
                                    limit=int(t.get("skip_nonfinite", 5) or 0),
                                    defer=supports_found_inf(self.optimizer))
        if self._resume_from:
            self._load_state(ckpt, weights_loaded=sharded_init and not resume_shards, shards=resume_shards)
        del ckpt

        lg = c.get("logger", {}) or {}
        self.logger = MetricsLogger(
            self.out_dir,
            enabled=self.info.is_main,
            tensorboard=bool(lg.get("tensorboard", False)),
            wandb=bool(lg.get("wandb", False)),
            wandb_project=str(lg.get("project", "twist")),
            run_name=lg.get("run_name"),
            config=OmegaConf.to_container(c, resolve=True) if lg.get("wandb") else None,
        )
        self.peak = peak_flops(self.device)

    # ---------------------------------------------------------------------------------------
    # setup helpers
    # ---------------------------------------------------------------------------------------
    def _open_valid_sets(self) -> dict[str, Any]:
        d = self.cfg.data
        sets: dict[str, Any] = {}
        try:
            own = open_split(d.path, "valid")
            sets[Path(d.path).name or "valid"] = own
        except ValueError as e:
            if "has no units" not in str(e):
                raise
            log.warning("no validation split in %s: best checkpoint selection falls back to the last one", d.path)
        for p in d.get("valid_paths") or []:
            view = open_split(p, "valid")
            view.contract.check_compatible(self.contract, mine=f"validation set {p}", theirs=f"training set {d.path}")
            name = Path(p).name
            while name in sets:
                name += "_"
            sets[name] = view
        return sets

    def _find_resume(self) -> Path | None:
        mode = str(self.cfg.get("resume", "auto")).lower()
        last = self.ckpt_dir / "last"
        exists = is_checkpoint(last)
        if mode in ("true", "1", "yes"):
            if not exists:
                raise FileNotFoundError(f"resume=true but there is no checkpoint at {last}")
            return last
        if mode in ("false", "0", "no"):
            if exists:
                raise FileExistsError(
                    f"{self.out_dir} already holds a training run ({last}); pass resume=auto to continue it "
                    "or choose another out_dir"
                )
            return None
        if mode != "auto":
            raise ValueError(f"resume must be auto, true or false; got {mode!r}")
        return last if exists else None

    def _build_model(self, *, resuming: bool, verbose: bool = True) -> torch.nn.Module:
        from twist.lm import build_speech_lm

        c = self.cfg
        model_cfg = OmegaConf.to_container(c.model, resolve=True)
        # On resume every weight comes from the checkpoint: skip loading the text LM.
        init = "cold" if resuming else str(c.init.name)
        embed_init = str(c.init.get("embed_init", "random"))
        model = build_speech_lm(model_cfg, init, self.contract, embed_init=embed_init, seed=int(c.seed),
                                verbose=verbose)
        if resuming and str(c.init.name) != init:
            # the architecture was rebuilt without the text LM; the weights (loaded next) and
            # the exported provenance are the run's own
            from twist.lm.surgery import META_KEY

            meta = dict(getattr(model.config, META_KEY))
            meta.update(init=str(c.init.name), embed_init=embed_init if str(c.init.name) == "warm" else None)
            setattr(model.config, META_KEY, meta)
        return model

    def _layout_on_meta(
        self, ckpt: dict[str, Any] | None
    ) -> tuple[torch.nn.Module, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None]:
        """FSDP2 start: the architecture on the meta device (every rank) and, on rank 0 only,
        the full weights and buffers to broadcast: the checkpoint's when resuming, else those
        of the warm- or cold-started model."""
        full = None
        if self.info.is_main:
            if ckpt is not None and "buffers" in ckpt:
                full = (ckpt["model"], ckpt["buffers"])
            else:
                real = self._build_model(resuming=ckpt is not None)
                weights = ckpt["model"] if ckpt is not None else real.state_dict()
                full = (weights, {n: b for n, b in real.named_buffers()})
                del real
        return self._meta_skeleton(), full

    def _meta_skeleton(self) -> torch.nn.Module:
        """The run's architecture on the meta device: no memory, no text LM read; provenance kept."""
        with torch.device("meta"):
            return self._build_model(resuming=True, verbose=False)

    def _data_signature(self) -> dict[str, Any]:
        t = self.cfg.train
        return {
            "n_train_utterances": len(self.train_ds),
            "max_tokens": self.seq_len,
            "global_batch": int(t.global_batch),
            "seed": int(self.cfg.seed),
            "packing": self.packing,
        }

    # ---------------------------------------------------------------------------------------
    # checkpoints
    # ---------------------------------------------------------------------------------------
    def _small_state(self) -> dict[str, Any] | None:
        """Everything but model and optimiser, on rank 0 (``None`` elsewhere); collective."""
        rngs = D.gather_objects(capture_rng_state())
        if not self.info.is_main:
            return None
        return {
            "schedule": self.schedule.state_dict(),
            "data": self.stream.state_dict(),
            "data_signature": self._data_signature(),
            "state": asdict(self.state),
            "rng": rngs,
            "world_size": self.info.world_size,
            "contract": self.contract.to_dict(),
        }

    def _full_state(self) -> dict[str, Any] | None:
        """The whole checkpoint dict, gathered on rank 0 (``None`` elsewhere); collective."""
        model_sd, optim_sd = D.full_state_dicts(self.model, self.optimizer, self.strategy)
        small = self._small_state()
        if small is None:
            return None
        return {"model": model_sd, "buffers": D.extra_buffers(self.model, model_sd), "optimizer": optim_sd, **small}

    def save(self, names: tuple[str, ...]) -> None:
        """Write checkpoints ``names`` (e.g. ``("best", "last")``), atomically; collective.

        ``full``: rank 0 gathers everything into one file. ``sharded``: every rank writes its
        part of model and optimiser into ``<checkpoint>/shards`` (torch.distributed.checkpoint)
        and rank 0 adds the small rest; rank 0 renames the finished directory into place.
        """
        self._settle()
        meta = {"step": self.state.step, "tokens": self.state.tokens, "best_ppl": self.state.best_ppl,
                "best_step": self.state.best_step, "format": self.checkpoint_format}
        if self.checkpoint_format == "full":
            state = self._full_state()
            if state is not None:
                for name in names:
                    save_checkpoint(self.ckpt_dir / name, state, meta=meta)
            D.barrier()
            return
        first = self.ckpt_dir / names[0]
        tmp = D.broadcast_object(str(staging_dir(first)) if self.info.is_main else None)
        try:
            D.save_sharded(self.model, self.optimizer, Path(tmp) / SHARDS)
            small = self._small_state()
            if small is not None:
                small["buffers"] = D.extra_buffers(self.model)
                commit_checkpoint(tmp, first, small, meta=meta)
                for name in names[1:]:
                    copy_checkpoint(first, self.ckpt_dir / name)
        except BaseException:
            if self.info.is_main:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            raise
        D.barrier()

    def _load_state(self, ckpt: dict[str, Any] | None, *, weights_loaded: bool = False,
                    shards: Path | None = None) -> None:
        """Restore a checkpoint. Under FSDP2's sharded start only rank 0 has ``ckpt``: the
        model weights were broadcast already (``weights_loaded``), the optimiser state is
        broadcast here, and the small rest (schedule, data position, RNG) is sent as objects."""
        if weights_loaded:
            small = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "buffers")} if ckpt else None
            small = D.broadcast_object(small)
            D.load_optimizer_from_rank0(self.model, self.optimizer, ckpt["optimizer"] if ckpt else None)
            ckpt = small
        sig = ckpt.get("data_signature", {})
        now = self._data_signature()
        diff = {k: (sig[k], now[k]) for k in now if k in sig and sig[k] != now[k]}
        if diff:
            raise ValueError(
                "cannot resume: the data setup differs from the checkpoint's ("
                + ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
                + "); use the same settings or a new out_dir"
            )
        if shards is not None:
            D.load_sharded(self.model, self.optimizer, shards)  # every rank reads its own part
        elif not weights_loaded:
            D.load_full_state_dicts(self.model, self.optimizer, ckpt["model"], ckpt["optimizer"], self.strategy)
        self.schedule.load_state_dict(ckpt["schedule"])
        self.stream.load_state_dict(ckpt["data"])
        self.state = TrainState(**ckpt["state"])
        rngs = ckpt["rng"]
        restore_rng_state(rngs[self.info.rank] if len(rngs) == self.info.world_size else rngs[0])
        if self.info.is_main:
            _truncate_metrics(self.out_dir / "metrics.jsonl", self.state.step)

    # ---------------------------------------------------------------------------------------
    # steps
    # ---------------------------------------------------------------------------------------
    def _loss_sum(self, batch: Batch) -> torch.Tensor:
        return self.forward_loss(batch)

    def train_step(self) -> dict[str, Any]:
        """One optimiser step over the global batch; returns its loss, grad norm, tokens.

        ``loss`` and ``grad_norm`` are 0-d device tensors: the step itself never waits for
        the device (the counts come from the host-side batches); ``float()`` them to read.
        """
        self.model.train()
        host_batches = self.stream.next_step()
        n_targets, n_tokens = D.all_reduce_sum(
            [sum(b.n_targets for b in host_batches), sum(b.n_tokens for b in host_batches)], self.device
        )
        batches = [b.to(self.device) for b in host_batches]
        scale = self.info.world_size / max(1.0, n_targets)  # DDP averages over ranks; undo it
        # the loss is summed on the device: reading it per micro-batch would make the host
        # wait for every backward before queueing the next forward
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, b in enumerate(batches):
            sync = i == len(batches) - 1
            ctx = self.model.no_sync() if (self.strategy == "ddp" and not sync) else contextlib.nullcontext()
            if self.strategy == "fsdp":
                self.model.set_requires_gradient_sync(sync)
            with ctx:
                ls = self._loss_sum(b)
                (ls * scale).backward()
            loss_sum += ls.detach().double()
        lr = self.schedule.lr
        # the global norm: every rank sees the same value and makes the same choice
        grad_norm = self.update(self.state.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(loss_sum)
        self.state.step += 1
        self.state.tokens += int(n_tokens)
        if not self.update.defer or self._host_step(self.state.step):
            self._settle()
        return {"loss": loss_sum / max(1.0, n_targets), "lr": lr, "grad_norm": grad_norm, "step_tokens": n_tokens}

    def _host_step(self, step: int) -> bool:
        """Steps after which the loop reads numbers anyway (log, validation, save, the last)."""
        t = self.cfg.train
        every = [int(t.get(k) or 0) for k in ("log_every", "valid_every", "save_every")]
        return any(e and step % e == 0 for e in every) or step == int(t.get("max_steps") or 0)

    def _settle(self) -> None:
        """Read deferred gradient norms: count skipped steps, stop on divergence."""
        try:
            self.update.settle()
        finally:
            self.state.skipped_steps += self.update.take_skipped()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Speech-token PPL on every validation set; ``valid_ppl`` is their mean."""
        self.model.eval()
        t, d = self.cfg.train, self.cfg.data
        out: dict[str, float] = {}
        for name, ds in self.valid_sets.items():
            total, count = 0.0, 0.0
            for b, counted in valid_batches(
                ds,
                max_tokens=self.seq_len,
                micro_batch=int(t.get("valid_micro_batch") or t.micro_batch),
                rank=self.info.rank,
                world_size=self.info.world_size,
                packing=self.packing,
                max_windows=d.get("valid_max_windows"),
            ):
                b = b.to(self.device)
                loss = float(self._loss_sum(b))
                if counted:
                    total += loss
                    count += b.n_targets
            total, count = D.all_reduce_sum([total, count], self.device)
            out[f"valid_ppl/{name}"] = math.exp(total / max(1.0, count))
        if out:
            out["valid_ppl"] = sum(out.values()) / len(out)
        self.model.train()
        return out

    # ---------------------------------------------------------------------------------------
    # the loop
    # ---------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        t = self.cfg.train
        max_steps = int(t.max_steps) if t.get("max_steps") else None
        max_tokens = int(t.max_train_tokens) if t.get("max_train_tokens") else None
        max_time = _seconds(t.get("max_time"))
        valid_every = int(t.get("valid_every") or 0)
        save_every = int(t.get("save_every") or 0)
        log_every = max(1, int(t.get("log_every") or 1))
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.contract.save(self.out_dir / "contract.json")
        bar = None
        if self.info.is_main and t.get("progress", True):
            from tqdm.auto import tqdm

            bar = tqdm(total=max_steps, initial=self.state.step, desc="train", unit="step", dynamic_ncols=True)
        start = time.monotonic()
        elapsed0 = self.state.elapsed_s
        win_time, win_tokens = 0.0, 0
        stop_reason = ""
        with _StopSignals(t.get("stop_signals", ("SIGTERM", "SIGUSR1"))) as signals:
            while True:
                if max_steps is not None and self.state.step >= max_steps:
                    stop_reason = "max_steps"
                elif max_tokens is not None and self.state.tokens >= max_tokens:
                    stop_reason = "max_train_tokens"
                elif max_time is not None or signals.active:
                    # every rank stops at the same step, even if only some got the signal
                    late, signalled = D.all_reduce_sum(
                        [float(max_time is not None and time.monotonic() - start >= max_time),
                         float(signals.received is not None)], self.device)
                    if signalled > 0:
                        stop_reason = f"signal {signals.received or 'on another rank'}"
                    elif late > 0:
                        stop_reason = "max_time"
                if stop_reason:
                    break
                t0 = time.monotonic()
                m = self.train_step()
                step = self.state.step
                logging_step = step % log_every == 0 or step == max_steps
                if logging_step:  # the one host read of the window, inside the timed part
                    m = {k: float(v) for k, v in m.items()}
                win_time += time.monotonic() - t0  # tokens/s measures training, not validation or saving
                self.state.elapsed_s = elapsed0 + time.monotonic() - start
                win_tokens += int(m.pop("step_tokens"))
                if bar is not None:
                    bar.update(1)
                    if logging_step:
                        bar.set_postfix(loss=f"{m['loss']:.3f}", lr=f"{m['lr']:.2e}")
                if logging_step:
                    tps = win_tokens / max(1e-9, win_time)
                    rec = {**m, "tokens": self.state.tokens, "tokens_per_s": tps, "epoch": self.stream.position.epoch}
                    if self.peak:
                        rec["mfu"] = tps * self.flops_per_token / (self.peak * self.info.world_size)
                    self.logger.log(rec, step=step)
                    win_time, win_tokens = 0.0, 0
                names: tuple[str, ...] = ()
                if valid_every and step % valid_every == 0:
                    names = self._validate_and_select()
                if save_every and step % save_every == 0:
                    names = (*names, "last") if "last" not in names else names
                if names:
                    self.save(names)
            if bar is not None:
                bar.close()
            if stop_reason.startswith("signal"):
                # pre-emption, or the scheduler's warning before a time limit: save the position
                # and leave quickly; the rerun resumes here, then validates and exports at its end
                self.save(("last",))
                log.warning("stopped by %s at step %d; checkpoint saved, run the same command to resume",
                            stop_reason, self.state.step)
                self.logger.log({"event": "stopped", "stop_reason": stop_reason}, step=self.state.step)
                self.logger.close()
                return TrainResult(self.out_dir, self.state.step, self.state.tokens, self.state.best_ppl,
                                   self.state.best_step, stop_reason, None)
        names = ()
        if self.valid_sets and self.state.last_valid_step != self.state.step:
            names = self._validate_and_select()
        self.save(tuple(dict.fromkeys((*names, "last"))))
        export = self.export()
        self.logger.log({"event": "end", "stop_reason": stop_reason, "best_step": self.state.best_step,
                         "best_ppl": self.state.best_ppl}, step=self.state.step)
        self.logger.close()
        return TrainResult(self.out_dir, self.state.step, self.state.tokens, self.state.best_ppl,
                           self.state.best_step, stop_reason, export)

    def _validate_and_select(self) -> tuple[str, ...]:
        """Validate; return the checkpoint names to write (``best`` on a new best, ``last``)."""
        v = self.validate()
        self.state.last_valid_step = self.state.step
        if not v:
            return ("last",)
        self.logger.log(v, step=self.state.step)
        if v["valid_ppl"] < self.state.best_ppl:
            self.state.best_ppl, self.state.best_step = v["valid_ppl"], self.state.step
            return ("best", "last")
        return ("last",)

    def export(self) -> Path | None:
        """Write the best checkpoint (the last one without validation) as a SpeechLM dir."""
        out = None
        if self.info.is_main:
            from twist.lm import save_speech_lm
            from twist.lm.surgery import set_module_tensor

            src = self.ckpt_dir / ("best" if is_checkpoint(self.ckpt_dir / "best") else "last")
            state = load_checkpoint(src)
            if shards_dir(src) is not None:
                # model tensors from the shards, into an unsharded copy built on the meta device
                model = self._meta_skeleton()
                D.materialize_with_buffers(model, state["buffers"], torch.device("cpu"))
                D.load_sharded_model_alone(model, shards_dir(src))
            elif self.strategy == "fsdp":
                # a fresh unsharded copy, laid out on the meta device and given the checkpoint's
                # tensors (no random init of a 7B model just to overwrite it)
                with torch.device("meta"):
                    model = self._build_model(resuming=True, verbose=False)
                model.load_state_dict(state["model"], assign=True)
                for name, b in state.get("buffers", {}).items():
                    set_module_tensor(model, name, b, buffer=True)
                model.tie_weights()
                left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
                if left:  # a checkpoint from before buffers were saved: build the model on the host
                    model = self._build_model(resuming=True, verbose=False)
                    model.load_state_dict(state["model"])
            else:
                model = D.unwrap(self.model)
                model.load_state_dict(state["model"])
            del state
            out = self.out_dir / "speech_lm"
            save_speech_lm(model.cpu() if model is not D.unwrap(self.model) else model, out, self.contract)
            atomic_write_text(out / "SOURCE", f"{src.name} checkpoint, step {self.state.best_step if src.name == 'best' else self.state.step}\n")
        D.barrier()
        return out

    def close(self) -> None:
        self.logger.close()


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def _adamw(model: torch.nn.Module, o: Any, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not biases, norms); fused kernels on CUDA."""
    wd = float(o.get("weight_decay", 0.0))
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    fused = o.get("fused", "auto")
    use_fused = device.type == "cuda" if str(fused) == "auto" else bool(fused)
    betas = tuple(float(b) for b in o.get("betas", (0.9, 0.98)))
    return torch.optim.AdamW(groups, lr=1e-8, betas=betas, eps=float(o.get("eps", 1e-8)), fused=use_fused or None)


class _StopSignals:
    """Turn the given signals (names such as ``SIGTERM``) into a flag the training loop polls.

    Schedulers send SIGTERM (pre-emption, ``scancel``) or a chosen signal before a time limit
    (SLURM ``--signal``); the loop finishes its step, saves ``last`` and returns. Handlers are
    installed only in the main thread and restored on exit.
    """

    def __init__(self, names: Any) -> None:
        import signal as _signal

        self._signal = _signal
        self.names = [str(n) for n in (names or [])]
        for n in self.names:
            if not hasattr(_signal, n):
                raise ValueError(f"train.stop_signals: unknown signal {n!r} (e.g. SIGTERM, SIGUSR1)")
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    @property
    def active(self) -> bool:
        return bool(self._old)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = self._signal.Signals(signum).name

    def __enter__(self) -> _StopSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for n in self.names:
                num = getattr(self._signal, n)
                self._old[num] = self._signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for num, old in self._old.items():
            self._signal.signal(num, old)
        self._old.clear()


def _precision(name: str, device: torch.device) -> torch.dtype | None:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp32":
        return None
    raise ValueError(f"train.precision must be auto, bf16 or fp32; got {name!r}")


def _fsdp_param_dtype(name: Any, autocast: torch.dtype | None) -> torch.dtype | None:
    """``train.fsdp_param_dtype``: ``auto`` follows the autocast dtype (bf16 on GPU), ``fp32``
    keeps full-precision all-gathers, ``bf16`` forces them."""
    name = str(name)
    if name == "auto":
        return autocast
    if name in ("fp32", "float32"):
        return None
    if name in ("bf16", "bfloat16"):
        return torch.bfloat16
    raise ValueError(f"train.fsdp_param_dtype must be auto, fp32 or bf16; got {name!r}")


def _seconds(v: Any) -> float | None:
    """``None``, a number of seconds, or ``"HH:MM:SS"`` / ``"MM:SS"``."""
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)):
        return float(v)
    parts = str(v).split(":")
    try:
        nums = [float(x) for x in parts]
    except ValueError:
        raise ValueError(f"train.max_time must be seconds or HH:MM:SS, got {v!r}") from None
    total = 0.0
    for x in nums:
        total = total * 60 + x
    return total


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records a killed run logged after its last checkpoint (they are redone)."""
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if int(r.get("step", 0)) <= step]
    import json

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
