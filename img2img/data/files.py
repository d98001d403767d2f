"""Finding image files and matching them by stem (file name without suffix)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from img2img.data.errors import DataError
from img2img.image_io import list_image_files


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Raises DataError when ``folder`` is not a directory or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = list_image_files(folder)
    if not files:
        raise DataError(f"{folder}: no image files")
    return files


def stem_index(files: Iterable[Path], *, strip_scale: int | None = None) -> dict[str, Path]:
    """Map stem -> path; two files with one stem (``x.png``, ``x.jpg``) are an error naming both.

    ``strip_scale``: also drop a DIV2K-style ``x4`` suffix from stems (``0001x4.png`` -> ``0001``).
    """
    suffix = re.compile(rf"[xX]{strip_scale}$") if strip_scale else None
    index: dict[str, Path] = {}
    for path in files:
        stem = path.stem
        if suffix is not None:
            stem = suffix.sub("", stem)
        if stem in index:
            raise DataError(f"{path}: same stem as {index[stem]}; keep one file per stem")
        index[stem] = path
    return index


def match_by_stem(
    a_files: Iterable[Path], b_files: Iterable[Path], *, b_strip_scale: int | None = None
) -> list[tuple[Path, Path]]:
    """Pairs (a, b) with equal stems, in the order of ``a_files``.

    A file of either list without a partner is a DataError that names it.
    """
    a_index = stem_index(a_files)
    b_index = stem_index(b_files, strip_scale=b_strip_scale)
    for stem, path in a_index.items():
        if stem not in b_index:
            folder = next(iter(b_index.values())).parent if b_index else "the other folder"
            raise DataError(f"{path}: no partner with stem '{stem}' in {folder}")
    for stem, path in b_index.items():
        if stem not in a_index:
            folder = next(iter(a_index.values())).parent if a_index else "the other folder"
            raise DataError(f"{path}: no partner with stem '{stem}' in {folder}")
    return [(a_index[s], b_index[s]) for s in a_index]
