"""What a file is, from its first bytes, before any parser touches it.

A model file given by mistake (a photo, a web page saved under a ``.pth`` name, an archive) gets a
message saying what it is and what we accept, instead of an unpickler's error. Pure functions over
bytes, except :func:`read_head` and :func:`model_file_head`.
"""

from __future__ import annotations

import os

from img2img.checkpoints.errors import CheckpointError

# How many bytes identify every kind below.
HEAD_BYTES = 64

ACCEPTED = (
    "img2img reads .safetensors files and PyTorch .pth/.pt/.ckpt checkpoints that hold a state dict of tensors"
)

# (magic at offset 0, what the file is). Order matters only where one magic prefixes another.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "a program (ELF executable)"),
)

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = 0x80


def read_head(path: str | os.PathLike[str], size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of ``path`` (fewer for a shorter file)."""
    with open(path, "rb") as f:
        return f.read(size)


def model_file_head(path: str | os.PathLike[str]) -> bytes:
    """The first bytes of ``path``; CheckpointError when it cannot be read or is plainly not a model
    file ("x.pth: is a PNG image, not a model file; img2img reads ...")."""
    try:
        head = read_head(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    what = describe(head)
    if what is not None:
        raise CheckpointError(f"{path}: is {what}, not a model file; {ACCEPTED}")
    return head


def describe(head: bytes) -> str | None:
    """What a file starting with ``head`` is, when it is plainly not a model file; else None.

    Returns phrases like ``"a PNG image"``, ``"an HTML page"``, ``"an empty file"``; None for
    anything that may be a checkpoint (pickle, ZIP, safetensors, or unknown bytes).
    """
    if not head:
        return "an empty file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return "an AVIF/HEIF image"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<svg")):
        return "an HTML page" if b"html" in text[:20] or text.startswith(b"<head") else "an XML/SVG document"
    if text.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer (the text stub, not the file it points to)"
    return None


def is_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)


def is_pickle(head: bytes) -> bool:
    """A pickle of protocol 2 or later starts with the PROTO opcode (legacy torch files do too)."""
    return len(head) >= 2 and head[0] == PICKLE_PROTOCOL_OPCODE and 2 <= head[1] <= 5


def is_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON object."""
    return len(head) > 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 100_000_000
