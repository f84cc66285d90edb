"""A run's checkpoints: save, resume and export, behind one interface, for every strategy.

A checkpoint (``<out_dir>/checkpoints/{last,best}``, written atomically by twist.checkpoint)
holds the model, the optimiser, and the small rest: schedule, data position and the data
setup it depends on, the RNG of every rank, and the trainer's progress (its ``TrainState``).
Two formats:

* ``full``: rank 0 gathers model and optimiser into one ``state.pt``. The optimiser state is
  keyed by parameter name, not by position, so a run written by one process, by DDP or by
  FSDP2 resumes under any of them, with any number of processes;
* ``sharded``: every rank writes its own part with torch.distributed.checkpoint into
  ``<checkpoint>/shards``, and rank 0 adds the small rest (no 80 GB gather for a 7B model).
  Loading reshards.

How the live model's and optimiser's state is read and written (gathered, sharded, broadcast
from rank 0) is the strategy's (twist.train.parallelize); which files hold it, and what a
resume checks and restores, is this module's.

A resume continues exactly where the checkpoint was taken: the same model (the config's
architecture must match), the same data setup (its order depends on it), schedule, data
position and every rank's RNG; it refuses to go back to an earlier ``train.max_steps``.

The export writes the best checkpoint (the last one without validation) as a speech LM
directory that plain ``from_pretrained`` loads (twist.lm.save_speech_lm).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from twist import dist as D
from twist.atomic import atomic_write_text, disk_full_cause, disk_full_error
from twist.checkpoint import (
    SHARDS,
    capture_rng_state,
    check_same_model,
    commit_checkpoint,
    copy_checkpoint,
    is_checkpoint,
    load_checkpoint,
    model_config,
    restore_rng_state,
    save_checkpoint,
    shards_dir,
    staging_dir,
)
from twist.contract import UnitContract
from twist.errors import ConfigError, MissingInputError, RunExistsError
from twist.train.parallelize import (
    Strategy,
    materialize_with_buffers,
    meta_skeleton,
    speech_lm_for_run,
    unwrap,
)

if TYPE_CHECKING:
    from twist.train.config import TrainRunConfig
    from twist.train.data import TrainStream
    from twist.train.schedule import LRSchedule


@dataclass
class Resume:
    """The checkpoint a run continues from."""

    path: Path
    state: dict[str, Any] | None
    """Its contents, on the ranks that read them (``None`` on the others); emptied once restored."""
    shards: Path | None
    """Its per-rank shards (``checkpoint_format=sharded``), which every rank reads."""
    from_rank0: bool
    """Only rank 0 read it (FSDP2 from a full checkpoint): weights, optimiser and the small
    rest reach the other ranks by broadcast."""


class Checkpointer:
    """Checkpoints of one run under ``<out_dir>/checkpoints``, in one format, for one strategy.

    Args:
        cfg: the run's config (``out_dir``, ``resume``, ``train.checkpoint_format``, and what a
            resume checks and the export rebuilds).
        contract: the model's unit contract (the training data's units, in the model's layout).
        strategy: the run's strategy (twist.train.parallelize).
        tokenizer: what a text+units model's export ships (twist.lm.save_speech_lm); None for
            a units-first model.

    Once they are built, the trainer hands over what a checkpoint holds besides its own state
    (:meth:`attach`); :meth:`restore` and :meth:`save` then read and write all of it.
    """

    def __init__(self, cfg: TrainRunConfig, contract: UnitContract, strategy: Strategy, *,
                 tokenizer: Any = None) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.out_dir = Path(cfg.out_dir)
        self.dir = self.out_dir / "checkpoints"
        self.fmt = cfg.train.checkpoint_format
        self.contract = contract
        self.strategy = strategy
        self.info = strategy.info
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: LRSchedule | None = None
        self.stream: TrainStream | None = None

    def attach(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
               stream: TrainStream) -> None:
        """What every checkpoint of the run saves and a resume restores, beside the trainer's state."""
        self.model, self.optimizer, self.schedule, self.stream = model, optimizer, schedule, stream

    # ---------------------------------------------------------------------------------------
    # resume
    # ---------------------------------------------------------------------------------------
    def resume_point(self, *, rank0_reads: bool = False) -> Resume | None:
        """The checkpoint to continue from, read, its unit contract checked against the data's.

        ``resume``: ``auto`` (``last`` if there), ``true`` (must be), ``false`` (must not).
        ``rank0_reads``: the model is filled from rank 0 (FSDP2), so only rank 0 reads a full
        checkpoint; a sharded one is read by every rank.
        """
        last = self.dir / "last"
        exists = is_checkpoint(last)
        if self.cfg.resume == "true" and not exists:
            raise MissingInputError(f"resume=true but there is no checkpoint at {last}")
        if self.cfg.resume == "false" and exists:
            raise RunExistsError(f"{self.out_dir} already holds a training run ({last}); pass resume=auto to "
                                 "continue it or choose another out_dir")
        if not exists:
            return None
        shards = shards_dir(last)
        from_rank0 = rank0_reads and shards is None
        state = None
        if self.info.is_main or not from_rank0:
            state = load_checkpoint(last)
            UnitContract.from_dict(state["contract"]).check_compatible(
                self.contract, mine=f"checkpoint {last}", theirs=f"dataset {self.cfg.data.path}")
        return Resume(last, state, shards, from_rank0)

    def resume_message(self, step: int, tokens: int) -> str:
        """The line a resumed run prints when it starts: where it continues from."""
        return f"[twist-train] resuming from step {step} (checkpoint {self.dir / 'last'}, {tokens} tokens seen)"

    def data_signature(self) -> dict[str, Any]:
        """What must not change between a run and its resume (the data order depends on it)."""
        s = self.stream
        return {"n_train_utterances": len(s.ds), "max_tokens": s.max_tokens, "global_batch": s.global_batch,
                "seed": s.seed, "packing": s.packing}

    def restore(self, resume: Resume) -> dict[str, Any]:
        """Continue from ``resume``: model, optimiser, schedule, data position and this rank's
        RNG; return the trainer's state as saved. Collective.

        Refuses, in one line, a model other than the checkpoint's, a changed data setup, and a
        ``train.max_steps`` below the checkpoint's step (before the logs are cut back to it).
        """
        small = self._load_model_and_optimizer(resume)
        resume.state = None  # the weights are in the model now
        was, now = small.get("data_signature", {}), self.data_signature()
        diff = [f"{k}: checkpoint {was[k]!r}, now {now[k]!r}" for k in now if k in was and was[k] != now[k]]
        if diff:
            raise ConfigError(f"cannot resume: the data setup differs from the checkpoint's ({', '.join(diff)}); "
                              "use the same settings or a new out_dir")
        self.schedule.load_state_dict(small["schedule"])
        self.stream.load_state_dict(small["data"])
        state = dict(small["state"])
        if "best_ppl" in state:  # checkpoints written before the best value was named by its objective
            state["best_value"] = state.pop("best_ppl")
        max_steps = self.cfg.train.max_steps
        if max_steps is not None and state["step"] > max_steps:
            raise ConfigError(f"train.max_steps={max_steps} is below step {state['step']}, where the checkpoint "
                              f"{resume.path} is: a resume cannot go back; raise train.max_steps "
                              "to at least that, or train into a new out_dir")
        rngs = small["rng"]
        restore_rng_state(rngs[self.info.rank] if len(rngs) == self.info.world_size else rngs[0])
        return state

    def _load_model_and_optimizer(self, resume: Resume) -> dict[str, Any]:
        """Load model and optimiser from ``resume``; return the checkpoint's contents (without
        them, where only rank 0 read it) on every rank, after checking that its model is the
        configured one."""
        model, optimizer, ckpt = self.model, self.optimizer, resume.state

        def check(state: dict[str, Any]) -> None:
            check_same_model(state, unwrap(model), resume.path)

        if resume.from_rank0:  # the weights were broadcast when the model was built
            small = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "buffers")} if ckpt else None
            small = D.broadcast_object(small)
            check(small)
            self.strategy.load_optimizer_from_rank0(model, optimizer, ckpt["optimizer"] if ckpt else None)
            return small
        check(ckpt)
        if resume.shards is not None:  # every rank reads its own part
            state = self.strategy.sharded_state(model, optimizer)  # templates: this run's layout
            read_sharded(state, resume.shards)
            self.strategy.load_sharded_state(model, optimizer, state)
        else:
            self.strategy.load_full_state(model, optimizer, ckpt["model"], ckpt["optimizer"])
        return ckpt

    # ---------------------------------------------------------------------------------------
    # save
    # ---------------------------------------------------------------------------------------
    def save(self, names: tuple[str, ...], state: dict[str, Any]) -> None:
        """Write checkpoints ``names`` (e.g. ``("best", "last")``) atomically, with the trainer's
        ``state`` (a plain dict); collective."""
        small = self._small_state(state)
        meta = {"step": state["step"], "tokens": state["tokens"], "best_value": state["best_value"],
                "best_step": state["best_step"], "format": self.fmt}
        model, optimizer = self.model, self.optimizer
        if self.fmt == "full":
            model_sd, optim_sd = self.strategy.full_state(model, optimizer)
            if self.info.is_main:
                whole = {"model": model_sd, "buffers": extra_buffers(model, model_sd), "optimizer": optim_sd,
                         **small}
                for name in names:
                    save_checkpoint(self.dir / name, whole, meta=meta)
            D.barrier()
            return
        first = self.dir / names[0]
        tmp = D.broadcast_object(str(staging_dir(first)) if self.info.is_main else None)
        try:
            write_sharded(self.strategy.sharded_state(model, optimizer), Path(tmp) / SHARDS)
            if self.info.is_main:
                commit_checkpoint(tmp, first, {**small, "buffers": extra_buffers(model)}, meta=meta)
                for name in names[1:]:
                    copy_checkpoint(first, self.dir / name)
        except BaseException:
            if self.info.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        D.barrier()

    def _small_state(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Everything but model and optimiser, on rank 0 (``None`` elsewhere); collective."""
        rngs = D.gather_objects(capture_rng_state())
        if not self.info.is_main:
            return None
        return {"schedule": self.schedule.state_dict(), "data": self.stream.state_dict(),
                "data_signature": self.data_signature(), "state": state, "rng": rngs,
                "world_size": self.info.world_size, "contract": self.contract.to_dict(),
                "model_config": model_config(unwrap(self.model))}

    # ---------------------------------------------------------------------------------------
    # export
    # ---------------------------------------------------------------------------------------
    def export(self, step_of: dict[str, int]) -> Path | None:
        """Write the best checkpoint (the last one without validation) as ``<out_dir>/speech_lm``.

        ``step_of``: the step each checkpoint name holds (written to ``SOURCE``). Collective.
        """
        out = None
        if self.info.is_main:
            from twist.lm import save_speech_lm

            src = self.dir / ("best" if is_checkpoint(self.dir / "best") else "last")
            state = load_checkpoint(src)
            shards = shards_dir(src)
            plain = self.strategy.whole_model(self.model) if shards is None else None
            if plain is not None:  # this process holds the whole model: load the checkpoint into it
                plain.load_state_dict(state["model"])
            else:
                plain = host_copy(self.cfg, self.contract, state, shards).cpu()
            del state
            out = self.out_dir / "speech_lm"
            save_speech_lm(plain, out, self.contract, tokenizer=self.tokenizer)
            atomic_write_text(out / "SOURCE", f"{src.name} checkpoint, step {step_of[src.name]}\n")
        D.barrier()
        return out


def extra_buffers(model: torch.nn.Module, model_state: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Buffers on CPU: those ``model_state`` leaves out (non-persistent: rotary ``inv_freq``,
    causal masks), or all of them. A checkpoint keeps them so an FSDP2 resume needs no model
    built on the host."""
    skip = model_state or {}
    return {n: b.detach().cpu() for n, b in unwrap(model).named_buffers() if n not in skip}


def host_copy(cfg: TrainRunConfig, contract: UnitContract, checkpoint: dict[str, Any],
              shards: Path | None) -> torch.nn.Module:
    """A host copy of the model holding a checkpoint's weights, without random-initialising a
    full model first: laid out on the meta device and given the checkpoint's tensors (the
    export of an FSDP2 run). Checkpoints from before buffers were saved are built on the host."""
    from twist.lm.surgery import set_module_tensor

    model = meta_skeleton(cfg, contract)
    if shards is not None:
        materialize_with_buffers(model, checkpoint["buffers"], torch.device("cpu"))
        read_sharded({"model": model.state_dict()}, shards, alone=True)  # the model's own tensors, in place
        return model
    model.load_state_dict(checkpoint["model"], assign=True)
    for name, b in checkpoint.get("buffers", {}).items():
        set_module_tensor(model, name, b, buffer=True)
    model.tie_weights()
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = speech_lm_for_run(cfg, contract, resuming=True, verbose=False)
        model.load_state_dict(checkpoint["model"])
    return model


# ---------------------------------------------------------------------------------------
# sharded format (torch.distributed.checkpoint)
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _single_process_quiet():
    """torch.distributed.checkpoint warns on every call without a process group; one process
    is a supported case here, so that warning is noise."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def write_sharded(state: dict[str, Any], directory: str | os.PathLike) -> None:
    """Every rank writes its part of ``state`` (a strategy's ``sharded_state``): under FSDP2 only
    its shards, so no rank gathers the whole model; under DDP or one process the full tensors,
    once. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with _single_process_quiet():
            dcp.save(state, checkpoint_id=str(directory), no_dist=not dist.is_initialized())
    except CheckpointException as e:  # name the directory and the first rank's real error
        rank, (cause, *_rest) = next(iter(e.failures.items()))
        full = disk_full_cause(cause)
        if full is not None:
            raise disk_full_error(f"the sharded checkpoint {directory} (rank {rank})", full,
                                  "the previous checkpoint is unchanged") from cause
        message = f"writing the sharded checkpoint {directory} failed on rank {rank}: {type(cause).__name__}: {cause}"
        if isinstance(cause, OSError):
            raise OSError(cause.errno, message) from cause
        raise RuntimeError(message) from cause


def read_sharded(state: dict[str, Any], directory: str | os.PathLike, *, alone: bool = False) -> None:
    """Fill ``state`` (a template in this run's layout) in place from :func:`write_sharded` output,
    whatever strategy and world size wrote it: torch.distributed.checkpoint reshards on load.
    Collective, unless ``alone`` (the export, on rank 0)."""
    import torch.distributed.checkpoint as dcp

    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(directory), no_dist=alone or not dist.is_initialized())
