"""How big the tiles are: the defaults, the automatic tile, the tile plan of an image, the retry size.

``tiling.py`` spreads tiles along an axis and blends them; this module decides what it is asked
for. Everything here is a plain function of numbers (and of the model's size rules), so a reader
can check a choice without running a network. Why each default has its value: docs/inference.md
("Tiles, overlap and blending", "Speed"); the measurements are in docs/benchmarks.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.inference.tiling import AxisPlan, Tile, grid, plan_axis, round_up

CPU_TILE = 192  # input pixels: eager CPU convolutions lose cache efficiency on larger tiles
# Overlap between neighbouring tiles, in pixels of the network's own working resolution: a net
# that first downsamples by its size multiple m (pixel-unshuffle RRDB x2/x1, CycleGAN's ResNet)
# sees m times further in input pixels, so the default overlap is DEFAULT_OVERLAP * m.
DEFAULT_OVERLAP = 16
# The automatic tile is at least this many overlaps wide (bounds the share of recomputed work)...
TILE_PER_OVERLAP = 4
# ...and when that exceeds this side (e.g. a U-Net, whose receptive field is its whole input),
# `tile="auto"` runs the whole image instead.
MAX_AUTO_TILE = 2048
# Tiling an InstanceNorm net costs about half a forward pass per layer extra (instance_norm.py),
# so on a CPU `tile="auto"` runs images up to this many pixels whole (about 1 KiB of activations
# per pixel for resnet_9blocks at ngf 64).
CPU_WHOLE_IMAGE_PIXELS_WITH_NORM = 2048 * 2048
MPS_TILE = 512  # MPS reports no free memory reliably
GPU_MEMORY_FRACTION = 0.5  # of the free memory that `tile="auto"` plans to use on CUDA
GPU_TILE_RANGE = (128, 2048)
CUDA_PROBE_TILE = 128  # side of the tile whose memory use `tile="auto"` measures on CUDA
MIN_TILE = 32  # smallest tile the out-of-memory retry goes down to, in input pixels

TileSpec = int | str  # pixels, "auto", or 0 for the whole image


class TilePlan(NamedTuple):
    """The tiles of one image: rows and columns of the padded input (unpacks as ``rows, cols``)."""

    rows: AxisPlan
    cols: AxisPlan

    @property
    def count(self) -> int:
        """Number of tiles."""
        return self.rows.count * self.cols.count

    @property
    def overlap(self) -> int:
        """Smallest overlap between neighbouring tiles, in input pixels (0 for one tile)."""
        return min(self.rows.overlaps() + self.cols.overlaps(), default=0)

    def tiles(self) -> list[Tile]:
        """All tiles in row-major order."""
        return grid(self.rows, self.cols)

    def describe(self) -> str:
        """One line for logs, e.g. ``3 x 4 tiles of 176 x 192 px, overlap 16 px``."""
        if self.count == 1:
            return f"whole image ({self.rows.tile} x {self.cols.tile} px padded)"
        return (
            f"{self.rows.count} x {self.cols.count} tiles of {self.rows.tile} x {self.cols.tile} px, "
            f"overlap {self.overlap} px"
        )


def default_overlap(model: ModelDescriptor) -> int:
    """``DEFAULT_OVERLAP`` pixels at the network's working resolution, in input pixels."""
    return DEFAULT_OVERLAP * model.size_multiple


def padded_size(height: int, width: int, *, multiple: int, min_size: int) -> tuple[int, int]:
    """Input size after reflect padding to the architecture's multiple and minimum side."""
    low = round_up(min_size, multiple)
    return max(round_up(height, multiple), low), max(round_up(width, multiple), low)


def plan_tiles(
    height: int, width: int, *, tile: int, overlap: int, multiple: int, min_size: int, fixed: bool
) -> TilePlan:
    """Tile rows and columns for an image of ``height`` x ``width`` input pixels.

    ``tile`` 0 means one tile covering the padded image; ``fixed`` keeps every tile ``tile`` wide
    (one input shape for a compiled graph).
    """
    hp, wp = padded_size(height, width, multiple=multiple, min_size=min_size)
    tile = round_up(max(tile, min_size), multiple) if tile > 0 else 0
    overlap = round_up(overlap, multiple)
    if tile > 0:
        # More than half a tile of overlap would recompute most pixels several times.
        overlap = min(overlap, tile // 2 // multiple * multiple)
    return TilePlan(
        plan_axis(hp, tile=tile, overlap=overlap, multiple=multiple, fixed=fixed),
        plan_axis(wp, tile=tile, overlap=overlap, multiple=multiple, fixed=fixed),
    )


def auto_runs_whole(
    height: int, width: int, *, overlap: int, device_type: str, instance_norm: bool
) -> bool:
    """True when ``tile="auto"`` runs this image in one piece instead of tiling it.

    Either no affordable tile is wide enough for the overlap the net needs (a U-Net), or the net
    holds per-image statistics and the image fits a CPU's memory whole (tiling it exactly costs
    about half a forward pass per InstanceNorm layer).
    """
    if TILE_PER_OVERLAP * overlap > MAX_AUTO_TILE:
        return True
    return device_type == "cpu" and instance_norm and height * width <= CPU_WHOLE_IMAGE_PIXELS_WITH_NORM


def auto_tile(device_tile: int, *, overlap: int, multiple: int) -> int:
    """The automatic tile: the device's tile, but at least ``TILE_PER_OVERLAP`` overlaps wide."""
    return max(device_tile, round_up(TILE_PER_OVERLAP * overlap, multiple))


def fixed_device_tile(device_type: str, *, multiple: int) -> int:
    """The automatic tile on a device without a memory measurement (CPU, MPS)."""
    return round_up(CPU_TILE if device_type == "cpu" else MPS_TILE, multiple)


def tile_for_memory(*, free_bytes: float, bytes_per_pixel: float, batch: int, multiple: int) -> int:
    """Largest tile side (multiple of ``multiple``, within GPU_TILE_RANGE) whose batch fits in
    ``GPU_MEMORY_FRACTION`` of ``free_bytes`` when one input pixel costs ``bytes_per_pixel``."""
    side = math.sqrt(GPU_MEMORY_FRACTION * free_bytes / max(batch * bytes_per_pixel, 1e-9))
    low, high = GPU_TILE_RANGE
    side = min(max(side, low), high)
    return max(multiple, int(side // multiple) * multiple)


def is_out_of_memory(error: BaseException) -> bool:
    """True for allocation failures on any device (CUDA, MPS and CPU phrase them differently)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def smaller_tile(plan: TilePlan, *, multiple: int, min_size: int) -> int | None:
    """The tile to retry with after running out of memory with ``plan``: half its side, or None
    when that is below ``MIN_TILE`` (or the model's minimum) or no smaller."""
    current = max(plan.rows.tile, plan.cols.tile)
    smaller = round_up(current // 2, multiple)
    if smaller < max(MIN_TILE, min_size) or smaller >= current:
        return None
    return smaller
