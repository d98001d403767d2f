"""Data-parallel training under torchrun: process group, DDP wrapping, per-rank seeds, rank-0 writes.

We add no launcher: ``torchrun --nproc_per_node N -m img2img train METHOD ...`` starts N copies of
the ordinary command. torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous
address); :func:`session` reads them, joins the process group (NCCL for CUDA, gloo for the CPU),
gives each process the device ``cuda:LOCAL_RANK`` and leaves the group at the end. Without those
variables every function here is a no-op, so a plain run is untouched.

How the loop uses this module (img2img/training/loop.py):

- every trained net is wrapped in DistributedDataParallel (:func:`wrap_nets`), but the method sees
  the wrappers only inside ``train_step`` (:func:`nets_for_step`); checkpoints, EMA, samples,
  validation and exports keep using the plain modules, so saved keys never gain a ``module.``
  prefix and stay identical to the reference layouts;
- gradients are averaged by DDP during each backward; losses are averaged across ranks
  (:func:`mean_across_ranks`) so the log and the NaN guard agree on every rank;
- each rank draws its own training randomness (:func:`seed_rank`: device augmentation, dropout,
  image pools) and its own shard of the data; rank 0 writes the log, samples, checkpoints and the
  exported models; the checkpoint keeps every rank's RNG, data position and method state
  (:func:`gather`) so ``--resume`` with the same number of processes continues exactly.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from img2img import torchrun
from img2img.training.config import ConfigError
from img2img.training.state import CheckpointError

__all__ = [
    "DistInfo",
    "QuietMonitor",
    "average_buffers",
    "barrier",
    "current",
    "env_info",
    "gather",
    "is_main",
    "mean_across_ranks",
    "nets_for_step",
    "rank_device",
    "rank_state",
    "seed_rank",
    "session",
    "train_sampler",
    "wrap_nets",
]


# This process's place in the job: global rank, number of processes, rank on its machine.
DistInfo = torchrun.RankInfo


def env_info() -> DistInfo | None:
    """What torchrun put in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or None."""
    try:
        return torchrun.from_environment()
    except torchrun.TorchrunEnvironmentError as e:
        raise ConfigError(str(e)) from None


def current() -> DistInfo | None:
    """The process group this process trains in, or None (no group, or a group of one)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=torchrun.local_rank())


def is_main() -> bool:
    """True on rank 0 and in any non-distributed run: the process that writes files."""
    info = current()
    return info is None or info.is_main


def rank_device(spec: str, local_rank: int) -> torch.device:
    """The device of the process with ``local_rank`` for a ``--device`` value under torchrun.

    ``auto``/``cuda`` -> ``cuda:LOCAL_RANK`` when CUDA is available (``auto`` otherwise the CPU);
    ``cpu`` -> the CPU. An explicit ``cuda:N`` or ``mps`` is refused: torchrun gives each process
    its own GPU, and DDP does not run on MPS.
    """
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        raise ConfigError("distributed training does not run on MPS; use --device cpu (gloo) or CUDA GPUs")
    if spec.startswith("cuda:"):
        raise ConfigError(f"--device {spec}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda")
    if not torch.cuda.is_available():
        if spec == "cuda":
            raise ConfigError("device 'cuda' requested but CUDA is not available here")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} has no GPU: {count} visible on this machine; lower --nproc_per_node"
        )
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def session(device_spec: str) -> Iterator[torch.device | None]:
    """Join torchrun's process group for the body; yields this rank's device.

    Yields None and does nothing when the process was not started by torchrun. A group that already
    exists (initialised by the caller) is used and left open.
    """
    info = env_info()
    if info is None:
        yield None
        return
    device = rank_device(device_spec, info.local_rank)
    owned = not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL and all_gather_object use the current device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=info.rank, world_size=info.world_size)
    try:
        yield device
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def seed_rank(seed: int) -> None:
    """Give ranks > 0 their own training RNG streams, derived from ``(seed, rank)``.

    Called after the nets are built (identical initial weights on every rank); rank 0 keeps the
    stream of a one-process run. Device augmentation, dropout and image pools then differ across
    ranks, and the whole job still repeats for a given seed and world size.
    """
    info = current()
    if info is None or info.rank == 0:
        return
    import random

    derived = int(np.random.SeedSequence([seed, info.rank]).generate_state(1, dtype=np.uint64)[0] % 2**63)
    random.seed(derived)
    np.random.seed(derived % 2**32)
    torch.manual_seed(derived)  # also every CUDA device


def train_sampler(length: int, *, seed: int) -> Any:
    """A :class:`img2img.data.ResumableSampler` giving this rank its shard, or None when not distributed.

    Every rank shuffles with the same ``(seed, epoch)`` permutation and takes every
    ``world_size``-th index from position ``rank`` (padded by wrapping, as DistributedSampler), so
    all ranks see the same number of batches and together one pass over the data per epoch.
    """
    info = current()
    if info is None:
        return None
    from img2img.data import ResumableSampler

    return ResumableSampler(length, seed=seed, shuffle=True, num_replicas=info.world_size, rank=info.rank)


def wrap_nets(nets: dict[str, nn.Module], device: torch.device, *, sync_bn: bool = False) -> dict[str, nn.Module]:
    """DistributedDataParallel wrappers of the trained ``nets`` (empty when not distributed).

    ``sync_bn`` converts BatchNorm layers to SyncBatchNorm in place (CUDA only), keeping the same
    parameters, buffers and state-dict keys. Buffers are not broadcast at every forward: GAN
    steps run a net several times before one backward, and the in-place broadcast would modify
    running statistics autograd saved; :func:`average_buffers` makes them agree at each checkpoint.
    Nets with no trainable parameter are not wrapped.
    """
    if current() is None:
        return {}
    if sync_bn and device.type != "cuda":
        raise ConfigError("sync_bn needs CUDA devices (SyncBatchNorm has no CPU implementation)")
    wrapped: dict[str, nn.Module] = {}
    for name, net in nets.items():
        if not any(p.requires_grad for p in net.parameters()):
            continue
        if sync_bn:
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # same Parameter objects
            nets[name] = net = converted
        wrapped[name] = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, **_NO_BUFFER_SYNC
        )
    return wrapped


# No buffer broadcast at each forward; newer torch renamed the option (the old name warns there).
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


@contextlib.contextmanager
def nets_for_step(method: Any, wrapped: Mapping[str, nn.Module]) -> Iterator[None]:
    """Let ``method.train_step`` see the DDP wrappers in ``method.nets``; the plain nets come back after."""
    if not wrapped:
        yield
        return
    plain = method.nets
    method.nets = {**plain, **wrapped}
    try:
        yield
    finally:
        method.nets = plain


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over all ranks (the tensor itself when not distributed)."""
    info = current()
    if info is None:
        return values
    total = values.clone()
    dist.all_reduce(total)  # SUM: gloo has no AVG
    return total / info.world_size


@torch.no_grad()
def average_buffers(nets: Mapping[str, nn.Module]) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks, in place."""
    info = current()
    if info is None:
        return
    for net in nets.values():
        for buf in net.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf.div_(info.world_size)


def gather(state: Any) -> list[Any] | None:
    """Every rank's ``state`` (picklable), in rank order, on rank 0 (None elsewhere and when not distributed).

    A collective: every rank calls it at the same point.
    """
    info = current()
    if info is None:
        return None
    out: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(state, out, dst=0)
    return out


def rank_state(payload: Mapping[str, Any], path: Any) -> dict[str, Any]:
    """The checkpoint ``payload`` with this rank's own ``rng``, ``data`` position and ``method_state``.

    A checkpoint of an N-process run keeps one ``{"rng", "data", "method_state"}`` entry per rank
    under ``ranks`` (the top-level ones are rank 0's); it resumes only with N processes (the data
    shards, RNG streams and e.g. CycleGAN's image pools are per rank).
    """
    info = current()
    world = 1 if info is None else info.world_size
    ranks = payload.get("ranks")
    saved = 1 if ranks is None else len(ranks)
    if saved != world:
        raise CheckpointError(
            f"{path}: written by a run of {saved} process(es); resume it with {saved}, not {world} "
            "(torchrun --nproc_per_node x --nnodes)"
        )
    if ranks is None or info is None:
        return dict(payload)
    own = ranks[info.rank]
    return {**payload, "rng": own["rng"], "data": own["data"], "method_state": own["method_state"]}


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if current() is not None:
        dist.barrier()


class QuietMonitor:
    """The RunMonitor interface without any output, for ranks other than 0 (rank 0 writes the log)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0

    def step(self, step: int, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1

    def flush_train(self, step: int, epoch: int, lrs: dict[str, float]) -> dict[str, Any]:
        if self._count == 0:
            return {}
        means = {k: v / self._count for k, v in self._sums.items()}
        self._sums, self._count = {}, 0
        return {"kind": "train", "step": step, "epoch": epoch, **means}

    def validation(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass
