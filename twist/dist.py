"""Rank and world size, from torchrun or a job array, without requiring a process group.

``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK. SLURM job arrays and other schedulers can
set RANK/WORLD_SIZE (or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT) by hand. Stages that
shard work (tokenization) only need these numbers; stages that communicate (training)
also initialise a process group.
"""

from __future__ import annotations

import os

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
