"""Decoding: bytes -> ``Image``. OpenCV decodes pixels; Pillow parses headers (size, EXIF orientation,
ICC profile) and decodes only 8-bit TIFFs with alpha (see ``_needs_pillow_decode``). A marker scanner
tells a truncated JPEG from a complete one, which libjpeg does not.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

from img2img.image_io._native import native_messages, warn_each
from img2img.image_io._record import (
    DEFAULT_MAX_PIXELS,
    Image,
    ImageIOError,
    cv_message,
    icc_colour_space,
    upright_exif,
)

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
_NOT_AN_IMAGE = "not a recognised image file (expected JPEG, PNG, WebP, TIFF or BMP data)"
_SNIFF_BYTES = 16  # enough for every signature below and WebP's RIFF....WEBP
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",
    b"MM\x00+": "TIFF",
    b"BM": "BMP",
}
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ORIENTATION_TAG = 0x0112

# Pillow's own bomb check is a process-wide setting (PIL.Image.MAX_IMAGE_PIXELS) that would refuse
# images below our configurable limit; it is switched off only around our header parse, under a lock.
_PILLOW_OPEN_LOCK = threading.Lock()


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
        exif, dpi = _exif_block(pil, fmt), _dpi(pil)
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
    if icc is not None and icc_colour_space(icc) != ("GRAY" if colour.shape[2] == 1 else "RGB "):
        icc = None  # e.g. a CMYK profile: it does not describe the RGB pixels OpenCV converted to
    if dpi is not None and orientation >= 5:
        dpi = dpi[::-1]  # turned a quarter: the horizontal density is the stored vertical one
    return Image(pixels=colour, alpha=alpha, path=path, icc_profile=icc, exif=exif, dpi=dpi)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) from the file's header alone (no pixels decoded, the file not read whole), as
    stored (before EXIF orientation); None for a file that is not a readable image. For planning
    (how much work a run is), not for validation: ``read_image`` checks everything."""
    with _PILLOW_OPEN_LOCK:
        saved = PIL.Image.MAX_IMAGE_PIXELS
        PIL.Image.MAX_IMAGE_PIXELS = None
        try:
            with PIL.Image.open(path, formats=_PILLOW_OPENERS) as pil:
                return pil.size
        except Exception:  # noqa: BLE001 - any unreadable file is simply not counted
            return None
        finally:
            PIL.Image.MAX_IMAGE_PIXELS = saved


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


def _exif_block(pil: PIL.Image.Image, fmt: str) -> bytes | None:
    """The EXIF block of a JPEG, WebP or PNG, orientation reset (``Image.exif``). A TIFF's EXIF is
    its own tags, which are not carried; BMP has none."""
    raw = pil.info.get("exif") if fmt in ("JPEG", "WEBP", "PNG") else None
    return upright_exif(raw.removeprefix(b"Exif\x00\x00")) if isinstance(raw, bytes) else None


def _dpi(pil: PIL.Image.Image) -> tuple[float, float] | None:
    """Dots per inch as the header states them (JFIF/EXIF, pHYs, TIFF or BMP resolution), or None."""
    dpi = pil.info.get("dpi")
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    return (x, y) if 0 < x < 1e6 and 0 < y < 1e6 else None


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
        with native_messages() as messages:
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageIOError(path, f"cannot decode {fmt} data ({cv_message(err)})") from err
    width, height = size
    if decoded is None:
        reason = f"cannot decode {fmt} data, the file is corrupt or truncated"
        if width * height > 1 << 30:
            reason += (
                "; OpenCV also refuses images over 2**30 pixels unless OPENCV_IO_MAX_IMAGE_PIXELS is raised"
            )
        raise ImageIOError(path, reason)
    warn_each(path, messages)  # decoded despite them: a damaged but readable file
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
