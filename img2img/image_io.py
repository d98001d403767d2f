"""Reading and writing image files: the one place that touches image bytes.

Pixels are decoded and encoded by OpenCV; Pillow only parses headers (size, EXIF orientation, ICC
profile), never pixels, except for 8-bit TIFFs with alpha (see ``_needs_pillow_decode``).

An ``Image`` holds (H, W, C) pixels, C in {1, 3}, RGB order, uint8 or uint16, with the alpha channel
split off. ``pixels_to_tensor`` / ``tensor_to_pixels`` are the only conversions between those
pixels and the float (C, H, W) tensors the engine works in. Decisions are written up in
docs/image_io.md.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "Image",
    "ImageIOError",
    "BT601_LUMA",
    "is_image_path",
    "list_image_files",
    "pixels_to_tensor",
    "read_image",
    "remove_stale_temporaries",
    "temporary_name",
    "tensor_to_pixels",
    "write_image",
]

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})

# BT.601 luma weights (R, G, B): colour -> gray for 1-channel models and colour-space maths.
BT601_LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)

# Decompression-bomb guard: a 250 MP image is already ~750 MB as 8-bit RGB (1.5 GB at 16 bits).
DEFAULT_MAX_PIXELS: int = 250_000_000

# OpenCV >= 4.13 embeds ICC profiles in PNG/JPEG/WebP; 4.12 accepts them and writes nothing.
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
# Pillow format names -> ours. MPO is a JPEG with more pictures appended (many camera files); Pillow's
# JPEG opener returns it, so it is not a name to open with.
_PILLOW_FORMATS = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "WEBP": "WEBP",
    "TIFF": "TIFF",
    "BMP": "BMP",
    "DIB": "BMP",
}
_PILLOW_OPENERS = ["PNG", "JPEG", "WEBP", "TIFF", "BMP", "DIB"]
# Leading bytes of each format, to tell a damaged image from a file that is no image at all.
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",
    b"MM\x00+": "TIFF",
    b"BM": "BMP",
}
_NOT_AN_IMAGE = "not a recognised image file (expected JPEG, PNG, WebP, TIFF or BMP data)"
_SNIFF_BYTES = 16  # enough for every signature above and WebP's RIFF....WEBP
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ORIENTATION_TAG = 0x0112

# Pillow's own bomb check is a process-wide setting (PIL.Image.MAX_IMAGE_PIXELS) that would refuse
# images below our configurable limit; it is switched off only around our header parse, under a lock.
_PILLOW_OPEN_LOCK = threading.Lock()


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
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    path: Path | None = None
    icc_profile: bytes | None = None

    def __post_init__(self) -> None:
        _check_fields(self.pixels, self.alpha)
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


def _check_fields(pixels: object, alpha: object) -> None:
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


# ------------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Read an image file into an ``Image`` (see its docstring for layout), EXIF orientation applied.

    The format comes from the content, not the suffix. ``max_pixels`` (None: no limit) is checked on
    the header before anything is decoded. Every failure raises ``ImageIOError`` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    pil = _open_header(path, data)
    try:
        fmt = _PILLOW_FORMATS[pil.format]
        stored_size = _stored_size(pil, fmt)
        _check_pixel_count(path, *stored_size, max_pixels)
        if fmt == "JPEG" and not _jpeg_reaches_end(data):
            raise ImageIOError(path, "truncated JPEG (the data ends before the end-of-image marker)")
        orientation = _exif_orientation(path, pil, fmt)
        icc = pil.info.get("icc_profile") or None
        if _needs_pillow_decode(pil, fmt):
            colour, alpha, already_oriented = _decode_with_pillow(path, pil, fmt)
        else:
            # OpenCV's TIFF decoder applies the Orientation tag itself, even with IMREAD_UNCHANGED.
            already_oriented = fmt == "TIFF"
            upright_size = stored_size[::-1] if already_oriented and orientation >= 5 else stored_size
            colour, alpha = _decode_with_opencv(path, data, pil, fmt, upright_size)
    finally:
        pil.close()

    if not already_oriented and orientation != 1:
        colour = _apply_orientation(colour, orientation)
        alpha = None if alpha is None else _apply_orientation(alpha, orientation)
    if icc is not None and _icc_colour_space(icc) != ("GRAY" if colour.shape[2] == 1 else "RGB "):
        icc = None  # e.g. a CMYK profile: it does not describe the RGB pixels OpenCV converted to
    return Image(pixels=colour, alpha=alpha, path=path, icc_profile=icc)


def _read_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            # The signature first: a large file that is no image is refused without reading it whole.
            head = f.read(_SNIFF_BYTES)
            if head and _sniff_format(head) is None:
                raise ImageIOError(path, _NOT_AN_IMAGE)
            data = head + f.read()
    except FileNotFoundError:
        raise ImageIOError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageIOError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageIOError(path, "permission denied") from None
    except OSError as err:
        if path.is_dir():  # Windows reports a directory as PermissionError/OSError
            raise ImageIOError(path, "is a directory, not an image file") from None
        raise ImageIOError(path, f"cannot read: {err.strerror or err}") from err
    if not data:
        raise ImageIOError(path, "empty file (0 bytes)")
    return data


def _open_header(path: Path, data: bytes) -> PIL.Image.Image:
    """Pillow's lazy open: parses the header only, no pixels are decoded."""
    with _PILLOW_OPEN_LOCK:
        saved = PIL.Image.MAX_IMAGE_PIXELS
        PIL.Image.MAX_IMAGE_PIXELS = None  # our own limit is checked right after, from the same header
        try:
            return PIL.Image.open(io.BytesIO(data), formats=_PILLOW_OPENERS)
        except Exception as err:  # Pillow raises many types on malformed headers
            fmt = _sniff_format(data)
            if fmt is None:
                raise ImageIOError(path, _NOT_AN_IMAGE) from None
            detail = "" if isinstance(err, PIL.UnidentifiedImageError) else f": {err}"
            raise ImageIOError(
                path, f"corrupt, truncated or unsupported {fmt} file (its header cannot be parsed{detail})"
            ) from err
        finally:
            PIL.Image.MAX_IMAGE_PIXELS = saved


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES.items() if data.startswith(magic)), None)


def _stored_size(pil: PIL.Image.Image, fmt: str) -> tuple[int, int]:
    """(width, height) as stored, before orientation (recent Pillow reports TIFF sizes already turned)."""
    if fmt == "TIFF":
        width, height = pil.tag_v2.get(256), pil.tag_v2.get(257)
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return pil.size


def _check_pixel_count(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    count = width * height
    if max_pixels is not None and count > max_pixels:
        raise ImageIOError(
            path,
            f"image is {width}x{height} = {count:,} pixels, over the limit of {max_pixels:,} "
            f"(a guard against decompression bombs); to read it, raise the limit to {count} or more "
            f"(img2img --max-pixels / IMG2IMG_MAX_PIXELS, or read_image(max_pixels=))",
        )


# After a start-of-scan, entropy-coded data runs to the next marker: 0xFF followed by anything but a
# stuffed 0x00, a restart marker 0xD0-0xD7 or another 0xFF fill byte.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_reaches_end(data: bytes) -> bool:
    """True when the JPEG's marker structure runs to its end-of-image marker.

    libjpeg pads a cut-off file with grey and only warns, so a decoder's success says nothing
    about truncation. Bytes after the first end-of-image (MPO pictures, trailers) are ignored.
    """
    pos, size = 2, len(data)  # after the start-of-image marker
    while pos + 2 <= size:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xD9:  # end of image
            return True
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            if pos + 4 > size:
                return False
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker == 0xDA:  # start of scan: skip the entropy-coded data
                found = _JPEG_NEXT_MARKER.search(data, pos)
                if found is None:
                    return False
                pos = found.start()
    return False


def _exif_orientation(path: Path, pil: PIL.Image.Image, fmt: str) -> int:
    # Pillow's PNG getexif() decodes all pixels when the eXIf chunk is not in the header; PNG
    # orientation is read from an eXIf chunk before the image data only.
    if fmt == "PNG" and "exif" not in pil.info:
        return 1
    try:
        value = pil.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as err:  # a corrupt EXIF block should not make the picture unreadable
        warnings.warn(f"{path}: unreadable EXIF data ({err}); orientation not applied", stacklevel=3)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _needs_pillow_decode(pil: PIL.Image.Image, fmt: str) -> bool:
    """8-bit TIFFs with alpha: OpenCV premultiplies their colour (and drops a gray image's alpha)."""
    if fmt != "TIFF" or "A" not in pil.getbands():
        return False
    bits = pil.tag_v2.get(258, (8,))
    return max(bits if isinstance(bits, tuple) else (bits,)) == 8


def _decode_with_pillow(path: Path, pil: PIL.Image.Image, fmt: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Returns (colour, alpha, already_oriented)."""
    target = "LA" if pil.mode in _GRAY_MODES else "RGBA"  # converting also un-premultiplies La/RGBa
    had_orientation = _ORIENTATION_TAG in pil.tag_v2
    try:
        arr = np.asarray(pil.convert(target))
    except Exception as err:
        raise ImageIOError(
            path, f"cannot decode {fmt} data, the file is corrupt or truncated ({err})"
        ) from err
    # Recent Pillow turns TIFFs while loading and then deletes the tag; older versions do neither.
    already_oriented = had_orientation and _ORIENTATION_TAG not in pil.tag_v2
    return np.ascontiguousarray(arr[..., :-1]), np.ascontiguousarray(arr[..., -1]), already_oriented


def _decode_with_opencv(
    path: Path, data: bytes, pil: PIL.Image.Image, fmt: str, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode with OpenCV; ``size`` is the (width, height) the decoded array must have."""
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageIOError(path, f"cannot decode {fmt} data ({_cv_message(err)})") from err
    width, height = size
    if decoded is None:
        reason = f"cannot decode {fmt} data, the file is corrupt or truncated"
        if width * height > 1 << 30:
            reason += (
                "; OpenCV also refuses images over 2**30 pixels unless OPENCV_IO_MAX_IMAGE_PIXELS is raised"
            )
        raise ImageIOError(path, reason)
    if decoded.dtype not in (np.uint8, np.uint16):
        raise ImageIOError(
            path, f"unsupported sample type {decoded.dtype} (only 8- and 16-bit integer images)"
        )
    if decoded.shape[:2] != (height, width):
        raise ImageIOError(
            path,
            f"decoded size {decoded.shape[1]}x{decoded.shape[0]} differs from the header's {width}x{height}",
        )

    if decoded.ndim == 2:
        return decoded[:, :, None], None
    channels = decoded.shape[2]
    if channels == 2:
        colour, alpha = decoded[:, :, :1], decoded[:, :, 1]
    elif channels == 3:
        colour, alpha = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), None
    elif channels == 4:
        colour, alpha = cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB), decoded[:, :, 3]
    else:
        raise ImageIOError(path, f"unsupported channel count {channels} (expected gray, RGB or RGBA)")
    if colour.shape[2] == 3 and _stored_as_gray(data, pil, fmt):
        colour = colour[:, :, :1]  # OpenCV expands gray+alpha to BGRA; the three copies are equal
    if pil.mode == "CMYK":
        alpha = None  # OpenCV turns CMYK TIFFs into BGRA with an opaque alpha of its own
    if fmt == "BMP" and alpha is not None and not alpha.any():
        alpha = None  # 32-bit BMPs often leave the fourth byte unused (zero), it is not transparency
    return np.ascontiguousarray(colour), None if alpha is None else np.ascontiguousarray(alpha)


def _stored_as_gray(data: bytes, pil: PIL.Image.Image, fmt: str) -> bool:
    if fmt == "PNG":  # Pillow reports a 16-bit gray+alpha PNG as RGBA; the IHDR colour type is exact
        return data[12:16] == b"IHDR" and data[25] in (0, 4)
    return pil.mode in _GRAY_MODES


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored (H, W[, C]) pixels upright for EXIF orientation 1..8."""
    if orientation == 2:
        arr = arr[:, ::-1]  # mirrored left-right
    elif orientation == 3:
        arr = arr[::-1, ::-1]  # rotated 180
    elif orientation == 4:
        arr = arr[::-1]  # mirrored top-bottom
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)  # mirrored along the main diagonal
    elif orientation == 6:
        arr = arr.swapaxes(0, 1)[:, ::-1]  # needs 90 degrees clockwise
    elif orientation == 7:
        arr = arr.swapaxes(0, 1)[::-1, ::-1]  # mirrored along the anti-diagonal
    elif orientation == 8:
        arr = arr.swapaxes(0, 1)[::-1]  # needs 90 degrees counter-clockwise
    return np.ascontiguousarray(arr)


def _icc_colour_space(icc: bytes) -> str:
    """The data colour space signature of an ICC profile header (bytes 16..19), e.g. 'RGB ', 'GRAY'."""
    return icc[16:20].decode("latin-1") if len(icc) >= 20 else ""


def _cv_message(err: cv2.error) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


# ------------------------------------------------------------------------------------------- writing


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
        _check_fields(image.pixels, image.alpha)  # fields may have been replaced since construction
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
    if icc is not None and (fmt == "BMP" or _icc_colour_space(icc) != ("GRAY" if gray else "RGB ")):
        icc = None  # BMP: OpenCV cannot embed one; a gray profile cannot describe RGB pixels

    if gray and alpha is not None:
        if fmt == "PNG":
            return _png_gray_alpha(colour[:, :, 0], alpha, icc)
        return _tiff_gray_alpha_8bit(path, colour[:, :, 0], alpha, icc)

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
    try:
        if icc is not None and fmt != "TIFF":
            _require_opencv_icc(path)
            ok, buf = cv2.imencodeWithMetadata(
                ext, array, [cv2.IMAGE_METADATA_ICCP], [np.frombuffer(icc, np.uint8)], params
            )
        else:
            ok, buf = cv2.imencode(ext, array, params)
    except cv2.error as err:
        raise ImageIOError(path, f"cannot encode as {fmt}: {_cv_message(err)}") from err
    if not ok:
        raise ImageIOError(path, f"cannot encode as {fmt} (OpenCV's encoder failed)")
    data = buf.tobytes()
    if fmt == "TIFF":
        tags = []
        if alpha is not None:  # OpenCV leaves the fourth sample unlabelled; declare it unassociated alpha
            tags.append((338, 3, 1, struct.pack("<H", 2)))
        if icc is not None:  # OpenCV's TIFF encoder cannot embed a profile
            tags.append((34675, 7, len(icc), icc))
        if tags:
            data = _tiff_with_tags(path, data, tags)
    return data


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8, rounded: round(v * 255 / 65535) == (v + 128) // 257 (257 is odd, so no ties)."""
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _require_opencv_icc(path: Path) -> None:
    version = tuple(int(part) for part in re.findall(r"\d+", cv2.__version__)[:2])
    if version < _MIN_OPENCV_FOR_ICC:
        raise ImageIOError(
            path,
            f"embedding the ICC profile needs OpenCV >= {'.'.join(map(str, _MIN_OPENCV_FOR_ICC))} "
            f"(installed: {cv2.__version__}); upgrade opencv-python-headless or drop image.icc_profile",
        )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_gray_alpha(gray: np.ndarray, alpha: np.ndarray, icc: bytes | None) -> bytes:
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
    step = 1 << 30  # a chunk holds at most 2**31 - 1 bytes
    chunks += [_png_chunk(b"IDAT", compressed[i : i + step]) for i in range(0, len(compressed), step)]
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _tiff_gray_alpha_8bit(path: Path, gray: np.ndarray, alpha: np.ndarray, icc: bytes | None) -> bytes:
    """An 8-bit gray+alpha TIFF, which OpenCV's encoder cannot write; Pillow's can."""
    out = io.BytesIO()
    extra = {} if icc is None else {"icc_profile": icc}
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


# ".NAME.1234abcd.tmp": a hidden name beside the output, recognisable so that the temporary files
# of a killed run can be removed by the next one (``remove_stale_temporaries``).
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
_NAME_MAX = 255  # bytes in one file name on the common file systems (ext4, XFS, APFS, NTFS in UTF-16 units)


def temporary_name(name: str) -> str:
    """A fresh hidden temporary name for writing ``name``, never longer than ``name`` may be
    (the output's name is shortened inside it, not the 14 bytes that make it ours)."""
    tag = f".{secrets.token_hex(4)}.tmp"
    room = _NAME_MAX - 1 - len(tag)
    encoded = os.fsencode(name)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room].decode("utf-8", "ignore").encode("utf-8"))
    return f".{name}{tag}"


def remove_stale_temporaries(folder: str | os.PathLike[str], *, older_than: float = 600.0) -> list[Path]:
    """Delete our temporary files (``temporary_name``) in ``folder`` untouched for ``older_than``
    seconds: left by a killed run. Younger ones may belong to a run writing there now. Returns them."""
    removed = []
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if _TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden temporary name beside ``path``, then rename over it: never a half file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageIOError(path, f"cannot create directory {path.parent}: {err.strerror or err}") from err
    while True:
        tmp = path.with_name(temporary_name(path.name))
        try:
            # os.open with 0o666 lets the umask decide the mode, as for any new file (mkstemp gives 0o600).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
        except OSError as err:
            raise ImageIOError(path, f"cannot write: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise ImageIOError(path, f"cannot write: {err.strerror or err}") from err
        raise


# ------------------------------------------------------------------------------- pixels <-> tensors


def _pixel_max(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise ValueError(f"pixels must be uint8 or uint16, got {dtype}")


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    return low, high


def pixels_to_tensor(pixels: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """(H, W, C) uint8/uint16 pixels -> float32 (C, H, W) CPU tensor in ``value_range``.

    0 maps to low and the dtype's maximum (255 or 65535) to high, linearly.
    """
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3:
        raise ValueError(
            f"pixels must be an (H, W, C) array, got {getattr(pixels, 'shape', type(pixels).__name__)}"
        )
    top = _pixel_max(pixels.dtype)
    low, high = _check_range(value_range)
    x = (
        torch.from_numpy(np.ascontiguousarray(pixels))
        .permute(2, 0, 1)
        .to(torch.float32, memory_format=torch.contiguous_format)
    )
    if (low, high) == (0.0, 1.0):
        return x.div_(top)
    return x.mul_((high - low) / top).add_(low)


def tensor_to_pixels(
    tensor: torch.Tensor, dtype: np.dtype | type, value_range: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """Float (C, H, W) tensor in ``value_range`` -> (H, W, C) ``dtype`` (uint8/uint16) numpy array.

    Values are clamped to the range, then rounded to the nearest level (not truncated). Works on
    any device; the arithmetic happens there and only the integer result is copied to the CPU.
    NaN raises ValueError (it has no pixel value; it usually means the model diverged).
    """
    dtype = np.dtype(dtype)
    top = _pixel_max(dtype)
    low, high = _check_range(value_range)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or not tensor.is_floating_point():
        raise ValueError(
            f"expected a float (C, H, W) tensor, got {getattr(tensor, 'dtype', type(tensor).__name__)} "
            f"{tuple(getattr(tensor, 'shape', ()))}"
        )
    x = tensor.detach().to(torch.float32)
    if torch.isnan(x).any():
        raise ValueError("tensor holds NaN values; they have no pixel value")
    x = ((x - low) * (top / (high - low))).clamp_(0, top).round_()
    x = x.to(torch.uint8 if top == 255 else torch.int32).permute(1, 2, 0).contiguous().cpu().numpy()
    return x.astype(dtype, copy=False)
