"""Input-pipeline throughput: decode + CPU stage (workers) + device stage, in batches per second.

    .venv/bin/python benchmarks/bench_data.py [--batches 8] [--device auto|cpu|cuda] [--workers 0 2]

Measured in one run, on synthetic images written to a temporary folder:

1. pix2pix, 256x256 crops of 512x256 A|B JPEGs (resize 286 + random crop), batch 16;
2. SR, 96x96 HR crops of 384x384 PNGs with bicubic x4 LR made on the fly, batch 16;

each with 0 and 2 workers, and the augmentation ops done two ways: our device stage
(``DeviceAugment`` on the batch, on --device) vs the same ops in albumentations in the CPU workers
(``cpu_augment``). It also times the device stage alone against plain
``kornia.augmentation.AugmentationSequential`` with the same ops (colour jitter, affine, flip).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from img2img.data import DeviceAugment, build_dataset, make_loader
from img2img.image_io import Image, write_image

PIX2PIX_OPS = ["hflip", "color_jitter", "affine"]
SR_OPS = ["hflip", "vflip", "rot90"]


def photo_like(h: int, w: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y - seed), np.sin(4 * (x + y))], axis=2) * 0.4 + 0.5
    return np.clip((base + g.normal(0, 0.05, base.shape)) * 255, 0, 255).astype(np.uint8)


def make_data(root: Path, n: int) -> tuple[Path, Path]:
    """n A|B JPEGs (2 x 256x256) and n 384x384 PNGs (HR)."""
    paired, sr = root / "paired", root / "sr"
    for i in range(n):
        a = photo_like(256, 256, i)
        write_image(paired / "train" / f"{i:03d}.jpg", Image(pixels=np.concatenate([a, 255 - a], axis=1)))
        write_image(sr / "train" / f"{i:03d}.png", Image(pixels=photo_like(384, 384, 100 + i)))
    return paired, sr


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(loader, augment, device: torch.device, batches: int) -> float:
    """Batches per second over ``batches`` batches, from ``iter()`` (worker start-up included).

    Timing from the first batch instead would flatter workers: they prefetch while it is awaited.
    """
    sync(device)
    start = time.perf_counter()
    done = 0
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if augment is not None:
            batch = augment(batch)
        done += 1
        if done == batches:
            break
    sync(device)
    return done / (time.perf_counter() - start)


def device_stage_alone(device: torch.device, repeats: int) -> dict[str, tuple[float, float | None]]:
    """Milliseconds per 16x3x256x256 pair: our DeviceAugment vs kornia.augmentation, per op and combined.

    Probabilities are 1 so every sample pays for every op (flips at p = 0.5, as in training).
    """
    import kornia.augmentation as K

    from img2img.data import AugmentParams

    a = torch.rand(16, 3, 256, 256, device=device)
    b = torch.rand(16, 3, 256, 256, device=device)
    params = AugmentParams(color_p=1.0, affine_p=1.0)
    kornia_ops = {
        "hflip": K.RandomHorizontalFlip(p=0.5),
        "color_jitter": K.ColorJitter(0.2, 0.2, 0.2, 0.05, p=1.0),
        "affine": K.RandomAffine(
            degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1), shear=5, padding_mode="reflection", p=1.0
        ),
    }

    def timed(fn) -> float:
        fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync(device)
        return (time.perf_counter() - start) / repeats * 1000

    def kornia_seq(*ops):
        seq = K.AugmentationSequential(*ops, data_keys=["input", "input"]).to(device)
        return timed(lambda: seq(a, b))

    out: dict[str, tuple[float, float | None]] = {}
    for op in ("hflip", "vflip", "rot90", "color_jitter", "affine"):
        ours = DeviceAugment([op], params=params)
        plain = kornia_seq(kornia_ops[op]) if op in kornia_ops else None
        out[op] = (timed(lambda ours=ours: ours({"a": a, "b": b})), plain)
    combined = DeviceAugment(PIX2PIX_OPS, params=params)
    out["+".join(PIX2PIX_OPS)] = (
        timed(lambda: combined({"a": a, "b": b})),
        kornia_seq(*(kornia_ops[op] for op in PIX2PIX_OPS)),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per configuration")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    print(
        f"device {device}, torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paired, sr = make_data(Path(tmp), 16 * args.batches)
        rows = []
        for name, kind, root, size, ops in (
            ("pix2pix 256 b16", "paired", paired, 256, PIX2PIX_OPS),
            ("SR 96 x4 b16", "sr", sr, 96, SR_OPS),
        ):
            for workers in args.workers:
                on_device = build_dataset(kind, root, image_size=size, scale=4)
                in_workers = build_dataset(kind, root, image_size=size, scale=4, cpu_augment=ops)
                paired_aug = DeviceAugment(ops)
                rate_device = run(
                    make_loader(on_device, batch_size=16, num_workers=workers),
                    paired_aug,
                    device,
                    args.batches,
                )
                rate_cpu = run(
                    make_loader(in_workers, batch_size=16, num_workers=workers), None, device, args.batches
                )
                rate_none = run(
                    make_loader(on_device, batch_size=16, num_workers=workers), None, device, args.batches
                )
                rows.append((name, workers, rate_none, rate_device, rate_cpu))
        print(
            f"\n{'pipeline':18s} {'workers':>7s} {'no aug':>9s} {'device':>9s} {'albu':>9s}  device/albu  (batches/s)"
        )
        for name, workers, none, dev, cpu in rows:
            print(f"{name:18s} {workers:7d} {none:9.2f} {dev:9.2f} {cpu:9.2f}  {dev / cpu:10.2f}x")
    print(f"\ndevice stage alone, ms per 16x3x256x256 pair on {device} (all ops applied to every sample):")
    print(f"{'op':28s} {'ours':>9s} {'kornia.aug':>11s} {'ratio':>7s}")
    for op, (ours, plain) in device_stage_alone(device, repeats=3 if device.type == "cpu" else 20).items():
        ratio = f"{plain / ours:6.2f}x" if plain else ""
        print(f"{op:28s} {ours:9.1f} {plain if plain else float('nan'):11.1f} {ratio:>7s}")


if __name__ == "__main__":
    main()
