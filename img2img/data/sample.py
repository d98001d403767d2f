"""A small sample dataset built from the freely licensed photos that ship with scikit-image.

Used by the demo, the notebooks and the tests: one command, no download, a few seconds.

    OUT/
      paired/{train,val}/NNNN.png        edges | photo side by side (the edges2photo recipe)
      unpaired/{train,val}{A,B}/*.png    A: photo crops, B: cartoon-styled crops of other photos
      sr/train/NNNN.png                  HR crops (LR made on the fly)
      sr/val/hr/NNNN.png, sr/val/lr_x4/NNNN.png   HR and their bicubic LR files
      LICENSES.md                        where each photo comes from and its licence

scikit-image is a dev extra: without it :func:`make_sample` raises a DataError that says how to
install it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from img2img.data.degrade import bicubic_downscale
from img2img.data.errors import DataError
from img2img.data.tools import edge_map
from img2img.image_io import Image, pixels_to_tensor, resize_pixels, tensor_to_pixels, write_image

# skimage.data name -> licence, as stated in each function's docstring (scikit-image 0.2x).
PHOTOS = {
    "astronaut": "public domain (NASA)",
    "coffee": "CC0 (Rachel Michetti, courtesy of Pikolo Espresso Bar)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "rocket": "public domain (SpaceX)",
    "hubble_deep_field": "public domain (NASA)",
}
SR_SCALE = 4


def _load_photos() -> dict[str, np.ndarray]:
    try:
        import skimage.data
    except ImportError:
        raise DataError(
            "the sample set is made from scikit-image's photos: pip install scikit-image"
        ) from None
    return {name: np.ascontiguousarray(getattr(skimage.data, name)()) for name in PHOTOS}


def _crops(photo: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n random square crops of 40-90% of the shorter side, resized to size x size."""
    h, w = photo.shape[:2]
    out = []
    for _ in range(n):
        side = int(min(h, w) * rng.uniform(0.4, 0.9))
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        out.append(resize_pixels(photo[y : y + side, x : x + side], (size, size)))
    return out


def _cartoon(pixels: np.ndarray) -> np.ndarray:
    """A flat-colour 'cartoon' style: smoothed, colours quantised to 4 levels, dark edges."""
    smooth = cv2.bilateralFilter(pixels, 7, 60, 7)
    flat = (smooth // 64) * 64 + 32
    edges = edge_map(pixels)[..., :1] < 128
    return np.where(edges, 20, flat).astype(np.uint8)


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, Image(pixels=pixels, alpha=None, path=path, icc_profile=None))


def make_sample(out_dir: str | Path, *, size: int = 128, seed: int = 0) -> dict[str, Path]:
    """Write the sample set under ``out_dir``; returns {"paired", "unpaired", "sr"} -> dataset roots.

    ``size``: side of every image (each half of a paired image; HR side for SR), a multiple of 4.
    Deterministic for a given ``seed``.
    """
    if size < 16 or size % SR_SCALE:
        raise DataError(f"sample size must be a multiple of {SR_SCALE} and at least 16, got {size}")
    photos = _load_photos()
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    names = list(PHOTOS)

    # Paired: 2 crops of each photo, the first 8 for train and the last 2 for val.
    pairs = [c for name in names for c in _crops(photos[name], 2, size, rng)]
    for i, photo in enumerate(pairs):
        split = "train" if i < 8 else "val"
        _write(out / "paired" / split / f"{i:04d}.png", np.concatenate([edge_map(photo), photo], axis=1))

    # Unpaired: A from the first three photos, B (styled) from the last two: different content and counts.
    a = [c for name in names[:3] for c in _crops(photos[name], 2, size, rng)]
    b = [_cartoon(c) for name in names[3:] for c in _crops(photos[name], 3, size, rng)]
    for i, img in enumerate(a):
        _write(out / "unpaired" / ("trainA" if i < 5 else "valA") / f"a{i:04d}.png", img)
    for i, img in enumerate(b):
        _write(out / "unpaired" / ("trainB" if i < 4 else "valB") / f"b{i:04d}.png", img)

    # SR: HR crops; val also gets its LR files.
    hr = [c for name in names for c in _crops(photos[name], 2, size, rng)]
    for i, img in enumerate(hr):
        if i < 8:
            _write(out / "sr" / "train" / f"{i:04d}.png", img)
        else:
            _write(out / "sr" / "val" / "hr" / f"{i:04d}.png", img)
            lr = bicubic_downscale(pixels_to_tensor(img, (0.0, 1.0)), SR_SCALE)
            _write(
                out / "sr" / "val" / f"lr_x{SR_SCALE}" / f"{i:04d}.png",
                tensor_to_pixels(lr, np.uint8, (0.0, 1.0)),
            )

    lines = [
        "# Sample set: sources and licences",
        "",
        "Made by `img2img data sample` from photos bundled with scikit-image:",
        "",
    ]
    lines += [f"- `skimage.data.{name}`: {licence}" for name, licence in PHOTOS.items()]
    lines += ["", "Crops, edge maps (OpenCV Canny) and the cartoon style are derived by img2img."]
    (out / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"paired": out / "paired", "unpaired": out / "unpaired", "sr": out / "sr"}
