"""Tiled forward pass: cut an image into overlapping tiles, run them in batches, blend the overlaps.

Pure tensor code (no files, no pixels): the caller gives a ``read`` function that returns input
tiles and a ``write`` function that receives finished output rows. The output is never held as
one float tensor: blended rows live in a float *band* that is only as tall as one row of tiles,
and each row is handed to ``write`` (which quantises it) as soon as no later tile can touch it.

Geometry, per axis (input pixels of the padded image, whose side ``length`` is a multiple of
``multiple``):

- tiles are spread evenly from 0 to ``length - tile`` (no thin last tile), their starts and sides
  are multiples of ``multiple`` (a pixel-unshuffle or U-Net model is only shift-equivariant by its
  factor), and any two neighbours overlap by at least ``overlap``;
- each tile's output is weighted by a separable window that is 0 in the outer quarter of every
  overlap with a neighbour (pure context: where zero padding at the tile edge disturbs it most), a
  raised cosine over the middle half, and 1 elsewhere, including along the image border (where the
  whole-image pass sees the same border as the tile);
- windows are normalised by their sum over all tiles, per axis, so they form an exact partition of
  unity and the blended output of a model that ignores tile edges equals its whole-image output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# Fraction of each overlap, at either end, where a tile's window is 0 (pure context).
CONTEXT_FRACTION = 0.25


@dataclass(frozen=True)
class AxisPlan:
    """Where the tiles lie along one axis of the padded input.

    length: padded side in input pixels; tile: side of every tile; starts: first pixel of each tile.
    """

    length: int
    tile: int
    starts: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.starts)

    def overlaps(self) -> list[int]:
        """Overlap in input pixels between tile i and tile i + 1."""
        return [a + self.tile - b for a, b in zip(self.starts, self.starts[1:], strict=False)]


@dataclass(frozen=True)
class Tile:
    """One tile: its place in the grid and in the padded input (input pixels)."""

    row: int
    col: int
    y: int
    x: int
    height: int
    width: int


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_axis(length: int, *, tile: int, overlap: int, multiple: int = 1, fixed: bool = False) -> AxisPlan:
    """Spread tiles of at most ``tile`` pixels evenly over ``length`` with at least ``overlap`` between neighbours.

    ``length`` must be a multiple of ``multiple``. ``tile <= 0`` or ``tile >= length`` gives one tile
    covering everything. Unless ``fixed`` is set the tile side is shrunk to the smallest multiple of
    ``multiple`` that still needs no more tiles than ``tile`` would: less recomputed overlap. With
    ``fixed`` (for torch.compile, which compiles one graph per shape) every tile is ``tile`` wide.
    """
    if length % multiple:
        raise ValueError(f"length {length} is not a multiple of {multiple}")
    tile = round_up(tile, multiple) if tile > 0 else 0
    if tile <= 0 or tile >= length:
        return AxisPlan(length=length, tile=length, starts=(0,))
    overlap = max(0, min(overlap, tile - multiple))
    step = tile - overlap
    count = max(2, math.ceil((length - overlap) / step))
    side = (
        tile if fixed else min(tile, round_up(math.ceil((length + (count - 1) * overlap) / count), multiple))
    )
    while True:
        # Even spread, starts rounded to the multiple; rounding can shave up to `multiple` off an
        # overlap, so grow the tile (or add one) until every overlap is large enough.
        starts = tuple(
            int(round(i * (length - side) / (count - 1) / multiple)) * multiple for i in range(count)
        )
        plan = AxisPlan(length=length, tile=side, starts=starts)
        if min(plan.overlaps()) >= overlap:
            return plan
        if side + multiple <= tile:
            side += multiple
        else:
            count += 1


def _ramp(distance: np.ndarray, overlap: int) -> np.ndarray:
    """Window factor at ``distance`` (input px) from a tile edge shared with a neighbour over ``overlap`` px."""
    context = CONTEXT_FRACTION * overlap
    width = overlap - 2 * context
    if width <= 0:  # no overlap: a hard cut at the edge
        return np.ones_like(distance)
    z = np.clip((distance - context) / width, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * z)


def axis_windows(plan: AxisPlan, *, scale: int) -> list[torch.Tensor]:
    """Normalised 1-D blend windows, one (tile * scale,) float32 tensor per tile, in output pixels.

    Summed over the tiles at every output pixel they give exactly 1.
    """
    side = plan.tile * scale
    centres = (np.arange(side, dtype=np.float64) + 0.5) / scale  # output pixel centres, input units
    overlaps = plan.overlaps()
    raw = []
    for i in range(plan.count):
        w = np.ones(side)
        if i > 0:
            w *= _ramp(centres, overlaps[i - 1])
        if i < plan.count - 1:
            w *= _ramp(plan.tile - centres, overlaps[i])
        raw.append(w)
    total = np.zeros(plan.length * scale)
    for start, w in zip(plan.starts, raw, strict=True):
        total[start * scale : start * scale + side] += w
    if total.min() <= 0:  # cannot happen with CONTEXT_FRACTION < 0.5; a bug if it does
        raise AssertionError("tile windows leave output pixels uncovered")
    return [
        torch.from_numpy(w / total[s * scale : s * scale + side]).float()
        for s, w in zip(plan.starts, raw, strict=True)
    ]


def core_bounds(plan: AxisPlan, *, multiple: int = 1) -> list[tuple[int, int]]:
    """A partition of the axis among the tiles, relative to each tile's start (input pixels).

    Boundaries sit in the middle of each overlap (rounded to ``multiple``), as far as possible
    from both tile edges. Used to gather whole-image statistics from tiles without counting a
    pixel twice.
    """
    cuts = [0]
    for a, b in zip(plan.starts, plan.starts[1:], strict=False):
        cuts.append(int(round((b + a + plan.tile) / 2 / multiple)) * multiple)
    cuts.append(plan.length)
    return [(lo - s, hi - s) for s, lo, hi in zip(plan.starts, cuts, cuts[1:], strict=False)]


def grid(rows: AxisPlan, cols: AxisPlan) -> list[Tile]:
    """All tiles in row-major order."""
    return [
        Tile(row=r, col=c, y=y, x=x, height=rows.tile, width=cols.tile)
        for r, y in enumerate(rows.starts)
        for c, x in enumerate(cols.starts)
    ]


def batches(tiles: Sequence[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(tiles), size):
        yield list(tiles[i : i + size])


ReadFn = Callable[[int, int, int, int], torch.Tensor]
RunFn = Callable[[torch.Tensor], torch.Tensor]
WriteFn = Callable[[int, torch.Tensor], None]


def read_batch(read: ReadFn, tiles: Sequence[Tile], *, pad_to: int = 0) -> torch.Tensor:
    """Stack the input of ``tiles`` into (B, C, h, w); with ``pad_to`` repeat the last tile up to that batch size."""
    parts = [read(t.y, t.y + t.height, t.x, t.x + t.width) for t in tiles]
    parts += [parts[-1]] * max(0, pad_to - len(parts))
    return torch.stack(parts)


def tiled_forward(
    run: RunFn,
    read: ReadFn,
    write: WriteFn,
    *,
    rows: AxisPlan,
    cols: AxisPlan,
    scale: int,
    out_channels: int,
    batch: int = 1,
    fixed_batch: bool = False,
    on_batch: Callable[[Sequence[Tile]], None] | None = None,
) -> None:
    """Run ``run`` over the tile grid ``rows`` x ``cols`` and hand blended output rows to ``write``.

    Args:
        run: the model, (B, C_in, h, w) -> (B, out_channels, h * scale, w * scale) float CPU tensor.
            Its errors propagate: a tile that fails is a bug or an out-of-memory to retry, never
            something to paper over.
        read: ``read(y0, y1, x0, x1)`` -> (C_in, y1 - y0, x1 - x0) float32 input tile, in padded
            input coordinates.
        write: ``write(y0, rows)`` receives finished output rows (C_out, n, cols.length * scale),
            starting at output row ``y0``, top to bottom, each row exactly once. The tensor is a
            view of the band, valid only during the call.
        batch: tiles per forward call; with ``fixed_batch`` the last call is padded to ``batch``
            tiles so a compiled model always sees one shape.
        on_batch: called with the batch's tiles after they are blended (progress).

    Peak memory: the band, out_channels x tile * scale rows x width * scale float32, plus one
    batch of tiles; independent of the image height.
    """
    wy = axis_windows(rows, scale=scale)
    wx = axis_windows(cols, scale=scale)
    th, tw = rows.tile * scale, cols.tile * scale
    band = torch.zeros(out_channels, th, cols.length * scale)
    top = 0  # output row held in band[:, 0]

    for group in batches(grid(rows, cols), batch):
        x = read_batch(read, group, pad_to=batch if fixed_batch else 0)
        y = run(x)
        expected = (out_channels, th, tw)
        if tuple(y.shape[1:]) != expected:
            raise RuntimeError(f"model returned tiles of shape {tuple(y.shape[1:])}, expected {expected}")
        for t, out in zip(group, y, strict=False):  # y may hold padding samples
            # Tiles come in row-major order: rows above this tile are final, no later tile reaches them.
            done = t.y * scale - top
            if done > 0:
                write(top, band[:, :done])
                _slide_up(band, done)
                top += done
            window = wy[t.row][:, None] * wx[t.col][None, :]
            oy, ox = t.y * scale - top, t.x * scale
            band[:, oy : oy + th, ox : ox + tw].addcmul_(out, window)
        if on_batch is not None:
            on_batch(group)
    write(top, band[:, : rows.length * scale - top])


def _slide_up(band: torch.Tensor, rows: int) -> None:
    """Move band rows [rows, end) to [0, end - rows) in place and zero the rest, without a band-sized copy."""
    height = band.shape[1]
    for start in range(rows, height, rows):  # blocks of `rows` rows: source and destination never overlap
        stop = min(start + rows, height)
        band[:, start - rows : stop - rows] = band[:, start:stop]
    band[:, max(height - rows, 0) :] = 0
