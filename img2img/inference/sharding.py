"""Folder inference under torchrun: each process takes a shard of the files, rank 0 reports for all.

``torchrun --nproc_per_node N -m img2img upscale SRC DST ...`` starts N copies of the command.
Every copy plans the same job list (SRC must look the same to every process), sorts it by input
path and keeps every ``WORLD_SIZE``-th job from position ``RANK`` (:func:`take`), runs its model on
``cuda:LOCAL_RANK`` (:func:`device_for`) and writes its own outputs. :func:`merge` then gathers the
reports over a gloo group (only file names and counts travel), so every process knows the totals:
rank 0 prints the summary and every process exits 1 when any file failed anywhere.

Without torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) nothing here changes
anything. Reading them is shared with training's DDP (``img2img.torchrun``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from img2img.inference.errors import InferenceError
from img2img.inference.pipeline import Job, RunReport
from img2img.inference.runners import select_device
from img2img.torchrun import RankInfo, TorchrunEnvironmentError, from_environment

__all__ = ["Shard", "device_for", "merge", "session", "take"]


# This process's share of a run: global rank, number of processes, rank on its machine.
Shard = RankInfo


def _env_shard() -> Shard | None:
    try:
        return from_environment()
    except TorchrunEnvironmentError as e:
        raise InferenceError(str(e)) from None


@contextlib.contextmanager
def session() -> Iterator[Shard | None]:
    """Join torchrun's processes (a gloo group) for the body; yields this process's Shard.

    Yields None when not started by torchrun or when there is only one process. gloo carries only
    the small report objects, so it serves CPU and GPU runs alike.
    """
    shard = _env_shard()
    if shard is None or shard.world_size < 2:
        yield None
        return
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world_size)
    try:
        yield shard
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def take(jobs: list[Job], shard: Shard | None) -> list[Job]:
    """This process's jobs: every ``world_size``-th of ``jobs`` sorted by input path, from ``rank``."""
    if shard is None:
        return jobs
    return sorted(jobs, key=lambda job: str(job.src))[shard.rank :: shard.world_size]


def device_for(spec: str, shard: Shard | None) -> torch.device:
    """``auto``/``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun when CUDA is there; else as usual."""
    if shard is not None and spec in ("auto", "cuda") and torch.cuda.is_available():
        if shard.local_rank >= torch.cuda.device_count():
            raise InferenceError(
                f"LOCAL_RANK {shard.local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                "lower --nproc_per_node"
            )
        return torch.device("cuda", shard.local_rank)
    return select_device(spec)


def merge(report: RunReport, shard: Shard | None) -> RunReport:
    """Every process's report combined (a collective: all processes call it); ``report`` itself alone.

    Lists are concatenated in rank order, megapixels summed, seconds the slowest process's.
    """
    if shard is None:
        return report
    mine = (
        [str(p) for p in report.written],
        [str(p) for p in report.skipped],
        [(str(p), reason) for p, reason in report.failed],
        report.seconds,
        report.megapixels,
    )
    parts: list[tuple | None] = [None] * shard.world_size
    dist.all_gather_object(parts, mine)
    merged = RunReport()
    for part in parts:
        assert part is not None
        written, skipped, failed, seconds, megapixels = part
        merged.written += [Path(p) for p in written]
        merged.skipped += [Path(p) for p in skipped]
        merged.failed += [(Path(p), reason) for p, reason in failed]
        merged.seconds = max(merged.seconds, seconds)
        merged.megapixels += megapixels
    return merged
