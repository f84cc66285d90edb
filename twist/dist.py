"""Processes: rank and world size, the process group, and the few collectives twist uses.

Every stage runs alone or as one of several processes; there is no home-made launcher.
``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK and the rendezvous. SLURM job arrays and other
schedulers can set RANK/WORLD_SIZE (or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT) by hand.

* Stages that only shard work (tokenization) need the numbers: :func:`rank_and_world`.
* Stages that communicate (training) also join a process group (:func:`init_distributed`:
  NCCL on GPUs, gloo on CPU) and leave it (:func:`shutdown_distributed`). The collectives
  below are the identity when there is no group, so the same code runs alone.

How a model is laid out over the processes (one process, DDP, FSDP2) is
twist.train.parallelize's job.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from twist.errors import ConfigError


def rank_and_world() -> tuple[int, int]:
    """Return ``(rank, world_size)`` from the environment; ``(0, 1)`` when alone."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    elif "SLURM_ARRAY_TASK_ID" in os.environ and "SLURM_ARRAY_TASK_COUNT" in os.environ:
        rank = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
        world = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
    else:
        rank, world = 0, 1
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"bad rank/world size from the environment: rank={rank} world_size={world}")
    return rank, world


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


# ---------------------------------------------------------------------------------------
# the process group (training)
# ---------------------------------------------------------------------------------------
@dataclass
class DistInfo:
    """This process in the run: its rank, the number of processes, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device."""
    rank, world = rank_and_world() if "WORLD_SIZE" in os.environ else (0, 1)
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible")
    if want_cuda:
        torch.cuda.set_device(local_rank())
        dev = torch.device("cuda", local_rank())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if want_cuda else "gloo",
            timeout=datetime.timedelta(minutes=30),
            **({"device_id": dev} if want_cuda else {}),
        )
    return DistInfo(rank, world, local_rank() if world > 1 else 0, dev)


def shutdown_distributed() -> None:
    """Leave the process group cleanly.

    Models wrapped by DDP/FSDP sit in reference cycles and keep gloo work objects; if they
    are only freed at interpreter shutdown, after the group is gone, gloo can abort the
    process ("terminate called without an active exception") although training finished.
    So: collect them now, wait for every rank, then destroy the group. Callers drop their own
    references (the trainer) first.
    """
    if dist.is_initialized():
        import gc

        gc.collect()
        # a rank that failed may already have left: its peers' barrier then errors (gloo raises
        # RuntimeError, NCCL DistBackendError, a RuntimeError too), and leaving is all that is left to do
        with contextlib.suppress(RuntimeError):
            dist.barrier()
        dist.destroy_process_group()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself when alone)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over ranks (identity when alone). float64 keeps token counts exact."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensor(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place, on its device (nothing when alone); returns ``t``."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank (``[obj]`` when alone)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
