"""Bundled model names: ``load_model("img2img-sr-x4")`` finds ``img2img-sr-x4.safetensors``.

Search order (first hit wins):

1. ``$IMG2IMG_WEIGHTS_DIR`` when set;
2. the shipped defaults: ``weights/`` inside the installed package (a wheel), or the repository's
   ``weights/`` folder next to the package (a source checkout or editable install);
3. the user cache: ``$IMG2IMG_CACHE_DIR``, else ``$XDG_CACHE_HOME/img2img`` or ``~/.cache/img2img``.

Nothing is downloaded here: zoo names (``img2img.checkpoints.zoo``) are resolved by
``loading.resolve_source`` after bundled ones.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from img2img.checkpoints.errors import CheckpointError
from img2img.checkpoints.format import SUFFIX

ENV_WEIGHTS_DIR = "IMG2IMG_WEIGHTS_DIR"
ENV_CACHE_DIR = "IMG2IMG_CACHE_DIR"

# The default upscalers, trained by img2img and shipped in weights/.
DEFAULT_UPSCALERS = {4: "img2img-sr-x4", 2: "img2img-sr-x2"}

# A bundled name is a file stem, never a path: no separators, no "..".
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BundledModel:
    """One model file found by name: ``name`` (file stem), ``path``, ``location`` (env, repo or cache)."""

    name: str
    path: Path
    location: str


def default_upscaler_name(scale: int) -> str:
    """The bundled default upscaler for ``scale`` (``"img2img-sr-x4"`` or ``"img2img-sr-x2"``)."""
    try:
        return DEFAULT_UPSCALERS[scale]
    except KeyError:
        known = ", ".join(f"x{s}" for s in sorted(DEFAULT_UPSCALERS))
        raise ValueError(
            f"no default upscaler for scale {scale}; bundled defaults exist for {known}"
        ) from None


def repo_weights_dir() -> Path:
    """The shipped ``weights/`` folder: inside the package when installed from a wheel (pyproject
    maps the repository's ``weights/`` to ``img2img/weights``), else beside the package (a checkout)."""
    import img2img

    package = Path(img2img.__file__).resolve().parent
    inside = package / "weights"
    return inside if inside.is_dir() else package.parent / "weights"


def cache_dir() -> Path:
    """``$IMG2IMG_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/img2img``, or ``~/.cache/img2img``
    when XDG_CACHE_HOME is unset. Zoo downloads go to its ``zoo/`` folder."""
    own = os.environ.get(ENV_CACHE_DIR)
    if own:
        return Path(own).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "img2img"


def search_dirs() -> list[tuple[str, Path]]:
    """(location, folder) in search order; folders need not exist."""
    dirs: list[tuple[str, Path]] = []
    env = os.environ.get(ENV_WEIGHTS_DIR)
    if env:
        dirs.append(("env", Path(env).expanduser()))
    dirs += [("repo", repo_weights_dir()), ("cache", cache_dir())]
    return dirs


def looks_like_name(source: str) -> bool:
    """Whether ``source`` can be a bundled name (a bare stem, optionally with ``.safetensors``)."""
    return bool(_NAME.match(source)) and "/" not in source and "\\" not in source


def list_bundled() -> list[BundledModel]:
    """Every ``*.safetensors`` in the search folders, in search order; a name shadowed by an
    earlier folder is listed once, from where it is found."""
    seen: set[str] = set()
    found: list[BundledModel] = []
    for location, folder in search_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            name = path.name[: -len(SUFFIX)]
            if name not in seen and path.is_file():
                seen.add(name)
                found.append(BundledModel(name, path, location))
    return found


def find_bundled(name: str) -> Path:
    """The file for bundled ``name``; CheckpointError listing the available names when there is none."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    if not looks_like_name(stem):
        raise CheckpointError(f"{name}: not a bundled model name (letters, digits, '.', '_', '-')")
    for _, folder in search_dirs():
        path = folder / f"{stem}{SUFFIX}"
        if path.is_file():
            return path
    available = ", ".join(m.name for m in list_bundled()) or "none"
    where = ", ".join(str(folder) for _, folder in search_dirs())
    raise CheckpointError(
        f"{name}: no such file, run directory or bundled model (bundled models available: {available}; "
        f"searched {where})"
    )
