"""Dataset tools behind ``img2img data``: combine, split, degrade, edges.

Each tool works file by file: a file that fails is recorded in the :class:`ToolReport` with a
one-line reason naming it, and the others are still written (atomically, by ``image_io``). Layout
problems that make the whole job impossible (missing folder, output inside an input) raise DataError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from img2img.data.augment import to_channels
from img2img.data.degrade import DEGRADATIONS, degrade
from img2img.data.errors import DataError
from img2img.data.files import list_images, stem_index
from img2img.image_io import (
    Image,
    ImageIOError,
    pixels_to_tensor,
    read_image,
    resize_pixels,
    tensor_to_pixels,
    write_image,
)


@dataclass
class ToolReport:
    """What a tool did: files written and one-line failures (``"path: reason"``)."""

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _write(path: Path, pixels: np.ndarray) -> None:
    write_image(path, Image(pixels=pixels, alpha=None, path=path, icc_profile=None))


def _read(path: Path) -> np.ndarray:
    pixels = read_image(path).pixels
    return pixels[..., None] if pixels.ndim == 2 else pixels


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """(H, W, C) pixels as uint8 (16-bit rescaled through image_io's conversion)."""
    if pixels.dtype == np.uint8:
        return pixels
    return tensor_to_pixels(pixels_to_tensor(pixels, (0.0, 1.0)), np.uint8, (0.0, 1.0))


def _prepare_out(out_dir: str | Path, *inputs: str | Path) -> Path:
    out = Path(out_dir)
    for src in inputs:
        if out.resolve() == Path(src).resolve():
            raise DataError(f"{out}: the output folder must differ from the input folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _each(report: ToolReport, paths: list[Path], work: Callable[[Path], list[Path]]) -> ToolReport:
    for path in paths:
        try:
            report.written.extend(work(path))
        except (ImageIOError, DataError) as e:
            msg = str(e)
            report.failed.append(msg if msg.startswith(str(path)) else f"{path}: {msg}")
    return report


def _suffix(path: Path, ext: str | None) -> str:
    if ext is None:
        return path.suffix.lower()
    return ext if ext.startswith(".") else f".{ext}"


def _match_dtype_channels(a: np.ndarray, b: np.ndarray, pa: Path, pb: Path) -> tuple[np.ndarray, np.ndarray]:
    if a.dtype != b.dtype:
        raise DataError(
            f"{pb}: {b.dtype} pixels but its partner {pa} has {a.dtype}; convert one of them first"
        )
    channels = max(a.shape[2], b.shape[2])
    return to_channels(a, channels), to_channels(b, channels)


def combine(
    a_dir: str | Path, b_dir: str | Path, out_dir: str | Path, *, ext: str | None = None
) -> ToolReport:
    """Write ``out_dir/<stem><ext>`` = A | B side by side for every stem found in both folders.

    Images of a pair must have the same size; a gray image next to an RGB one is made RGB. A file
    without a partner is a failure naming it. ``ext`` defaults to the A file's suffix.
    """
    a_index, b_index = stem_index(list_images(a_dir)), stem_index(list_images(b_dir))
    out = _prepare_out(out_dir, a_dir, b_dir)
    report = ToolReport()
    for stem, path in b_index.items():
        if stem not in a_index:
            report.failed.append(f"{path}: no partner with stem '{stem}' in {a_dir}")

    def work(pa: Path) -> list[Path]:
        pb = b_index.get(pa.stem)
        if pb is None:
            raise DataError(f"{pa}: no partner with stem '{pa.stem}' in {b_dir}")
        a, b = _match_dtype_channels(_read(pa), _read(pb), pa, pb)
        if a.shape[:2] != b.shape[:2]:
            raise DataError(
                f"{pb}: {b.shape[0]}x{b.shape[1]} does not match {pa} ({a.shape[0]}x{a.shape[1]})"
            )
        target = out / f"{pa.stem}{_suffix(pa, ext)}"
        _write(target, np.concatenate([a, b], axis=1))
        return [target]

    return _each(report, list(a_index.values()), work)


def split(ab_dir: str | Path, out_dir: str | Path, *, prefix: str = "", ext: str | None = None) -> ToolReport:
    """The reverse of :func:`combine`: ``out_dir/{prefix}A/<stem>`` and ``out_dir/{prefix}B/<stem>``.

    An image of width w gives A = columns [0, w//2) and B = [w//2, 2*(w//2)), as the datasets read it.
    ``prefix="train"`` writes ``trainA``/``trainB``, the A/B folder layout of a paired dataset.
    """
    files = list_images(ab_dir)
    out = _prepare_out(out_dir, ab_dir)
    a_out, b_out = out / f"{prefix}A", out / f"{prefix}B"
    a_out.mkdir(exist_ok=True)
    b_out.mkdir(exist_ok=True)

    def work(path: Path) -> list[Path]:
        pixels = _read(path)
        half = pixels.shape[1] // 2
        if half < 1:
            raise DataError(f"{path}: too narrow to hold A and B side by side")
        name = f"{path.stem}{_suffix(path, ext)}"
        _write(a_out / name, np.ascontiguousarray(pixels[:, :half]))
        _write(b_out / name, np.ascontiguousarray(pixels[:, half : 2 * half]))
        return [a_out / name, b_out / name]

    return _each(ToolReport(), files, work)


def degrade_folder(
    hr_dir: str | Path,
    out_dir: str | Path,
    *,
    scale: int,
    degradation: str = "bicubic",
    seed: int = 0,
    ext: str = ".png",
) -> ToolReport:
    """Write an LR image ``out_dir/<stem><ext>`` for every HR image (SR evaluation sets).

    HR sides are first cut to multiples of ``scale`` (SR benchmarks' "mod crop"), so LR side *
    scale == the cut HR side. The bit depth and channel count of each file are kept. With
    ``degradation="realesrgan"`` the draw for file i comes from ``(seed, i)``: reruns are identical.
    """
    if scale < 1:
        raise DataError(f"scale must be a positive integer, got {scale}")
    if degradation not in DEGRADATIONS:
        raise DataError(f"unknown degradation '{degradation}'; choose from {', '.join(DEGRADATIONS)}")
    files = list_images(hr_dir)
    out = _prepare_out(out_dir, hr_dir)
    index = {p: i for i, p in enumerate(files)}

    def work(path: Path) -> list[Path]:
        hr = _read(path)
        h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
        if h == 0 or w == 0:
            raise DataError(f"{path}: {hr.shape[0]}x{hr.shape[1]} is smaller than the scale {scale}")
        hr_t = pixels_to_tensor(np.ascontiguousarray(hr[:h, :w]), (0.0, 1.0))
        lr_t = degrade(hr_t, scale, degradation, np.random.default_rng([seed, index[path]]))
        target = out / f"{path.stem}{_suffix(path, ext)}"
        _write(target, tensor_to_pixels(lr_t, hr.dtype, (0.0, 1.0)))
        return [target]

    return _each(ToolReport(), files, work)


def edge_map(pixels: np.ndarray, *, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Black edges on white, (H, W, 3) uint8, from (H, W, C) uint8/uint16 pixels (Canny).

    Thresholds default to 0.66x and 1.33x the median of the slightly blurred gray image, a common
    automatic choice that adapts to the photo's contrast.
    """
    gray = to_channels(to_uint8(pixels), 1)[..., 0]
    gray = cv2.GaussianBlur(gray, (5, 5), 1.0)
    median = float(np.median(gray))
    lo = 0.66 * median if low is None else low
    hi = max(lo + 1, 1.33 * median) if high is None else high
    edges = cv2.Canny(gray, lo, hi)
    return np.repeat((255 - edges)[..., None], 3, axis=2)


def edges(
    src: str | Path,
    out_dir: str | Path,
    *,
    size: int | None = None,
    low: float | None = None,
    high: float | None = None,
) -> ToolReport:
    """The edges2photo recipe: for each photo write ``out_dir/<stem>.png`` = edges | photo (RGB, 8-bit).

    ``src`` is a folder of photos or one file. ``size`` first resizes each photo to size x size (the
    reference edges2shoes sets are 256 x 256 per side). Read it back as a paired dataset (A = edges).
    """
    src = Path(src)
    files = [src] if src.is_file() else list_images(src)
    out = _prepare_out(out_dir, src)

    def work(path: Path) -> list[Path]:
        photo = to_uint8(to_channels(_read(path), 3))
        if size is not None:
            photo = resize_pixels(photo, (size, size))
        target = out / f"{path.stem}.png"
        _write(target, np.concatenate([edge_map(photo, low=low, high=high), photo], axis=1))
        return [target]

    return _each(ToolReport(), files, work)
