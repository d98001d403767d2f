"""Encoding: ``Image`` -> bytes -> file. OpenCV encodes; what it cannot write is built here (a gray+alpha
PNG, TIFF tags for alpha and ICC) or left to Pillow (8-bit gray+alpha TIFF). Files are written atomically.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

from img2img.atomic import replacing
from img2img.image_io._native import native_messages, warn_each
from img2img.image_io._record import (
    SUPPORTED_SUFFIXES,
    Image,
    ImageIOError,
    check_fields,
    cv_message,
    icc_colour_space,
    upright_exif,
)

# OpenCV >= 4.13 embeds ICC profiles and EXIF in PNG/JPEG/WebP; 4.12 accepts them and writes nothing.
_MIN_OPENCV_FOR_ICC = (4, 13)

_SUFFIX_FORMAT = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}


def write_image(path: str | os.PathLike[str], image: Image, *, quality: int = 95) -> None:
    """Write ``image`` to ``path``; the format comes from the suffix. Atomic: the file appears complete or not at all.

    What a format cannot hold is converted (docs/image_io.md): 16-bit becomes 8-bit (rounded) in
    JPEG/WebP/BMP; JPEG drops alpha; WebP stores gray as RGB. ``quality`` (1..100) applies to JPEG
    and WebP. Parent directories are created.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ImageIOError(
            path,
            f"unsupported suffix {path.suffix!r} for writing (use one of {', '.join(sorted(SUPPORTED_SUFFIXES))})",
        )
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
    try:
        check_fields(image.pixels, image.alpha)  # fields may have been replaced since construction
    except ValueError as err:
        raise ImageIOError(path, f"cannot write: {err}") from None
    data = _encode(path, _SUFFIX_FORMAT[suffix], image, quality)
    _write_atomic(path, data)


def _encode(path: Path, fmt: str, image: Image, quality: int) -> bytes:
    colour, alpha, icc = image.pixels, image.alpha, image.icc_profile
    if fmt in ("JPEG", "WEBP", "BMP") and colour.dtype == np.uint16:
        colour, alpha = _to_uint8(colour), None if alpha is None else _to_uint8(alpha)
    if fmt == "JPEG":
        alpha = None
    gray = colour.shape[2] == 1
    if gray and (fmt == "WEBP" or (alpha is not None and fmt == "BMP")):
        colour, gray = np.repeat(colour, 3, axis=2), False  # WebP has no gray; BMP no gray+alpha
    if gray and alpha is not None and fmt == "TIFF" and colour.dtype == np.uint16:
        # Neither OpenCV nor Pillow reads 16-bit gray+alpha TIFFs back: store it as RGBA.
        colour, gray = np.repeat(colour, 3, axis=2), False
    if icc is not None and (fmt == "BMP" or icc_colour_space(icc) != ("GRAY" if gray else "RGB ")):
        icc = None  # BMP: OpenCV cannot embed one; a gray profile cannot describe RGB pixels
    # EXIF where the format has a block for it (a TIFF's EXIF would be its own tags: not carried);
    # its orientation is 1 whatever the caller set, since the pixels are written as they are.
    exif = upright_exif(image.exif) if image.exif and fmt in ("JPEG", "PNG", "WEBP") else None
    dpi = image.dpi if fmt != "WEBP" else None  # WebP states no resolution outside EXIF

    if gray and alpha is not None:
        if fmt == "PNG":
            return _png_gray_alpha(colour[:, :, 0], alpha, icc, exif, dpi)
        return _tiff_gray_alpha_8bit(path, colour[:, :, 0], alpha, icc, dpi)

    if gray:
        array = colour[:, :, 0]
    elif alpha is None:
        array = cv2.cvtColor(colour, cv2.COLOR_RGB2BGR)
    else:
        array = np.concatenate([cv2.cvtColor(colour, cv2.COLOR_RGB2BGR), alpha[:, :, None]], axis=2)
    params = {"JPEG": [cv2.IMWRITE_JPEG_QUALITY, quality], "WEBP": [cv2.IMWRITE_WEBP_QUALITY, quality]}.get(
        fmt, []
    )
    ext = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}[fmt]
    metadata = [] if fmt == "TIFF" or icc is None else [(cv2.IMAGE_METADATA_ICCP, icc)]
    metadata += [] if exif is None else [(cv2.IMAGE_METADATA_EXIF, exif)]
    try:
        if metadata:
            _require_opencv_metadata(path)
            kinds, blocks = zip(*metadata, strict=True)
            with native_messages() as messages:
                ok, buf = cv2.imencodeWithMetadata(
                    ext, array, list(kinds), [np.frombuffer(b, np.uint8) for b in blocks], params
                )
        else:
            with native_messages() as messages:
                ok, buf = cv2.imencode(ext, array, params)
    except cv2.error as err:
        raise ImageIOError(path, f"cannot encode as {fmt}: {cv_message(err)}") from err
    if not ok:
        raise ImageIOError(path, f"cannot encode as {fmt} (OpenCV's encoder failed)")
    warn_each(path, messages)
    data = buf.tobytes()
    if fmt == "TIFF":
        tags = []
        if alpha is not None:  # OpenCV leaves the fourth sample unlabelled; declare it unassociated alpha
            tags.append((338, 3, 1, struct.pack("<H", 2)))
        if icc is not None:  # OpenCV's TIFF encoder cannot embed a profile
            tags.append((34675, 7, len(icc), icc))
        if dpi is not None:
            tags += _tiff_resolution_tags(dpi)
        if tags:
            data = _tiff_with_tags(path, data, tags)
    elif dpi is not None:
        data = _with_dpi(fmt, data, dpi)
    return data


def _tiff_resolution_tags(dpi: tuple[float, float]) -> list[tuple[int, int, int, bytes]]:
    """XResolution, YResolution (RATIONAL, in thousandths) and ResolutionUnit = inch."""
    rational = [struct.pack("<II", max(1, round(d * 1000)), 1000) for d in dpi]
    return [(282, 5, 1, rational[0]), (283, 5, 1, rational[1]), (296, 3, 1, struct.pack("<H", 2))]


def _with_dpi(fmt: str, data: bytes, dpi: tuple[float, float]) -> bytes:
    """PNG/JPEG/BMP bytes as OpenCV encoded them, with the resolution set to ``dpi``."""
    if fmt == "PNG":  # a pHYs chunk (pixels per metre) right after IHDR, which is 8 + 25 bytes
        return data[:33] + _png_phys(dpi) + data[33:]
    if fmt == "JPEG" and data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00":
        # JFIF APP0 at the start: units at byte 13 (1 = dots per inch), X/Y density at 14..17.
        density = struct.pack(">BHH", 1, *(min(max(round(d), 1), 65535) for d in dpi))
        return data[:13] + density + data[18:]
    if fmt == "BMP":  # BITMAPINFOHEADER's pixels per metre at bytes 38..45
        per_metre = struct.pack("<ii", *(round(d / 0.0254) for d in dpi))
        return data[:38] + per_metre + data[46:]
    return data


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8, rounded: round(v * 255 / 65535) == (v + 128) // 257 (257 is odd, so no ties)."""
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _require_opencv_metadata(path: Path) -> None:
    version = tuple(int(part) for part in re.findall(r"\d+", cv2.__version__)[:2])
    if version < _MIN_OPENCV_FOR_ICC:
        raise ImageIOError(
            path,
            f"embedding the ICC profile or EXIF needs OpenCV >= {'.'.join(map(str, _MIN_OPENCV_FOR_ICC))} "
            f"(installed: {cv2.__version__}); upgrade opencv-python-headless or drop image.icc_profile "
            "and image.exif",
        )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_phys(dpi: tuple[float, float]) -> bytes:
    """A pHYs chunk: pixels per metre, unit 1 (metre)."""
    return _png_chunk(b"pHYs", struct.pack(">IIB", *(round(d / 0.0254) for d in dpi), 1))


def _png_gray_alpha(
    gray: np.ndarray,
    alpha: np.ndarray,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
) -> bytes:
    """A gray+alpha PNG (colour type 4, 8 or 16 bits), which OpenCV's encoder cannot write."""
    height, width = gray.shape
    depth = 8 * gray.dtype.itemsize
    rows = (
        np.stack([gray, alpha], axis=2).astype(f">u{gray.dtype.itemsize}").view(np.uint8).reshape(height, -1)
    )
    up = rows.copy()
    up[1:] -= rows[:-1]  # PNG filter 2 ("Up"): difference to the row above, modulo 256
    scanlines = np.concatenate([np.full((height, 1), 2, np.uint8), up], axis=1)
    compressed = zlib.compress(scanlines.tobytes(), 6)
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0))]
    if icc is not None:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if dpi is not None:
        chunks.append(_png_phys(dpi))
    if exif is not None:
        chunks.append(_png_chunk(b"eXIf", exif))
    step = 1 << 30  # a chunk holds at most 2**31 - 1 bytes
    chunks += [_png_chunk(b"IDAT", compressed[i : i + step]) for i in range(0, len(compressed), step)]
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _tiff_gray_alpha_8bit(
    path: Path, gray: np.ndarray, alpha: np.ndarray, icc: bytes | None, dpi: tuple[float, float] | None
) -> bytes:
    """An 8-bit gray+alpha TIFF, which OpenCV's encoder cannot write; Pillow's can."""
    out = io.BytesIO()
    extra: dict[str, object] = {} if icc is None else {"icc_profile": icc}
    if dpi is not None:
        extra["dpi"] = dpi
    try:
        PIL.Image.fromarray(np.stack([gray, alpha], axis=2)).save(
            out, "TIFF", compression="tiff_adobe_deflate", **extra
        )
    except Exception as err:
        raise ImageIOError(path, f"cannot encode as TIFF: {err}") from err
    return out.getvalue()


def _tiff_with_tags(path: Path, data: bytes, tags: Sequence[tuple[int, int, int, bytes]]) -> bytes:
    """Add or replace tags (tag, type, count, little-endian value bytes) in a one-IFD little-endian TIFF.

    The new IFD and long values are appended at the end and the header is pointed at the new IFD;
    the old IFD stays as unreferenced bytes, so no offset inside the file changes.
    """
    if data[:4] != b"II*\x00":
        raise ImageIOError(
            path,
            "cannot add TIFF tags: OpenCV wrote an unexpected TIFF layout (not little-endian classic TIFF)",
        )
    ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, ifd)[0]
    entries = {
        struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0]: data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        for i in range(count)
    }
    next_ifd = data[ifd + 2 + 12 * count : ifd + 6 + 12 * count]
    out = bytearray(data)
    for tag, kind, n, value in tags:
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            out += b"\x00" * (len(out) % 2)  # values start on a word boundary
            field = struct.pack("<I", len(out))
            out += value
        entries[tag] = struct.pack("<HHI", tag, kind, n) + field
    out += b"\x00" * (len(out) % 2)
    new_ifd = len(out)
    out += struct.pack("<H", len(entries)) + b"".join(entries[t] for t in sorted(entries)) + next_ifd
    if len(out) >= 1 << 32:
        raise ImageIOError(path, "cannot add TIFF tags: the file would exceed 4 GiB")
    struct.pack_into("<I", out, 4, new_ifd)
    return bytes(out)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden temporary name beside ``path``, then rename over it: never a half file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageIOError(path, f"cannot create directory {path.parent}: {err.strerror or err}") from err
    try:
        with replacing(path) as tmp:
            tmp.write_bytes(data)
    except OSError as err:
        raise ImageIOError(path, f"cannot write: {err.strerror or err}") from err
