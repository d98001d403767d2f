"""The public record of the package: ``Image``, ``ImageIOError``, the suffixes and limits, listing.

Also the two small facts both codecs share (an ICC profile's colour space, OpenCV's error text).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})

# BT.601 luma weights (R, G, B): colour -> gray for 1-channel models and colour-space maths.
BT601_LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)

# Decompression-bomb guard: a 250 MP image is already ~750 MB as 8-bit RGB (1.5 GB at 16 bits).
DEFAULT_MAX_PIXELS: int = 250_000_000


class ImageIOError(Exception):
    """One error type for every read/write failure. ``str(err) == f"{path}: {reason}"``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        # Both go to args so the error pickles (DataLoader workers send errors between processes).
        super().__init__(path, reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Image:
    """Decoded pixels plus what must travel with them.

    pixels: (H, W, C), C in {1, 3}, RGB order, uint8 or uint16, C-contiguous.
    alpha: (H, W), same dtype as pixels (straight, not premultiplied), or None.
    path: the file it was read from, if any. icc_profile: the embedded ICC profile, if any.
    exif: the EXIF block (TIFF-structured bytes, no ``Exif\\0\\0`` header), its Orientation set to 1
    (the pixels are upright), or None. dpi: (horizontal, vertical) dots per inch, or None.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    path: Path | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_fields(self.pixels, self.alpha)
        self.pixels = np.ascontiguousarray(self.pixels)
        if self.alpha is not None:
            self.alpha = np.ascontiguousarray(self.alpha)
        if self.path is not None:
            self.path = Path(self.path)

    @property
    def bit_depth(self) -> int:
        """8 or 16."""
        return 8 * self.pixels.dtype.itemsize

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        """Colour channels (1 or 3); alpha is not counted."""
        return int(self.pixels.shape[2])


def check_fields(pixels: object, alpha: object) -> None:
    """ValueError unless pixels is (H, W, 1|3) uint8/uint16 and alpha None or (H, W) of the same dtype."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(
            f"pixels must be an (H, W, 1|3) array, got {getattr(pixels, 'shape', type(pixels).__name__)}"
        )
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, got {pixels.dtype}")
    if alpha is not None and (
        not isinstance(alpha, np.ndarray) or alpha.shape != pixels.shape[:2] or alpha.dtype != pixels.dtype
    ):
        raise ValueError(
            f"alpha must be an (H, W) = {pixels.shape[:2]} array of {pixels.dtype}, "
            f"got {getattr(alpha, 'shape', type(alpha).__name__)} {getattr(alpha, 'dtype', '')}"
        )


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the suffix is one we read and write (case-insensitive); the content is not opened."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


def list_image_files(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Image files (by suffix) in ``folder``, sorted; hidden names (``.x``) and what is under them skipped.

    The one listing rule for every command that takes a folder of images (training data, the folder
    pipeline, eval), so a file is never an input to one command and invisible to another.
    """
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file()
        and is_image_path(p)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def icc_colour_space(icc: bytes) -> str:
    """The data colour space signature of an ICC profile header (bytes 16..19), e.g. 'RGB ', 'GRAY'."""
    return icc[16:20].decode("latin-1") if len(icc) >= 20 else ""


def cv_message(err: Exception) -> str:
    """The last non-empty line of an OpenCV error (the rest is its source location)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


_EXIF_BYTE_ORDER = {b"II*\x00": "<", b"MM\x00*": ">"}
_ORIENTATION_TAG = 0x0112
_SHORT = 3  # TIFF field type


def upright_exif(raw: bytes) -> bytes | None:
    """``raw`` EXIF (TIFF-structured bytes) with its Orientation set to 1, or None if unreadable.

    Patched in place rather than re-serialised, so every other tag (maker notes with their own
    offsets included) stays byte for byte as the camera wrote it.
    """
    order = _EXIF_BYTE_ORDER.get(raw[:4])
    if order is None or len(raw) < 8:
        return None
    ifd = struct.unpack_from(order + "I", raw, 4)[0]
    if ifd + 2 > len(raw):
        return None
    count = struct.unpack_from(order + "H", raw, ifd)[0]
    if ifd + 2 + 12 * count > len(raw):
        return None
    out = bytearray(raw)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind = struct.unpack_from(order + "HH", raw, entry)
        if tag == _ORIENTATION_TAG and kind == _SHORT:
            struct.pack_into(order + "H", out, entry + 8, 1)  # a SHORT sits at the start of the value field
    return bytes(out)
