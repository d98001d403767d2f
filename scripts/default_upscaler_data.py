"""Write the training and held-out photo folders of the bundled default upscalers.

    python scripts/default_upscaler_data.py OUT_DIR

OUT_DIR/train: the freely licensed photos shipped inside scikit-image's wheel, minus the held-out
ones, plus synthetic images (anti-aliased shapes, lines and text-like strokes drawn at 4x and
reduced, so their edges are clean). OUT_DIR/val: the held-out photos (HELD_OUT), never trained on;
``coffee`` is among them because assets/sample.png (the demo photo) is made from it.
OUT_DIR/extra: one more photo from another source (matplotlib's sample data: ``grace_hopper.jpg``,
a public-domain U.S. Navy portrait), used for no decision at all: a second check on the cards'
held-out figures, since the recipe was chosen while looking at val/.
Grey images are written as RGB. Deterministic (fixed seed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

HELD_OUT = ("astronaut", "chelsea", "coffee", "rocket")
# Only images whose skimage docstring states a free licence (CC0, public domain, "no known copyright
# restrictions"); moon, page, colorwheel and stereo_motorcycle state none, so they are left out.
TRAIN_PHOTOS = (
    "hubble_deep_field", "retina", "immunohistochemistry", "camera", "brick", "grass", "gravel",
    "coins", "text", "cell", "clock",
)
N_SYNTHETIC = 32
SYNTH_SIDE = 384


def _rgb(image: np.ndarray) -> Image.Image:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8), "RGB")


def _photo(name: str) -> Image.Image:
    return _rgb(getattr(skimage.data, name)())


def _synthetic(rng: np.random.Generator) -> Image.Image:
    """Random shapes, lines and strokes on a smooth gradient, drawn at 4x then reduced (anti-aliased)."""
    big = SYNTH_SIDE * 4
    ramp = np.linspace(0, 1, big, dtype=np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
    background = np.broadcast_to(c0 * (1 - t) + c1 * t, (big, big, 3)).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(background), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(15, 40))):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(0, big, 2))
        w, h = (int(v) for v in rng.integers(16, big // 3, 2))
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=color)
        elif kind == 1:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=color)
        elif kind == 2:
            points = [tuple(int(v) for v in rng.integers(0, big, 2)) for _ in range(3)]
            draw.polygon(points, fill=color)
        else:
            draw.line((x0, y0, x0 + w, y0 + h), fill=color, width=int(rng.integers(4, 24)))
    return img.resize((SYNTH_SIDE, SYNTH_SIDE), Image.Resampling.LANCZOS)


def main(out: Path) -> None:
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "val").mkdir(parents=True, exist_ok=True)
    for name in TRAIN_PHOTOS:
        _photo(name).save(out / "train" / f"{name}.png")
    rng = np.random.default_rng(0)
    for i in range(N_SYNTHETIC):
        _synthetic(rng).save(out / "train" / f"synthetic_{i:02d}.png")
    for name in HELD_OUT:
        _photo(name).save(out / "val" / f"{name}.png")
    (out / "extra").mkdir(exist_ok=True)
    from matplotlib import cbook  # a dev dependency, like scikit-image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        Image.open(f).convert("RGB").save(out / "extra" / "grace_hopper.png")
    print(f"{out}: {len(TRAIN_PHOTOS)} photos + {N_SYNTHETIC} synthetic images in train/, "
          f"{len(HELD_OUT)} held-out photos in val/ ({', '.join(HELD_OUT)}), grace_hopper in extra/")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/default_upscaler_data.py OUT_DIR")
    main(Path(sys.argv[1]))
