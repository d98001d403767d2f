"""The inference engine: one loaded model, run on images of any size with bounded memory.

``Engine(descriptor, tile=..., overlap=...)`` is called on numpy pixel arrays, on ``Image``
records from ``img2img.image_io`` or on float tensors. Reading order of this file:

1. construction: the options, the runner that runs the network (``runners.py``; ``TorchRunner``
   unless one is given) and, for torch on a CPU, the tile pool (``tile_pool.py``);
2. the public calls: each input kind becomes a source of input tiles and a sink for finished
   output rows (``sources.py``); gray, colour and alpha rules live there and here;
3. planning: which tiles an image gets (``tile_policy.py``);
4. running one image: the out-of-memory retry around whole-image InstanceNorm statistics
   (``instance_norm.py``) and the tiled forward pass with seamless blending (``tiling.py``);
5. one batch of tiles through the runner, on the pool's threads when there is one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import PIL.Image
import torch

from img2img import image_io
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.inference import instance_norm
from img2img.inference.errors import InferenceError
from img2img.inference.runners import Runner, TorchRunner, select_device
from img2img.inference.sources import PixelSink, PixelSource, TensorSink, TensorSource, output_channels
from img2img.inference.tile_policy import (
    CUDA_PROBE_TILE,
    TilePlan,
    TileSpec,
    auto_runs_whole,
    auto_tile,
    default_overlap,
    fixed_device_tile,
    is_out_of_memory,
    plan_tiles,
    smaller_tile,
    tile_for_memory,
)
from img2img.inference.tile_pool import TilePool
from img2img.inference.tiling import round_up, tiled_forward

log = logging.getLogger(__name__)

CPU_WORKERS = 2  # tiles run at once on a CPU, one core each (tile_pool.py)

Progress = Callable[[int, int], None]  # progress(done, total): tiles run so far of this image
T = TypeVar("T")


class Engine:
    """Runs one model on images of any size, tile by tile, with seamless blending.

    Args:
        model: the loaded model (``img2img.checkpoints.load_model``) or any descriptor.
        tile: input tile side in pixels, ``"auto"`` (from free GPU memory, or a fixed side on a
            CPU/MPS) or 0 for the whole image at once. Rounded up to the architecture's size multiple.
        overlap: input pixels shared by neighbouring tiles (default ``default_overlap(model)``).
        batch: tiles per forward call (default: ``workers`` on a CPU, 4 on a GPU).
        half: fp16 autocast on CUDA/MPS; ignored with a note on a CPU.
        compile: ``torch.compile`` the network; tiles then keep one shape (the last batch is
            padded) so only one graph is compiled per tile shape. Skipped for InstanceNorm models.
        workers: torch on a CPU only: tiles run at once in threads of one core each (default
            ``CPU_WORKERS``, at most torch's thread count; 1 when compiled).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``, a torch.device, or None to keep
            the model where it is.
        alpha: ``"bicubic"`` (resize the alpha plane) or ``"model"`` (run it through the model as
            a gray image); only matters when ``model.scale > 1``.
        runner: what runs the network (``runners.Runner``); default a ``TorchRunner`` built from
            ``device``, ``half`` and ``compile``, which must then be left unset. Tiling an
            InstanceNorm model needs the torch runner (its statistics are taken from the torch
            layers); another runner runs such a model on whole images only.
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
        runner: Runner | None = None,
    ) -> None:
        if alpha not in ("bicubic", "model"):
            raise ValueError(f"alpha must be 'bicubic' or 'model', got {alpha!r}")
        if not (tile == "auto" or (isinstance(tile, int) and tile >= 0)):
            raise ValueError(f"tile must be a number of pixels >= 0 or 'auto', got {tile!r}")
        _check_finite_weights(model.net)
        self.model = model
        self.alpha = alpha
        self.tile = tile
        self.overlap = default_overlap(model) if overlap is None else int(overlap)
        if self.overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        if overlap is not None and isinstance(tile, int) and tile > 0:
            _check_overlap_fits(model, tile, self.overlap)
        # Per-image InstanceNorm layers: tiling them takes whole-image statistics. (Set it to [] to
        # let every tile normalise by itself, the naive way, e.g. for a comparison.)
        self.norm_layers = instance_norm.per_image_norms(model.net)

        if runner is None:
            if compile and self.norm_layers:
                log.warning("--compile: skipped for a model with InstanceNorm (whole-image statistics need eager layers)")
                compile = False
            device = model.device if device is None else select_device(device)
            runner = TorchRunner(model.net, device=device, half=half, compile=compile)
        elif device is not None or half or compile:
            raise ValueError("with a runner, device, half and compile are the runner's settings")
        self.runner = runner
        self.device = runner.device
        # One tile shape throughout (compiled graphs, static-shape runtimes): tiles keep their side.
        self.fixed_shape = runner.fixed_shape

        torch_on_cpu = isinstance(runner, TorchRunner) and self.device.type == "cpu"
        if workers is None:
            # A compiled graph is called from one thread: dynamo's guards are not meant for concurrency.
            workers = CPU_WORKERS if torch_on_cpu and not self.fixed_shape else 1
        if workers < 1 or (workers > 1 and not torch_on_cpu):
            raise ValueError(f"workers must be >= 1, and 1 unless torch runs on a CPU; got {workers}")
        self.workers = min(workers, torch.get_num_threads()) if workers > 1 else 1
        self.batch = batch if batch is not None else (self.workers if self.device.type == "cpu" else 4)
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self._pool = TilePool(self.workers) if self.workers > 1 else None
        self._device_tile: int | None = None  # the automatic tile, measured once

    # ------------------------------------------------------------------- public calls

    def __call__(self, image: Any, *, progress: Progress | None = None) -> Any:
        """Run on a numpy pixel array, an ``image_io.Image`` or a float tensor; returns the same kind.

        - ndarray (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8/uint16 -> same layout and
          dtype, sides times ``scale``.
        - ndarray float32/float64 in [0, 1] (same layouts) -> same dtype and layout in [0, 1].
          Read-only arrays (``np.asarray(pil_image)``) are copied, so no warning is raised.
        - PIL image (L, RGB, RGBA, I;16; other modes converted to RGB/RGBA) -> PIL image.
        - Image -> Image (alpha and ICC profile carried, path None).
        - tensor (C, H, W) or (B, C, H, W) float in the model's value range -> float tensor
          (.., C_out, H*scale, W*scale) on the input's device, not clamped.

        ``progress(done, total)`` is called after each batch of tiles: ``done`` counts tile
        forward passes (InstanceNorm measuring passes included), rises to ``total`` at the end.
        ``total`` covers every pass over the input (the alpha plane through the model too) and
        can grow only when an out-of-memory retry starts the image again with smaller tiles.
        """
        if isinstance(image, torch.Tensor):
            return self.run_tensor(image, progress=progress)
        if isinstance(image, np.ndarray):
            return self._run_array(image, progress)
        if isinstance(image, image_io.Image):
            return self.run_image(image, progress=progress)
        if isinstance(image, PIL.Image.Image):
            return self._run_pil(image, progress)
        raise TypeError(
            "Engine accepts a numpy array (uint8/uint16, or float32/float64 in [0, 1]), a PIL image, "
            f"an img2img Image or a torch tensor, got {type(image).__name__}"
        )

    def _run_array(self, pixels: np.ndarray, progress: Progress | None) -> np.ndarray:
        if pixels.dtype in (np.float32, np.float64):
            # Floats in [0, 1] go through the 16-bit path so little precision is lost before the model.
            as16 = np.round(np.clip(pixels, 0.0, 1.0) * 65535.0).astype(np.uint16)
            return (self.run_pixels(as16, progress=progress) / 65535.0).astype(pixels.dtype)
        if not pixels.flags.writeable:
            # torch warns on non-writable arrays (e.g. np.asarray of a PIL image); a copy avoids it.
            pixels = np.array(pixels)
        return self.run_pixels(pixels, progress=progress)

    def _run_pil(self, image: PIL.Image.Image, progress: Progress | None) -> PIL.Image.Image:
        if image.mode not in ("L", "RGB", "RGBA", "I;16"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        return PIL.Image.fromarray(self._run_array(np.array(image), progress))

    def run_image(self, image: image_io.Image, *, progress: Progress | None = None) -> image_io.Image:
        """Translate / upscale an ``Image``: colour through the model, alpha resized beside it."""
        _check_pixels(image.pixels)
        counter = _Counter(progress)
        counter.expect(self._passes(image.pixels, image.alpha is not None) * self._work(image.height, image.width))
        pixels = self._pixels(image.pixels, counter)
        alpha = None if image.alpha is None else self._resize_alpha(image.alpha, counter)
        return replace(image, pixels=pixels, alpha=alpha, path=None)

    def run_pixels(self, pixels: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """Run on (H, W), (H, W, 1|3|4) uint8/uint16 pixels; returns the same layout and dtype, scaled."""
        _check_pixels(pixels)
        counter = _Counter(progress)
        counter.expect(self._passes(pixels, False) * self._work(*pixels.shape[:2]))
        return self._pixels(pixels, counter)

    def run_tensor(self, x: torch.Tensor, *, progress: Progress | None = None) -> torch.Tensor:
        """Run on (C, H, W) or (B, C, H, W) float input in the model's value range.

        Returns (.., C_out, H*scale, W*scale) float32 on ``x``'s device, not clamped. The output is
        one float tensor (that is what the caller asked for); use pixels for bounded memory.
        """
        if x.dim() == 3:
            return self.run_tensor(x[None], progress=progress)[0]
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(
                f"expected a float (C, H, W) or (B, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}"
            )
        b, channels, height, width = x.shape
        scale = self.model.scale
        out = torch.empty(b, output_channels(channels, self.model.out_channels), height * scale, width * scale)
        counter = _Counter(progress)
        counter.expect(b * self._work(height, width))
        for i in range(b):
            source = TensorSource(x[i].detach().float().cpu(), channels=self.model.in_channels)
            self._run(source, TensorSink(out[i]), counter)
        return out.to(x.device)

    # ------------------------------------------------------------------- planning

    def resolve_tile(self, height: int, width: int) -> int:
        """The tile side in input pixels an image of ``height`` x ``width`` starts with (0: whole image)."""
        if self.tile != "auto":
            return int(self.tile)
        if auto_runs_whole(
            height,
            width,
            overlap=self.overlap,
            device_type=self.device.type,
            instance_norm=bool(self.norm_layers),
        ):
            return 0
        if self._device_tile is None:
            self._device_tile = self._measure_device_tile()
        return auto_tile(self._device_tile, overlap=self.overlap, multiple=self.model.size_multiple)

    def plan(self, height: int, width: int, tile: int) -> TilePlan:
        """Tile rows and columns for an image of ``height`` x ``width`` input pixels and ``tile``."""
        return plan_tiles(
            height,
            width,
            tile=tile,
            overlap=self.overlap,
            multiple=self.model.size_multiple,
            min_size=self.model.min_size,
            fixed=self.fixed_shape,
        )

    def plan_for(self, height: int, width: int) -> TilePlan:
        """The tile plan an image of ``height`` x ``width`` starts with."""
        return self.plan(height, width, self.resolve_tile(height, width))

    def _measured_passes(self, plan: TilePlan) -> int:
        """Tiled passes that measure InstanceNorm statistics before the output pass (0: none needed,
        e.g. one tile is the whole image and InstanceNorm sees all of it by itself)."""
        return len(self.norm_layers) if plan.count > 1 else 0

    def _work(self, height: int, width: int) -> int:
        """Tile forward passes one run over an image of this size starts out needing (progress)."""
        plan = self.plan_for(height, width)
        return plan.count * (1 + self._measured_passes(plan))

    def _passes(self, pixels: np.ndarray, alpha: bool) -> int:
        """Runs of the model over an image: the colour, and the alpha plane with ``alpha="model"``."""
        alpha = alpha or (pixels.ndim == 3 and pixels.shape[2] == 4)
        return 1 + int(alpha and self.alpha == "model" and self.model.scale > 1)

    def _measure_device_tile(self) -> int:
        m = self.model.size_multiple
        if self.device.type != "cuda" or not isinstance(self.runner, TorchRunner):
            return fixed_device_tile(self.device.type, multiple=m)
        # Measure the memory one probe tile needs and scale by area: activations grow with pixels.
        probe = round_up(max(CUDA_PROBE_TILE, self.model.min_size), m)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self._run_batch(torch.zeros(1, self.model.in_channels, probe, probe))
        per_pixel = (torch.cuda.max_memory_allocated(self.device) - base) / probe**2
        free, _ = torch.cuda.mem_get_info(self.device)
        tile = tile_for_memory(free_bytes=free, bytes_per_pixel=per_pixel, batch=self.batch, multiple=m)
        log.info("tile auto: %d px (%.0f MiB free, %.1f KiB per pixel)", tile, free / 2**20, per_pixel / 1024)
        return tile

    # ------------------------------------------------------------------- running one image

    def _pixels(self, pixels: np.ndarray, counter: _Counter) -> np.ndarray:
        if pixels.ndim == 2:
            return self._pixels(pixels[:, :, None], counter)[:, :, 0]
        if pixels.shape[2] == 4:
            colour = self._pixels(pixels[:, :, :3], counter)
            alpha = self._resize_alpha(pixels[:, :, 3], counter)
            return np.concatenate([colour, alpha[:, :, None]], axis=2)
        height, width, channels = pixels.shape
        scale, value_range = self.model.scale, self.model.value_range
        out = np.empty(
            (height * scale, width * scale, output_channels(channels, self.model.out_channels)), pixels.dtype
        )
        source = PixelSource(pixels, value_range=value_range, channels=self.model.in_channels)
        self._run(source, PixelSink(out, value_range=value_range), counter)
        return out

    def _resize_alpha(self, alpha: np.ndarray, counter: _Counter) -> np.ndarray:
        """(H, W) alpha -> (H*scale, W*scale), same dtype."""
        scale = self.model.scale
        if scale == 1:
            return alpha.copy()
        if self.alpha == "model":
            return self._pixels(alpha[:, :, None], counter)[:, :, 0]
        import cv2  # only here: bicubic resize straight in uint8/uint16, no float copy of the plane

        h, w = alpha.shape
        return cv2.resize(alpha, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)

    def _run(self, source: PixelSource | TensorSource, sink: PixelSink | TensorSink, counter: _Counter) -> None:
        """Run one image; on out-of-memory halve the tile and start that image again."""
        plan = self.plan_for(source.height, source.width)
        while True:
            passes = self._measured_passes(plan)
            log.info(
                "%d x %d px: %s%s, batch %d",
                source.width,
                source.height,
                plan.describe(),
                f", {passes} InstanceNorm measuring passes" if passes else "",
                self.batch,
            )
            started = counter.done
            try:
                with torch.inference_mode():  # blending and statistics too, not only the network
                    self._run_plan(source, sink, plan, counter)
                return
            except Exception as error:  # only out-of-memory is retried; everything else propagates
                if not is_out_of_memory(error):
                    raise
                tile = smaller_tile(plan, multiple=self.model.size_multiple, min_size=self.model.min_size)
                if tile is None:
                    hint = "; try a smaller --batch" if self.batch > 1 else ""
                    raise InferenceError(
                        f"out of memory even with {plan.rows.tile}x{plan.cols.tile}-px tiles{hint}"
                    ) from error
            # Here, past the except block, the failed attempt's tensors are no longer referenced.
            log.warning(
                "out of memory with %dx%d-px tiles: retrying this image with %d px", plan.rows.tile, plan.cols.tile, tile
            )
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = self.plan(source.height, source.width, tile)
            counter.replan(
                spent=counter.done - started,
                planned=plan.count * (1 + passes),
                new=smaller.count * (1 + self._measured_passes(smaller)),
            )
            plan = smaller

    def _run_plan(
        self, source: PixelSource | TensorSource, sink: PixelSink | TensorSink, plan: TilePlan, counter: _Counter
    ) -> None:
        statistics: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self._measured_passes(plan):
            self._check_runner_for_statistics()
            stats = instance_norm.measure_stats(
                self.model.net,
                self.norm_layers,
                self._run_batch,
                source.read,
                rows=plan.rows,
                cols=plan.cols,
                multiple=self.model.size_multiple,
                batch=self.batch,
                map_batch=self._map,
                on_batch=counter.advance,
            )
            statistics = instance_norm.frozen(self.model.net, self.norm_layers, stats)
        with statistics:
            tiled_forward(
                self._forward,
                source.read,
                sink.write,
                rows=plan.rows,
                cols=plan.cols,
                scale=self.model.scale,
                out_channels=self.model.out_channels,
                batch=self.batch,
                fixed_batch=self.fixed_shape,
                on_batch=lambda tiles: counter.advance(len(tiles)),
            )

    def _check_runner_for_statistics(self) -> None:
        runner = self.runner
        if not (isinstance(runner, TorchRunner) and runner.net is self.model.net and not runner.compiled):
            raise InferenceError(
                "tiling an InstanceNorm model needs the eager torch runner (whole-image statistics "
                "come from its layers); run whole images (tile 0) with this runner"
            )

    # ------------------------------------------------------------------- one batch of tiles

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w) CPU float32 -> (B, C_out, h*scale, w*scale) CPU float32."""
        parts = self._map(self._run_batch, x)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _run_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x.to(self.device, non_blocking=True)).float().cpu()

    def _map(self, fn: Callable[[torch.Tensor], T], x: torch.Tensor) -> list[T]:
        """``fn`` over the batch: its samples side by side on the tile pool, or all at once here."""
        if self._pool is None or x.shape[0] == 1:
            return [fn(x)]
        return self._pool.map(fn, x)


class _Counter:
    """Tile forward passes done and expected for one call, reported to a ``progress`` callback."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.done = 0
        self.total = 0

    def expect(self, passes: int) -> None:
        self.total += passes

    def advance(self, passes: int) -> None:
        self.done += passes
        if self.progress is not None:
            self.progress(self.done, self.total)

    def replan(self, *, spent: int, planned: int, new: int) -> None:
        """An image restarts with a new plan: what the old one still had to do is replaced by ``new``."""
        self.total += new - (planned - spent)


def _check_overlap_fits(model: ModelDescriptor, tile: int, overlap: int) -> None:
    """An explicit overlap must be under half the tile (both as the network rounds them): more
    would recompute most pixels several times, and the plan used to shrink it without a word."""
    side = round_up(max(tile, model.min_size), model.size_multiple)
    shared = round_up(overlap, model.size_multiple)
    if 2 * shared >= side:
        raise ValueError(
            f"overlap {overlap} is not under half the tile {tile}"
            + (f" (rounded to this network's multiple of {model.size_multiple}: {shared} of {side})"
               if (shared, side) != (overlap, tile) else "")
            + f"; use --overlap {max(0, (side - 1) // 2 // model.size_multiple * model.size_multiple)} "
            f"or less, or a larger --tile"
        )


def _check_finite_weights(net: torch.nn.Module) -> None:
    """Refuse a network with NaN/Inf weights once, up front: it would fail every image alike."""
    for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InferenceError(
                f"the model's weights hold NaN or infinite values ({name}); it cannot produce images "
                f"(a diverged or damaged file: export it again from a good checkpoint)"
            )


def _check_pixels(pixels: np.ndarray) -> None:
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected uint8 or uint16 pixels, got {pixels.dtype} (floats in [0, 1] are accepted too)")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (1, 3, 4))):
        raise ValueError(f"expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) pixels, got {pixels.shape}")
