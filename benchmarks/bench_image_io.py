"""What image_io's checks cost: read_image / write_image against the plain OpenCV calls, one run.

The plain way: bytes -> cv2.imdecode(IMREAD_UNCHANGED) -> BGR->RGB, and BGR cv2.imencode -> file.
Ours adds Pillow's header parse (size, EXIF, ICC), the JPEG end-marker check, the alpha split,
orientation, and on writing a temporary file, fsync and rename.

    .venv/bin/python benchmarks/bench_image_io.py [--size 2048x1536] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from img2img.image_io import Image, read_image, write_image


def photo(height: int, width: int, dtype=np.uint8) -> np.ndarray:
    """Smooth content plus noise, so encoders do realistic work."""
    g = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([0.5 + 0.4 * np.sin(7 * x + c) * np.cos(5 * y - c) for c in range(3)], axis=2)
    img = np.clip(img + g.normal(0, 0.02, img.shape), 0, 1)
    top = np.iinfo(dtype).max
    return np.round(img * top).astype(dtype)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="2048x1536")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(1)  # both sides single-threaded: the comparison is about overhead

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{width}x{height}, best of {args.repeat}, seconds (ours / plain = ratio)")
        for suffix, dtype in (
            (".jpg", np.uint8),
            (".png", np.uint8),
            (".png", np.uint16),
            (".tif", np.uint16),
        ):
            rgb = photo(height, width, dtype)
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            path = folder / f"x{suffix}"
            write_image(path, Image(rgb, None))

            def plain_read(path=path):
                data = np.frombuffer(path.read_bytes(), np.uint8)
                return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)

            params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == ".jpg" else []

            def plain_write(bgr=bgr, suffix=suffix, params=params):
                ok, buf = cv2.imencode(suffix, bgr, params)
                (folder / f"plain{suffix}").write_bytes(buf.tobytes())

            def ours_write(rgb=rgb, suffix=suffix):
                write_image(folder / f"ours{suffix}", Image(rgb, None), quality=95)

            for name, ours, plain in (
                ("read", lambda path=path: read_image(path), plain_read),
                ("write", ours_write, plain_write),
            ):
                t_ours, t_plain = best_of(ours, args.repeat), best_of(plain, args.repeat)
                label = f"{suffix[1:]} {np.dtype(dtype).name}"
                print(f"{name:5s} {label:12s} {t_ours:7.4f} / {t_plain:7.4f} = {t_ours / t_plain:5.2f}")


if __name__ == "__main__":
    main()
