"""Whole-image statistics for InstanceNorm layers, so a tiled run matches a whole-image run.

An InstanceNorm layer normalises each image with the mean and variance of its own activations.
Run tile by tile, every tile would get its own statistics and its own colour cast. Instead
``measure_stats`` streams the image through the net once per InstanceNorm layer, in execution
order:

- pass k runs every tile up to the k-th layer, with the k - 1 layers before it normalising with
  their (already exact) whole-image statistics frozen; the k-th layer's input is handed back
  (``PrefixDone`` stops the forward pass right there, nothing after it is computed) and its
  moments over each tile's *core* (its share of a partition of the image, away from tile edges)
  are merged (Chan's parallel update, float64) into whole-image mean and variance;
- the output pass then runs the tiles inside ``frozen(layers, stats)``: every layer normalises
  with its whole-image statistics.

For each pass the layers are swapped in the net (``nn.Module.set_submodule``) for small stand-in
modules and put back after it: no method is patched, nothing is left behind, and the stand-ins
hold only what is fixed for the pass (no per-thread state), so tiles may run in several threads
at once. (Forward hooks could replace a layer's output too, but only after the layer has
computed its per-tile normalisation for nothing; docs/inference.md has the cost.)

Why layer by layer: layer k's statistics depend on the statistics of every layer before it.
Cheaper schemes (statistics of a downscaled copy, of a sample of tiles, or a fixed-point
iteration that refreshes all layers per pass) leave per-layer errors of a few percent, which a
CycleGAN generator amplifies far past the 40 dB target (docs/inference.md has the measurements).
Cost: the prefixes of the net, one per layer, about half a forward pass per layer on average.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch
from torch import nn

from img2img.inference.tiling import AxisPlan, Tile, batches, core_bounds, grid, read_batch

_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

Stats = dict[int, tuple[torch.Tensor, torch.Tensor]]  # layer index -> (mean, var), (C,) float32
Core = tuple[float, float, float, float]  # a tile's core (y0, y1, x0, x1) as fractions of its sides
T = TypeVar("T")


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
    """Raised inside a measuring pass by the first layer without statistics: carries that layer's
    index and its input, (B, C, h, w)."""

    def __init__(self, index: int, activation: torch.Tensor) -> None:
        super().__init__(index)
        self.index, self.activation = index, activation


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


def core_moments(activation: torch.Tensor, cores: Sequence[Core]) -> list[Moments]:
    """Moments of each sample of (B, C, h, w) ``activation`` over its core, scaled to h and w."""
    h, w = activation.shape[2:]
    parts = []
    for sample, (fy0, fy1, fx0, fx1) in zip(activation, cores, strict=True):
        y0, y1, x0, x1 = round(fy0 * h), round(fy1 * h), round(fx0 * w), round(fx1 * w)
        if y1 > y0 and x1 > x0:
            parts.append(region_moments(sample[:, y0:y1, x0:x1]))
    return parts


@contextmanager
def frozen(
    net: nn.Module, layers: Sequence[nn.Module], stats: Stats, *, measuring: bool = False
) -> Iterator[None]:
    """Inside the block, layer i of ``layers`` (modules of ``net``) normalises with ``stats[i]``.

    Without ``measuring`` every layer must have statistics. With it, the first layer a forward
    pass reaches that has none raises ``PrefixDone`` with its input instead of running.
    Each layer is replaced in ``net`` (``set_submodule``) by a stand-in for the block and put
    back after it; the stand-ins hold only what is fixed for the block.
    """
    if not measuring and len(stats) != len(layers):
        raise ValueError(f"statistics for {len(stats)} of {len(layers)} InstanceNorm layers")
    places: dict[int, list[str]] = {id(layer): [] for layer in layers}
    for name, module in net.named_modules(remove_duplicate=False):
        if id(module) in places and name:
            places[id(module)].append(name)
    try:
        for index, layer in enumerate(layers):
            stand_in = _Normalise(layer, stats[index]) if index in stats else _StopHere(index)
            for name in places[id(layer)]:
                net.set_submodule(name, stand_in)
        yield
    finally:
        for layer in layers:
            for name in places[id(layer)]:
                net.set_submodule(name, layer)


class _Normalise(nn.Module):
    """Stands in for an InstanceNorm layer: normalises with whole-image statistics."""

    def __init__(self, layer: nn.Module, moments: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.layer = layer  # for its eps and affine weight and bias
        self.moments = moments

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"whole-image InstanceNorm expects (B, C, H, W), got {tuple(x.shape)}")
        layer = self.layer
        mean, var = (s.to(x.device)[None, :, None, None] for s in self.moments)
        y = (x.float() - mean) * torch.rsqrt(var + layer.eps)
        if layer.affine:
            y = y * layer.weight[None, :, None, None] + layer.bias[None, :, None, None]
        return y.to(x.dtype)


class _StopHere(nn.Module):
    """Stands in for the InstanceNorm layer being measured: ends the forward pass with its input."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise PrefixDone(self.index, x)


def run_to_layer(run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Inside a measuring pass: run ``x`` up to the first layer without statistics; returns that
    layer's index and its input."""
    try:
        run(x)
    except PrefixDone as done:
        return done.index, done.activation
    raise RuntimeError("a forward pass ended before reaching an InstanceNorm layer")


def measure_stats(
    net: nn.Module,
    layers: Sequence[nn.Module],
    run: Callable[[torch.Tensor], Any],
    read: Callable[[int, int, int, int], torch.Tensor],
    *,
    rows: AxisPlan,
    cols: AxisPlan,
    multiple: int,
    batch: int,
    map_batch: Callable[[Callable[[torch.Tensor], T], torch.Tensor], list[T]] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Stats:
    """Whole-image statistics of every layer in ``layers`` (the per-image InstanceNorm layers of
    ``net``), one streaming pass over the tiles per layer.

    Args:
        run: ``net``'s forward pass, (B, C_in, h, w) CPU float32 -> anything (never finished).
        read: the input tiles, ``read(y0, y1, x0, x1)`` -> (C_in, h, w), as for ``tiled_forward``.
        rows, cols: the tile plan; each tile's core comes from ``core_bounds`` (rounded to ``multiple``).
        batch: tiles per forward call.
        map_batch: ``map_batch(fn, x)`` -> ``fn`` applied to parts of ``x`` (e.g. one sample per
            thread of a tile pool), the results in order; default ``[fn(x)]``.
        on_batch: called with the number of tiles after each batch (progress).
    """
    tiles = grid(rows, cols)
    core_rows, core_cols = core_bounds(rows, multiple=multiple), core_bounds(cols, multiple=multiple)
    stats: Stats = {}
    for _ in range(len(layers)):
        index: int | None = None
        total: Moments | None = None
        with frozen(net, layers, stats, measuring=True):
            for group in batches(tiles, batch):
                x = read_batch(read, group)
                parts = (map_batch or _whole)(partial(run_to_layer, run), x)
                cores = _core_fractions(group, core_rows, core_cols)
                for i, activation in parts:
                    if index is not None and i != index:
                        raise RuntimeError(
                            "tiles reached different InstanceNorm layers first: data-dependent control flow"
                        )
                    index = i
                    for part in core_moments(activation, cores[: activation.shape[0]]):
                        total = part if total is None else total.merge(part)
                    cores = cores[activation.shape[0] :]
                if on_batch is not None:
                    on_batch(len(group))
        if index is None or total is None:
            raise RuntimeError("no InstanceNorm layer was reached while measuring")
        stats[index] = total.mean_var()
    return stats


def _whole(fn: Callable[[torch.Tensor], T], x: torch.Tensor) -> list[T]:
    return [fn(x)]


def _core_fractions(
    tiles: list[Tile], core_rows: list[tuple[int, int]], core_cols: list[tuple[int, int]]
) -> list[Core]:
    """Each tile's core as fractions of its sides (scaled to each layer's resolution)."""
    return [
        (
            core_rows[t.row][0] / t.height,
            core_rows[t.row][1] / t.height,
            core_cols[t.col][0] / t.width,
            core_cols[t.col][1] / t.width,
        )
        for t in tiles
    ]
