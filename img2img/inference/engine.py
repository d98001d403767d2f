"""The inference engine: one loaded model, run on images of any size with bounded memory.

``Engine(descriptor, tile=..., overlap=...)`` is called on numpy pixel arrays, on ``Image``
records from ``img2img.image_io`` or on float tensors. It takes care of everything between the
pixels and the network: value range, gray/RGB/alpha, padding to the sizes the architecture
accepts, tiling with seamless blending (``tiling.py``), whole-image InstanceNorm statistics
(``instance_norm.py``), device, reduced precision, torch.compile and out-of-memory retries.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from img2img import devices, image_io
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.inference.instance_norm import PrefixDone, Stats, WholeImageNorm
from img2img.inference.tiling import (
    AxisPlan,
    Tile,
    batches,
    core_bounds,
    grid,
    plan_axis,
    read_batch,
    round_up,
    tiled_forward,
)

log = logging.getLogger(__name__)

# Defaults chosen by measurement (docs/inference.md, "Choosing the defaults").
CPU_TILE = 192  # input pixels; eager CPU convolutions lose cache efficiency above ~200 px
# Overlap between neighbouring tiles, in pixels of the network's own working resolution: a net
# that first downsamples by its size multiple m (pixel-unshuffle RRDB x2/x1, CycleGAN's ResNet)
# sees m times further in input pixels, so the default overlap is DEFAULT_OVERLAP * m.
DEFAULT_OVERLAP = 16
# The automatic tile is at least this many overlaps wide (at most ~44 % of the work recomputed)...
TILE_PER_OVERLAP = 4
# ...and when that exceeds this side (e.g. a U-Net, whose receptive field is its whole input),
# `tile="auto"` runs the whole image instead.
MAX_AUTO_TILE = 2048
# InstanceNorm nets cost ~half a forward pass per layer extra when tiled (instance_norm.py), so on
# a CPU `tile="auto"` runs images up to this many pixels whole (about 1 KiB of activations per
# pixel for resnet_9blocks at ngf 64: ~4 GiB).
CPU_WHOLE_IMAGE_PIXELS_WITH_NORM = 2048 * 2048
MPS_TILE = 512  # MPS reports no free memory reliably
CPU_WORKERS = 2  # tiles run concurrently on a CPU, one core each (see Engine)
QUANTISE_ROWS = 64  # output rows converted to pixels at a time
GPU_MEMORY_FRACTION = 0.5  # of the free memory that `tile="auto"` plans to use
GPU_TILE_RANGE = (128, 2048)
# Smallest tile the out-of-memory retry goes down to, in input pixels.
MIN_TILE = 32

TileSpec = int | str  # pixels, "auto", or 0 for the whole image
Core = tuple[float, float, float, float]  # a tile's core (y0, y1, x0, x1) as fractions of its sides


class InferenceError(RuntimeError):
    """An image the engine cannot process (e.g. out of memory even at the smallest tile)."""


def select_device(spec: str | torch.device | None) -> torch.device:
    """``"auto"`` -> cuda, then mps, then cpu; anything else as torch understands it."""
    try:
        return devices.select_device(spec)
    except devices.DeviceUnavailable as e:
        raise InferenceError(str(e)) from None


def default_overlap(model: ModelDescriptor) -> int:
    """``DEFAULT_OVERLAP`` pixels at the network's working resolution, in input pixels."""
    return DEFAULT_OVERLAP * model.size_multiple


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside [0, size) back inside by mirror reflection without repeating the edge
    (numpy's and torch's "reflect" padding), for any distance outside."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * size - 2
    index = np.mod(index, period)
    return np.where(index < size, index, period - index)


def is_out_of_memory(error: BaseException) -> bool:
    """True for allocation failures on any device (CUDA, MPS and CPU phrase them differently)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def tile_for_memory(*, free_bytes: float, bytes_per_pixel: float, batch: int, multiple: int) -> int:
    """Largest tile side (multiple of ``multiple``, within GPU_TILE_RANGE) whose batch fits in
    ``GPU_MEMORY_FRACTION`` of ``free_bytes`` when one input pixel costs ``bytes_per_pixel``."""
    side = math.sqrt(GPU_MEMORY_FRACTION * free_bytes / max(batch * bytes_per_pixel, 1e-9))
    low, high = GPU_TILE_RANGE
    side = min(max(side, low), high)
    return max(multiple, int(side // multiple) * multiple)


class Engine:
    """Runs one model on images of any size, tile by tile, with seamless blending.

    Args:
        model: the loaded model (``img2img.checkpoints.load_model``) or any descriptor.
        tile: input tile side in pixels, ``"auto"`` (from free GPU memory, or ``CPU_TILE`` on a
            CPU) or 0 for the whole image at once. Rounded up to the architecture's size multiple.
        overlap: input pixels shared by neighbouring tiles (default ``default_overlap(model)``).
        batch: tiles per forward call (default: ``workers`` on a CPU, 4 on a GPU).
        workers: CPU only: tiles run at once in threads of one core each (default ``CPU_WORKERS``,
            at most torch's thread count). Measured faster than one tile on all cores: no
            barriers between the many small convolutions, and each core keeps its own tile in cache.
        half: fp16 autocast on CUDA/MPS; ignored with a note on a CPU.
        compile: ``torch.compile`` the network; tiles then keep one shape (the last batch is
            padded) so only one graph is compiled per tile shape.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``, a torch.device, or None to keep
            the model where it is.
        alpha: ``"bicubic"`` (resize the alpha plane) or ``"model"`` (run it through the model as
            a gray image); only matters when ``model.scale > 1``.
    """

    def __init__(
        self,
        model: ModelDescriptor,
        *,
        tile: TileSpec = "auto",
        overlap: int | None = None,
        batch: int | None = None,
        half: bool = False,
        compile: bool = False,
        workers: int | None = None,
        device: str | torch.device | None = None,
        alpha: str = "bicubic",
    ) -> None:
        if alpha not in ("bicubic", "model"):
            raise ValueError(f"alpha must be 'bicubic' or 'model', got {alpha!r}")
        if not (tile == "auto" or (isinstance(tile, int) and tile >= 0)):
            raise ValueError(f"tile must be a number of pixels >= 0 or 'auto', got {tile!r}")
        self.model = model
        self.device = model.device if device is None else select_device(device)
        model.net.to(self.device).eval()
        self.tile = tile
        self.overlap = default_overlap(model) if overlap is None else int(overlap)
        if self.overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        if workers is None:
            # A compiled graph is called from one thread: dynamo's guards are not meant for concurrency.
            workers = CPU_WORKERS if self.device.type == "cpu" and not compile else 1
        if workers < 1 or (workers > 1 and self.device.type != "cpu"):
            raise ValueError(f"workers must be >= 1, and 1 unless the device is a CPU; got {workers}")
        self.workers = min(workers, torch.get_num_threads()) if workers > 1 else 1
        self._pool: ThreadPoolExecutor | None = None
        self.batch = batch if batch is not None else (self.workers if self.device.type == "cpu" else 4)
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.half = half and self.device.type in ("cuda", "mps")
        if half and not self.half:
            log.warning("--half: reduced precision is slow or unsupported on a CPU; running float32")
        self.norm = WholeImageNorm(model.net)
        self.alpha = alpha
        # Convolutions on CUDA prefer NHWC (tensor cores); on a CPU NCHW measured faster here.
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            model.net.to(memory_format=torch.channels_last)
        self.compiled = False
        self._forward_net: Callable[[torch.Tensor], torch.Tensor] = model.net
        if compile and self.norm:
            log.warning(
                "--compile: skipped for a model with InstanceNorm (whole-image statistics need eager layers)"
            )
        elif compile:
            self._forward_net = torch.compile(model.net, options={"freezing": True})
            self.compiled = True
        self._auto_tile: int | None = None

    # ----------------------------------------------------------------- public calls

    def __call__(self, image: Any, **kwargs: Any) -> Any:
        """Run on a numpy pixel array, an ``image_io.Image`` or a float tensor; returns the same kind.

        - ndarray (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8/uint16 -> same layout and
          dtype, sides times ``scale``.
        - Image -> Image (alpha and ICC profile carried, path None).
        - tensor (C, H, W) or (B, C, H, W) float in the model's value range -> float tensor
          (.., C_out, H*scale, W*scale) on the input's device, not clamped.
        """
        if isinstance(image, torch.Tensor):
            return self.run_tensor(image, **kwargs)
        if isinstance(image, np.ndarray):
            return self.run_pixels(image, **kwargs)
        if isinstance(image, image_io.Image):
            return self.run_image(image, **kwargs)
        raise TypeError(f"Engine expects a numpy array, an Image or a tensor, got {type(image).__name__}")

    def run_image(
        self, image: image_io.Image, *, on_tile: Callable[[Tile], None] | None = None
    ) -> image_io.Image:
        """Translate / upscale an ``Image``: colour through the model, alpha resized beside it."""
        pixels = self.run_pixels(image.pixels, on_tile=on_tile)
        alpha = None if image.alpha is None else self._resize_alpha(image.alpha, on_tile=on_tile)
        return replace(image, pixels=pixels, alpha=alpha, path=None)

    def run_pixels(self, pixels: np.ndarray, *, on_tile: Callable[[Tile], None] | None = None) -> np.ndarray:
        """Run on (H, W), (H, W, 1|3|4) uint8/uint16 pixels; returns the same layout and dtype, scaled."""
        if pixels.dtype not in (np.uint8, np.uint16):
            raise TypeError(f"expected uint8 or uint16 pixels, got {pixels.dtype}; pass floats as a tensor")
        if pixels.ndim == 2:
            return self.run_pixels(pixels[:, :, None], on_tile=on_tile)[:, :, 0]
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) pixels, got {pixels.shape}")
        if pixels.shape[2] == 4:
            colour = self.run_pixels(pixels[:, :, :3], on_tile=on_tile)
            alpha = self._resize_alpha(pixels[:, :, 3], on_tile=on_tile)
            return np.concatenate([colour, alpha[:, :, None]], axis=2)

        height, width, channels = pixels.shape
        scale = self.model.scale
        out_channels = 1 if channels == 1 or self.model.out_channels == 1 else 3
        out = np.empty((height * scale, width * scale, out_channels), dtype=pixels.dtype)
        value_range = self.model.value_range

        def read(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
            if 0 <= y0 and y1 <= height and 0 <= x0 and x1 <= width:
                patch = pixels[y0:y1, x0:x1]
            else:
                rows = reflect_index(np.arange(y0, y1), height)
                cols = reflect_index(np.arange(x0, x1), width)
                patch = pixels[rows[:, None], cols[None, :]]
            return self._to_model_channels(
                image_io.pixels_to_tensor(np.ascontiguousarray(patch), value_range)
            )

        def write(y0: int, rows: torch.Tensor) -> None:
            # A few rows at a time: quantising makes float temporaries the size of what it is given.
            for start in range(y0, min(y0 + rows.shape[1], height * scale), QUANTISE_ROWS):
                stop = min(start + QUANTISE_ROWS, y0 + rows.shape[1], height * scale)
                part = self._to_output_channels(
                    rows[:, start - y0 : stop - y0, : width * scale], out_channels
                )
                out[start:stop] = image_io.tensor_to_pixels(part, pixels.dtype, value_range).reshape(
                    stop - start, width * scale, out_channels
                )

        self._run(read, write, height=height, width=width, on_tile=on_tile)
        return out

    def run_tensor(self, x: torch.Tensor, *, on_tile: Callable[[Tile], None] | None = None) -> torch.Tensor:
        """Run on (C, H, W) or (B, C, H, W) float input in the model's value range.

        Returns (.., C_out, H*scale, W*scale) float32 on ``x``'s device, not clamped. The output is
        one float tensor (that is what the caller asked for); use pixels for bounded memory.
        """
        if x.dim() == 3:
            return self.run_tensor(x[None], on_tile=on_tile)[0]
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(
                f"expected a float (C, H, W) or (B, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}"
            )
        b, channels, height, width = x.shape
        scale = self.model.scale
        out_channels = 1 if channels == 1 or self.model.out_channels == 1 else 3
        out = torch.empty(b, out_channels, height * scale, width * scale)
        for i in range(b):
            image = x[i].detach().float().cpu()

            def read(y0: int, y1: int, x0: int, x1: int, image: torch.Tensor = image) -> torch.Tensor:
                rows = torch.from_numpy(reflect_index(np.arange(y0, y1), height))
                cols = torch.from_numpy(reflect_index(np.arange(x0, x1), width))
                return self._to_model_channels(image[:, rows][:, :, cols])

            def write(y0: int, rows: torch.Tensor, i: int = i) -> None:
                y1 = min(y0 + rows.shape[1], height * scale)
                if y1 > y0:
                    out[i, :, y0:y1] = self._to_output_channels(
                        rows[:, : y1 - y0, : width * scale], out_channels
                    )

            self._run(read, write, height=height, width=width, on_tile=on_tile)
        return out.to(x.device)

    def run_folder(self, src: Any, dst: Any, **options: Any) -> Any:
        """Run over files: ``recursive``, ``suffix``, ``fmt`` plan the jobs (``plan_jobs``), the rest go to ``run_jobs``."""
        from img2img.inference.pipeline import plan_jobs, run_jobs

        plan_options = {k: options.pop(k) for k in ("recursive", "suffix", "fmt") if k in options}
        return run_jobs(self, plan_jobs(src, dst, **plan_options), **options)

    # ----------------------------------------------------------------- planning

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """Input size after reflect padding to the architecture's multiple and minimum side."""
        m = self.model.size_multiple
        low = round_up(self.model.min_size, m)
        return max(round_up(height, m), low), max(round_up(width, m), low)

    def resolve_tile(self, height: int, width: int) -> int:
        """The tile side in input pixels an image of ``height`` x ``width`` starts with (0: whole image)."""
        if self.tile != "auto":
            return int(self.tile)
        floor = TILE_PER_OVERLAP * self.overlap
        if floor > MAX_AUTO_TILE:
            return 0
        if self.device.type == "cpu" and self.norm and height * width <= CPU_WHOLE_IMAGE_PIXELS_WITH_NORM:
            return 0
        if self._auto_tile is None:
            self._auto_tile = self._measure_auto_tile()
        return max(self._auto_tile, round_up(floor, self.model.size_multiple))

    def plan(self, height: int, width: int, tile: int) -> tuple[AxisPlan, AxisPlan]:
        """Tile rows and columns for an image of ``height`` x ``width`` input pixels."""
        m = self.model.size_multiple
        hp, wp = self.padded_size(height, width)
        tile = round_up(max(tile, self.model.min_size), m) if tile > 0 else 0
        overlap = round_up(self.overlap, m)
        if tile > 0:
            # More than half a tile of overlap would recompute most pixels several times.
            overlap = min(overlap, tile // 2 // m * m)
        rows = plan_axis(hp, tile=tile, overlap=overlap, multiple=m, fixed=self.compiled)
        cols = plan_axis(wp, tile=tile, overlap=overlap, multiple=m, fixed=self.compiled)
        return rows, cols

    def _measure_auto_tile(self) -> int:
        m = self.model.size_multiple
        if self.device.type == "cpu":
            return round_up(CPU_TILE, m)
        if self.device.type != "cuda":
            return round_up(MPS_TILE, m)
        # Measure the memory one probe tile needs and scale by area: activations grow with pixels.
        probe = round_up(max(128, self.model.min_size), m)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        with torch.inference_mode():
            self._run_batch(torch.zeros(1, self.model.in_channels, probe, probe))
        per_pixel = (torch.cuda.max_memory_allocated(self.device) - base) / probe**2
        free, _ = torch.cuda.mem_get_info(self.device)
        tile = tile_for_memory(free_bytes=free, bytes_per_pixel=per_pixel, batch=self.batch, multiple=m)
        log.info("tile auto: %d px (%.0f MiB free, %.1f KiB per pixel)", tile, free / 2**20, per_pixel / 1024)
        return tile

    # ----------------------------------------------------------------- running

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.half:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def _run_batch(self, x: torch.Tensor, cores: list[Core] | None = None) -> torch.Tensor:
        """(B, C_in, h, w) float -> (B, C_out, h*scale, w*scale) float32 on the CPU.

        ``cores``: per sample, the region whose InstanceNorm statistics count (measuring passes).
        With ``workers`` > 1 the samples run concurrently, one per worker thread.
        """
        if self.workers > 1 and x.shape[0] > 1:
            return self._run_concurrently(x, cores)
        if cores is not None:
            self.norm.set_cores(cores)
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            y = self._forward_net(x)
        return y.float().cpu()

    def _run_concurrently(self, x: torch.Tensor, cores: list[Core] | None) -> torch.Tensor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="img2img-tile")
        threads = torch.get_num_threads()
        futures = [
            self._pool.submit(
                self._run_on_one_core, x[i : i + 1], None if cores is None else cores[i : i + 1]
            )
            for i in range(x.shape[0])
        ]
        # Every sample finishes (or fails) before this returns: no tile outlives its batch.
        wait(futures)
        # torch.set_num_threads also sets the process default that new threads start from: restore it.
        torch.set_num_threads(threads)
        return torch.cat([f.result() for f in futures])

    def _run_on_one_core(self, x: torch.Tensor, cores: list[Core] | None) -> torch.Tensor:
        torch.set_num_threads(1)  # this thread's operators; the workers share the cores out
        with torch.inference_mode():  # thread-local, like autocast (entered in _run_batch)
            return self._run_batch(x, cores)

    def _run(
        self,
        read: Callable[[int, int, int, int], torch.Tensor],
        write: Callable[[int, torch.Tensor], None],
        *,
        height: int,
        width: int,
        on_tile: Callable[[Tile], None] | None,
    ) -> None:
        """Run one image; on out-of-memory halve the tile and start that image again."""
        tile = self.resolve_tile(height, width)
        while True:
            rows, cols = self.plan(height, width, tile)
            try:
                with torch.inference_mode():
                    self._run_plan(read, write, rows, cols, on_tile)
                return
            except Exception as error:  # only out-of-memory is retried; everything else propagates
                if not is_out_of_memory(error):
                    raise
                current = max(rows.tile, cols.tile)
                smaller = round_up(current // 2, self.model.size_multiple)
                if smaller < max(MIN_TILE, self.model.min_size) or smaller >= current:
                    hint = "; try a smaller --batch" if self.batch > 1 else ""
                    raise InferenceError(
                        f"out of memory even with {rows.tile}x{cols.tile}-px tiles{hint}"
                    ) from error
                log.warning(
                    "out of memory with %dx%d-px tiles: retrying this image with %d px",
                    rows.tile,
                    cols.tile,
                    smaller,
                )
                del error
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                tile = smaller

    def _run_plan(
        self,
        read: Callable[[int, int, int, int], torch.Tensor],
        write: Callable[[int, torch.Tensor], None],
        rows: AxisPlan,
        cols: AxisPlan,
        on_tile: Callable[[Tile], None] | None,
    ) -> None:
        run_options = {
            "rows": rows,
            "cols": cols,
            "scale": self.model.scale,
            "out_channels": self.model.out_channels,
            "batch": self.batch,
            "fixed_batch": self.compiled,
            "on_tile": on_tile,
        }
        if not self.norm or (rows.count == 1 and cols.count == 1):
            # One tile is the whole image: InstanceNorm sees the whole image by itself.
            tiled_forward(self._run_batch, read, write, **run_options)
            return
        stats = self._measure_norm_stats(read, rows, cols, on_tile)
        with self.norm.frozen(stats):
            tiled_forward(self._run_batch, read, write, **run_options)

    def _measure_norm_stats(
        self,
        read: Callable[[int, int, int, int], torch.Tensor],
        rows: AxisPlan,
        cols: AxisPlan,
        on_tile: Callable[[Tile], None] | None,
    ) -> Stats:
        """Whole-image statistics of every InstanceNorm layer, one streaming pass per layer."""
        m = self.model.size_multiple
        tiles = grid(rows, cols)
        core_rows, core_cols = core_bounds(rows, multiple=m), core_bounds(cols, multiple=m)
        stats: Stats = {}
        for _ in range(len(self.norm)):
            with self.norm.measuring(stats):
                for group in batches(tiles, self.batch):
                    try:
                        self._run_batch(read_batch(read, group), _core_fractions(group, core_rows, core_cols))
                    except PrefixDone:
                        pass
                    else:
                        raise RuntimeError("a forward pass ended before reaching an InstanceNorm layer")
                    if on_tile is not None:
                        for t in group:
                            on_tile(t)
            index, moments = self.norm.measured()
            stats[index] = moments
        return stats

    # ----------------------------------------------------------------- channels and alpha

    def _to_model_channels(self, x: torch.Tensor) -> torch.Tensor:
        """(C, h, w) image tensor -> (model.in_channels, h, w): gray replicated, colour to luma."""
        want = self.model.in_channels
        if x.shape[0] == want:
            return x
        if x.shape[0] == 1 and want == 3:
            return x.expand(3, -1, -1)
        if x.shape[0] == 3 and want == 1:
            return _luma(x)
        raise ValueError(f"cannot feed a {x.shape[0]}-channel image to a {want}-channel model")

    def _to_output_channels(self, y: torch.Tensor, channels: int) -> torch.Tensor:
        """Model output (C_out, h, w) -> ``channels`` (a gray input gets a gray output back)."""
        if y.shape[0] == channels:
            return y
        if channels == 1 and y.shape[0] == 3:
            return _luma(y)
        raise ValueError(f"cannot write a {y.shape[0]}-channel output as {channels} channels")

    def _resize_alpha(self, alpha: np.ndarray, *, on_tile: Callable[[Tile], None] | None) -> np.ndarray:
        """(H, W) alpha -> (H*scale, W*scale), same dtype."""
        scale = self.model.scale
        if scale == 1:
            return alpha.copy()
        if self.alpha == "model":
            return self.run_pixels(alpha[:, :, None], on_tile=on_tile)[:, :, 0]
        import cv2  # only here: bicubic resize straight in uint8/uint16, no float copy of the plane

        h, w = alpha.shape
        return cv2.resize(alpha, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


def _core_fractions(
    tiles: list[Tile], core_rows: list[tuple[int, int]], core_cols: list[tuple[int, int]]
) -> list[Core]:
    """Each tile's core as fractions of its sides (the InstanceNorm controller scales them per layer)."""
    return [
        (
            core_rows[t.row][0] / t.height,
            core_rows[t.row][1] / t.height,
            core_cols[t.col][0] / t.width,
            core_cols[t.col][1] / t.width,
        )
        for t in tiles
    ]


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(3, h, w) -> (1, h, w) BT.601 luma; affine ranges are kept since the weights sum to 1."""
    w = torch.tensor(image_io.BT601_LUMA, dtype=x.dtype, device=x.device)
    return (x * w[:, None, None]).sum(dim=0, keepdim=True)
