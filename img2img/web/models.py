"""The models the page may offer: a fixed list made when the app starts, addressed by id.

The browser only ever sends an id from this list; the path behind it stays on the server. Sources:

- every bundled model ``checkpoints.list_bundled()`` finds (``$IMG2IMG_WEIGHTS_DIR``, the shipped
  ``weights/``, the user cache);
- each ``--models`` folder: model files in it (``.safetensors``, ``.pth``) and run directories
  (the folder itself or its sub-folders) that ``load_model`` accepts; a two-generator run
  (CycleGAN, DiscoGAN) is listed once per direction.

An entry's task is ``upscale`` when its file says it upscales (scale > 1), ``translate`` when
it says scale 1, and ``any`` when the file does not say (a foreign ``.pth``: its scale is known
only once loaded).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from img2img.checkpoints import CheckpointError, list_bundled, read_metadata, resolve_source
from img2img.checkpoints.denoise import denoise_pair

MODEL_SUFFIXES = (".safetensors", ".pth")
DIRECTIONS = ("AtoB", "BtoA")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ModelEntry:
    """One model the page offers.

    id: what the browser sends (letters, digits, ``.``, ``_``, ``-``); source: what ``load_model``
    gets (a bundled name or a path, never shown to the browser); direction: ``AtoB``/``BtoA`` for
    one generator of a two-generator run, else None; scale: from the file's metadata, or None.
    """

    id: str
    label: str
    task: str  # "upscale", "translate" or "any"
    origin: str  # "bundled", "cache", "folder" or "run"
    source: str
    direction: str | None = None
    scale: int | None = None
    denoise_pair: float | None = None  # the card's default strength when it declares a real-world companion

    def public(self) -> dict[str, Any]:
        """What the browser may see: no path."""
        return {"id": self.id, "label": self.label, "task": self.task, "origin": self.origin,
                "direction": self.direction, "scale": self.scale, "denoise_default": self.denoise_pair}


def find_models(folders: Iterable[str | os.PathLike[str]] = ()) -> list[ModelEntry]:
    """Bundled models first, then each folder's models in name order; ids are unique."""
    found: list[ModelEntry] = []
    for model in list_bundled():
        scale = _scale_of(model.path)
        origin = "cache" if model.location == "cache" else "bundled"
        found.append(_entry(model.name, model.name, origin=origin, source=model.name, scale=scale,
                            pair=_pair_default(model.path)))
    for folder in folders:
        found.extend(_models_in(Path(folder)))
    return _unique_ids(found)


def _models_in(folder: Path) -> Iterator[ModelEntry]:
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: --models needs a folder")
    yield from _run_entries(folder)
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() in MODEL_SUFFIXES:
            scale = _scale_of(path)
            yield _entry(path.stem, path.stem, origin="folder", source=str(path), scale=scale, pair=_pair_default(path))
        elif path.is_dir():
            yield from _run_entries(path)


def _run_entries(run_dir: Path) -> Iterator[ModelEntry]:
    """One entry per generator a run directory holds (none when it is no run directory)."""
    files: dict[str, Path] = {}
    for direction in DIRECTIONS:
        try:
            files[direction] = resolve_source(run_dir, direction=direction)
        except CheckpointError:
            pass
    if not files:
        return
    if len(files) == 1 or files["AtoB"] == files.get("BtoA"):
        path = next(iter(files.values()))
        yield _entry(run_dir.name, f"{run_dir.name} (run)", origin="run", source=str(run_dir), scale=_scale_of(path))
        return
    for direction, path in files.items():
        arrow = "A→B" if direction == "AtoB" else "B→A"
        yield _entry(f"{run_dir.name}-{direction}", f"{run_dir.name} ({arrow})", origin="run",
                     source=str(run_dir), direction=direction, scale=_scale_of(path))


def _entry(key: str, label: str, *, origin: str, source: str, scale: int | None,
           direction: str | None = None, pair: float | None = None) -> ModelEntry:
    task = "any" if scale is None else ("upscale" if scale > 1 else "translate")
    if scale is not None and scale > 1 and f"x{scale}" not in label:
        label = f"{label} ×{scale}"
    model_id = _UNSAFE.sub("-", key).strip("-.") or "model"
    return ModelEntry(model_id, label, task, origin, source, direction, scale, pair)


def _pair_default(path: Path) -> float | None:
    """The default denoise strength the card beside ``path`` declares, or None (no pair, or a bad card)."""
    try:
        pair = denoise_pair(path)
    except CheckpointError:
        return None
    return None if pair is None else pair.default


def _scale_of(path: Path) -> int | None:
    """The scale our metadata records, or None (a foreign file, or one we cannot read)."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        document = read_metadata(path)
    except CheckpointError:
        return None
    return None if document is None else int(document["scale"])


def _unique_ids(entries: list[ModelEntry]) -> list[ModelEntry]:
    seen: set[str] = set()
    unique = []
    for entry in entries:
        model_id, n = entry.id, 2
        while model_id in seen:
            model_id, n = f"{entry.id}-{n}", n + 1
        seen.add(model_id)
        unique.append(entry if model_id == entry.id else replace(entry, id=model_id))
    return unique

