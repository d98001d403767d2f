"""The CPU tile pool: the tiles of one batch run at once, each in its own thread on one core.

On a CPU, two tiles side by side on one core each measured faster than one tile on all cores
(docs/benchmarks.md): no OpenMP barrier after each of the many small convolutions, and each core
keeps its own tile in cache. The engine uses a pool only with torch on a CPU.

The thread count is set once per worker thread, when the pool starts: torch keeps it per thread
(OpenMP and MKL settings), but ``torch.set_num_threads`` also changes the process default that
new threads start from, so the pool puts that default back right after its workers are up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")


def _one_core() -> None:
    # torch sets a thread's count lazily, from the process default, on the thread's first parallel
    # operation; asking for it now does that setting first, so the 1 below is not overwritten later.
    torch.get_num_threads()
    torch.set_num_threads(1)


class TilePool:
    """``workers`` threads of one core each; ``map`` runs the samples of a batch on them."""

    def __init__(self, workers: int) -> None:
        if workers < 2:
            raise ValueError(f"a tile pool needs at least 2 workers, got {workers}")
        self.workers = workers
        default = torch.get_num_threads()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="img2img-tile", initializer=_one_core)
        # Start every worker now (each waits for the others, so none is reused before all exist).
        barrier = threading.Barrier(workers)
        for future in [self._executor.submit(barrier.wait) for _ in range(workers)]:
            future.result()
        torch.set_num_threads(default)

    def map(self, fn: Callable[[torch.Tensor], T], batch: torch.Tensor) -> list[T]:
        """``[fn(batch[i:i+1]) for i in ...]``, run concurrently. Every sample finishes (or fails)
        before this returns, so no tile outlives its batch; the first error is raised."""
        futures = [self._executor.submit(fn, batch[i : i + 1]) for i in range(batch.shape[0])]
        wait(futures)
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)
