"""Seeded, resumable data loading: :class:`ResumableSampler`, :class:`SampleKey`, :func:`make_loader`.

The sampler yields :class:`SampleKey` ``(index, epoch, seed)`` instead of bare indices. Datasets
derive every random choice of a sample (crop position, partner image, degradation) from that key,
so a sample is the same whatever the number of workers or which worker loads it, and a resumed
run sees exactly the samples an uninterrupted one would have.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from img2img.data.errors import DataError


class SampleKey(NamedTuple):
    """What a dataset needs to build one sample reproducibly."""

    index: int
    epoch: int
    seed: int


class ResumableSampler(Sampler[SampleKey]):
    """Epoch-seeded order over ``length`` samples, optionally sharded across DDP replicas.

    The order of epoch ``e`` depends only on ``(seed, e)``. With ``num_replicas`` > 1 it shards like
    ``torch.utils.data.DistributedSampler``: the shuffled order is padded by wrapping (or cut, with
    ``drop_last``) to a multiple of ``num_replicas`` and replica ``rank`` takes every
    ``num_replicas``-th index from position ``rank``.

    Epochs: :meth:`set_epoch` chooses one (the training loop calls it); a plain ``for epoch...:
    for batch in loader`` also works: an iteration that ran to its end moves to the next epoch at
    the next ``iter()``, unless ``set_epoch`` was called in between.

    Resume: :meth:`skip` (or ``load_state_dict({... "start": n})``) makes the next iteration begin
    after the first ``n`` samples of this replica's order for the epoch, so a loop that consumed
    ``k`` batches of size ``b`` resumes with ``skip(k * b)`` and nothing is loaded twice.
    """

    def __init__(
        self,
        length: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if length < 1:
            raise DataError("the dataset is empty")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self._start = 0
        self._finished = False  # the last iteration ran to its end
        self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_set = True

    def skip(self, n: int) -> None:
        """Start the next iteration after the first ``n`` samples of this replica's epoch order."""
        if n < 0:
            raise ValueError(f"cannot skip {n} samples")
        self._start = int(n)

    def order(self, epoch: int | None = None) -> list[int]:
        """This replica's indices for ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            state = np.random.SeedSequence([self.seed, epoch]).generate_state(2, dtype=np.uint64)
            g = torch.Generator().manual_seed(int(state[0] % 2**63))
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        r = self.num_replicas
        if r > 1:
            if self.drop_last:
                order = order[: (self.length // r) * r]
            else:
                total = -(-self.length // r) * r
                order = (order * (total // self.length + 1))[:total]
            order = order[self.rank :: r]
        return order

    def __len__(self) -> int:
        r = self.num_replicas
        if r == 1:
            return self.length
        return self.length // r if self.drop_last else -(-self.length // r)

    def __iter__(self) -> Iterator[SampleKey]:
        if self._finished and not self._epoch_set:
            self.epoch += 1
        self._finished = False
        self._epoch_set = False
        start, self._start = self._start, 0
        epoch = self.epoch
        for index in self.order(epoch)[start:]:
            yield SampleKey(index, epoch, self.seed)
        self._finished = True

    def state_dict(self) -> dict[str, Any]:
        """Epoch and pending skip, plus what must match on reload (length, seed, sharding)."""
        return {
            "epoch": self.epoch,
            "start": self._start,
            "seed": self.seed,
            "length": self.length,
            "shuffle": self.shuffle,
            "num_replicas": self.num_replicas,
            "rank": self.rank,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("seed", "length", "shuffle", "num_replicas"):
            if name in state and state[name] != getattr(self, name):
                raise DataError(
                    f"saved data position does not match this loader: {name} was {state[name]}, "
                    f"now {getattr(self, name)} (did the dataset change?)"
                )
        self.set_epoch(int(state["epoch"]))
        self.skip(int(state.get("start", 0)))


def _worker_init(worker_id: int) -> None:
    # Python/NumPy seeded from the worker's torch seed, for any third-party randomness (our datasets
    # use the sample key). Torch already runs one thread per worker. OpenCV's thread count is left
    # alone: changing it in a forked worker can deadlock on the pool inherited from the parent.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool | None = None,
    sampler: Sampler | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` with a seeded :class:`ResumableSampler` (unless ``sampler``).

    ``drop_last=None`` means ``drop_last=shuffle`` (training drops the ragged last batch, evaluation
    keeps it). Workers are not persistent (their seeds are drawn at ``iter()``, from the global torch
    RNG). ``pin_memory=None`` pins when CUDA is available. The sampler is
    ``loader.sampler``; pass ``ResumableSampler(len(ds), seed=..., num_replicas=W, rank=R)`` for DDP.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be positive, got {batch_size}")
    if sampler is None:
        sampler = ResumableSampler(len(dataset), seed=seed, shuffle=shuffle)  # type: ignore[arg-type]
    drop_last = shuffle if drop_last is None else drop_last
    if drop_last and len(sampler) < batch_size:  # type: ignore[arg-type]
        name = getattr(dataset, "root", type(dataset).__name__)
        raise DataError(
            f"{name}: {len(sampler)} samples per epoch is fewer than the batch size {batch_size}; "  # type: ignore[arg-type]
            "lower the batch size or add images"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )
