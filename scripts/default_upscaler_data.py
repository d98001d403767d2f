"""Write the training and held-out photo folders of the bundled default upscalers.

    python scripts/default_upscaler_data.py OUT_DIR [--no-debian]

OUT_DIR/train: the freely licensed photos shipped inside scikit-image's wheel, minus the held-out
ones, plus synthetic images (anti-aliased shapes, lines and text-like strokes drawn at 4x and
reduced, so their edges are clean), plus tiles of the CC-BY-4.0 / CC0 photos of Debian's
``lomiri-wallpapers-16.04`` package (LOMIRI_TRAIN) at three scales (each photo reduced so its long
side is 1536, 1024 and 640 px, which also removes the camera's own noise and JPEG artefacts, then
cut into 320-px tiles so sampling follows area). The package is fetched with ``apt-get download``
and unpacked with ``dpkg -x`` into OUT_DIR/_debian (Debian's own tools; ``--no-debian`` skips it).
OUT_DIR/val: the held-out photos (HELD_OUT), never trained on, used for choices (checkpoints,
recipe, the default denoise strength); ``coffee`` is among them because assets/sample.png (the
demo photo) is made from it.
OUT_DIR/extra: one more photo from another source (matplotlib's sample data: ``grace_hopper.jpg``,
a public-domain U.S. Navy portrait), used for no decision at all: a second check on the cards'
held-out figures, since the recipe was chosen while looking at val/.
OUT_DIR/test: the test set of the real-world models, used for no choice at all: four lomiri
photos (LOMIRI_TEST), each reduced to a long side of 800 px, and grace_hopper (matplotlib's
sample photos, like scikit-learn's, are evaluation only, never trained on).
Every image's source and licence: docs/data.md, "Training photos of the bundled upscalers".
Grey images are written as RGB. Deterministic (fixed seed).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
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
LOMIRI_PACKAGE = "lomiri-wallpapers-16.04"
# Only its photos whose debian/copyright entry is CC-BY-4.0 (credited in the model cards) or CC0;
# the package's CC-BY-SA ones are left out.
LOMIRI_TRAIN = (
    "Picture_0B_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
    "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt", "umang_by_Abhishek_Mudgal",
)
LOMIRI_TEST = (
    "friends_by_Aitzol_Berasategi", "Picture_1A_by_freespace", "life_by_Aitzol_Berasategi",
    "sunset_by_Aitzol_Berasategi",
)
TRAIN_LONG_SIDES = (1536, 1024, 640)
TILE = 320
TEST_LONG_SIDE = 800


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


def _long_side(img: Image.Image, side: int) -> Image.Image:
    factor = side / max(img.size)
    size = (round(img.width * factor), round(img.height * factor))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _debian_photos(out: Path) -> Path:
    """Folder of the package's photos: ``apt-get download`` + ``dpkg -x`` into ``out/_debian``."""
    folder = out / "_debian"
    photos = folder / "usr" / "share" / "backgrounds"
    if photos.is_dir():
        return photos
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", LOMIRI_PACKAGE], cwd=tmp, check=True)
        (deb,) = Path(tmp).glob("*.deb")
        subprocess.run(["dpkg", "-x", str(deb), str(folder)], check=True)
    return photos


def _write_debian(out: Path) -> int:
    photos = _debian_photos(out)
    n = 0
    for name in LOMIRI_TRAIN:
        img = Image.open(photos / f"{name}.jpg").convert("RGB")
        for side in TRAIN_LONG_SIDES:
            small = _long_side(img, side)
            for y in range(0, small.height - TILE + 1, TILE):
                for x in range(0, small.width - TILE + 1, TILE):
                    small.crop((x, y, x + TILE, y + TILE)).save(out / "train" / f"{name}_{side}_{y}_{x}.png")
                    n += 1
    for name in LOMIRI_TEST:
        _long_side(Image.open(photos / f"{name}.jpg").convert("RGB"), TEST_LONG_SIDE).save(out / "test" / f"{name}.png")
    return n


def _write_outside_test(out: Path) -> None:
    """matplotlib's sample photo: evaluation only (never in train/)."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        Image.open(f).convert("RGB").save(out / "test" / "grace_hopper.png")


def main(out: Path, debian: bool = True) -> None:
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
    (out / "test").mkdir(exist_ok=True)
    _write_outside_test(out)
    tiles = _write_debian(out) if debian else 0
    print(f"{out}: {len(TRAIN_PHOTOS)} photos + {N_SYNTHETIC} synthetic images + {tiles} tiles of "
          f"{len(LOMIRI_TRAIN) if debian else 0} {LOMIRI_PACKAGE} photos in train/, "
          f"{len(HELD_OUT)} held-out photos in val/ ({', '.join(HELD_OUT)}), grace_hopper in extra/, "
          f"{len(list((out / 'test').iterdir()))} test photos in test/")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--no-debian"]
    if len(args) != 1:
        sys.exit("usage: python scripts/default_upscaler_data.py OUT_DIR [--no-debian]")
    main(Path(args[0]), debian="--no-debian" not in sys.argv)
