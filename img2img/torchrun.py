"""Where this process sits in a torchrun launch, read from the environment torchrun sets.

A leaf module (standard library only) shared by training (DDP) and inference (file sharding),
which may not import each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class TorchrunEnvironmentError(ValueError):
    """torchrun's variables are present but unusable; the message says which and why."""


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the job: global rank, number of processes, rank on its machine."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> RankInfo | None:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (default 0) as set by torchrun, or None without them."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise TorchrunEnvironmentError(
            f"RANK={os.environ['RANK']!r} / WORLD_SIZE={os.environ['WORLD_SIZE']!r} / "
            f"LOCAL_RANK={os.environ.get('LOCAL_RANK', '0')!r} are not integers (launch with torchrun)"
        ) from None
    if not 0 <= rank < world:
        raise TorchrunEnvironmentError(f"RANK {rank} is outside [0, WORLD_SIZE={world})")
    return RankInfo(rank=rank, world_size=world, local_rank=local)


def local_rank() -> int:
    """``LOCAL_RANK`` (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))
