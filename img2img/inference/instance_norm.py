"""Whole-image statistics for InstanceNorm layers, so a tiled run matches a whole-image run.

An InstanceNorm layer normalises each image with the mean and variance of its own activations.
Run tile by tile, every tile would get its own statistics and its own colour cast. Instead the
engine streams the image through the net once per InstanceNorm layer, in execution order:

- pass k runs every tile up to the k-th layer, with the k - 1 layers before it normalising with
  their (already exact) whole-image statistics frozen; the k-th layer's input moments are
  gathered over each tile's *core* (its share of a partition of the image, away from tile
  edges) and merged (Chan's parallel update, float64) into whole-image mean and variance; then
  the tile stops (nothing after the k-th layer is computed);
- the output pass runs the tiles with every layer's statistics frozen.

Why layer by layer: layer k's statistics depend on the statistics of every layer before it.
Cheaper schemes (statistics of a downscaled copy, of a sample of tiles, or a fixed-point
iteration that refreshes all layers per pass) leave per-layer errors of a few percent, and a
CycleGAN generator turns 1 % errors in its 23 layers into ~33 dB — far from the 40 dB target
(docs/inference.md has the measurements). Cost: the prefixes of the net, one per layer, about
half a forward pass per layer on average (~11 forward passes for resnet_9blocks).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

Stats = dict[int, tuple[torch.Tensor, torch.Tensor]]  # layer index -> (mean, var), (C,) float32


def per_image_norms(net: nn.Module) -> list[nn.Module]:
    """The InstanceNorm layers of ``net`` that use per-image statistics at inference time.

    A layer that tracks running statistics and is in eval mode uses its stored statistics: it is a
    per-pixel affine map and needs nothing from the whole image.
    """
    return [
        m
        for m in net.modules()
        if isinstance(m, _INSTANCE_NORMS) and not (m.track_running_stats and not m.training)
    ]


class PrefixDone(Exception):
    """Raised inside a forward pass once the layer being measured has seen its input."""


@dataclass
class Moments:
    """Per-channel count, mean and sum of squared deviations (float64), mergeable across regions."""

    count: float
    mean: torch.Tensor
    m2: torch.Tensor

    def merge(self, other: Moments) -> Moments:
        # Chan et al.'s pairwise update: stable for any split of the pixels.
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta.square() * (self.count * other.count / n)
        return Moments(n, mean, m2)

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, biased variance) as float32, InstanceNorm's convention."""
        return self.mean.float(), (self.m2 / self.count).float()


def region_moments(x: torch.Tensor) -> Moments:
    """Moments over the spatial pixels of one (C, h, w) region."""
    x = x.flatten(1).double()
    mean = x.mean(dim=1)
    return Moments(float(x.shape[1]), mean, (x - mean[:, None]).square().sum(dim=1))


class WholeImageNorm:
    """Controls the per-image InstanceNorm layers of one net (see the module docstring)."""

    def __init__(self, net: nn.Module) -> None:
        self.layers = per_image_norms(net)
        self._stats: Stats = {}
        self._measuring = False
        self._measured: tuple[int, Moments | None] | None = None
        # Per sample of the batch this thread runs: core (y0, y1, x0, x1) as fractions of the tile
        # sides. Thread-local: the engine may run the tiles of one batch in several threads.
        self._local = threading.local()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def set_cores(self, cores: Sequence[tuple[float, float, float, float]]) -> None:
        """Regions, per sample of the next batch this thread runs, whose activations count toward the statistics."""
        self._local.cores = tuple(cores)

    @contextmanager
    def frozen(self, stats: Stats) -> Iterator[None]:
        """Every layer normalises with ``stats`` (which must cover all layers)."""
        if len(stats) != len(self.layers):
            raise ValueError(f"statistics for {len(stats)} of {len(self.layers)} InstanceNorm layers")
        with self._patched(stats, measuring=False):
            yield

    @contextmanager
    def measuring(self, stats: Stats) -> Iterator[WholeImageNorm]:
        """Layers in ``stats`` normalise with them; the first other layer a forward pass reaches
        accumulates its input moments over the cores and raises ``PrefixDone``. After the block,
        ``measured()`` gives that layer's index and whole-image statistics."""
        self._measured = None
        with self._patched(stats, measuring=True):
            yield self

    def measured(self) -> tuple[int, tuple[torch.Tensor, torch.Tensor]]:
        if self._measured is None or self._measured[1] is None:
            raise RuntimeError("no InstanceNorm layer was reached while measuring")
        index, moments = self._measured
        return index, moments.mean_var()

    @contextmanager
    def _patched(self, stats: Stats, *, measuring: bool) -> Iterator[None]:
        self._stats, self._measuring = stats, measuring
        for i, layer in enumerate(self.layers):
            layer.forward = self._forward_for(i, layer)  # instance attribute shadows the class method
        try:
            yield
        finally:
            for layer in self.layers:
                del layer.forward
            self._stats, self._measuring = {}, False

    def _forward_for(self, index: int, layer: nn.Module):
        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 4:
                raise ValueError(f"whole-image InstanceNorm expects (B, C, H, W), got {tuple(x.shape)}")
            if index not in self._stats:
                if not self._measuring:
                    raise RuntimeError(f"InstanceNorm layer {index} has no frozen statistics")
                self._accumulate(index, x)
                raise PrefixDone
            mean, var = (s.to(x.device)[None, :, None, None] for s in self._stats[index])
            y = (x.float() - mean) * torch.rsqrt(var + layer.eps)
            if layer.affine:
                y = y * layer.weight[None, :, None, None] + layer.bias[None, :, None, None]
            return y.to(x.dtype)

        return forward

    def _accumulate(self, index: int, x: torch.Tensor) -> None:
        """Merge the moments of (B, C, h, w) ``x`` over this thread's cores (scaled to h, w)."""
        h, w = x.shape[2:]
        cores = getattr(self._local, "cores", ())
        if len(cores) < x.shape[0]:
            raise RuntimeError(f"InstanceNorm statistics: {len(cores)} cores set for a batch of {x.shape[0]}")
        parts = [
            region_moments(sample[:, round(fy0 * h) : round(fy1 * h), round(fx0 * w) : round(fx1 * w)])
            for sample, (fy0, fy1, fx0, fx1) in zip(x, cores, strict=False)
            if round(fy1 * h) > round(fy0 * h) and round(fx1 * w) > round(fx0 * w)
        ]
        with self._lock:
            if self._measured is not None and self._measured[0] != index:
                raise RuntimeError(
                    "tiles reached different InstanceNorm layers first: data-dependent control flow"
                )
            total = None if self._measured is None else self._measured[1]
            for part in parts:
                total = part if total is None else total.merge(part)
            self._measured = (index, total)
