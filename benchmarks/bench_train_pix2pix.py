"""Seconds per pix2pix training step on this machine: our loop vs the same step written the plain way.

Both train the same networks (U-Net 256 + 70x70 PatchGAN, ngf = ndf = 64, batch norm, dropout),
at 256x256, batch 1, with the same losses (vanilla GAN + 100 x L1) and the same data loader
(the real one: 8 PNG pairs decoded, resized to 286 and randomly cropped to 256 in the main process;
no flips in either). "Ours" is ``img2img.training.loop.fit`` with the ``Pix2Pix`` method and its defaults for
the device (on a CPU: fp32, NCHW, fused Adam); "plain" is a hand-written eager step: NCHW, fp32,
``loss.backward()``, ``torch.optim.Adam(foreach=False)`` (no fused or multi-tensor kernels).

The machine may be shared, so the two run interleaved in one process: ``--rounds`` rounds, each
``--steps`` steps of ours then ``--steps`` of plain; the first step of every round is a warm-up and
not counted; medians are reported. Checkpoint and export writes happen once per run, not per
step, and are left out (disabled here).

Split: data = fetching the next batch and moving it to the device; forward = generator and
discriminator forwards and losses; backward = the backward passes; optimiser = Adam steps (and
zero_grad). Ours also has loop overhead (learning rates, NaN guard, logging) in its total.

    .venv/bin/python benchmarks/bench_train_pix2pix.py [--size 256] [--steps 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from img2img import data, losses
from img2img.networks import registry
from img2img.networks.init import init_weights
from img2img.training import loop
from img2img.training.config import build_config
from img2img.training.method import StepContext
from img2img.training.methods.pix2pix import Pix2Pix, Pix2PixConfig


def write_pairs(root: Path, size: int, n: int = 8) -> None:
    """``root/trainA``, ``root/trainB``: n pairs of noisy size x size PNGs (facades-like sizes)."""
    from PIL import Image

    g = np.random.default_rng(0)
    for side in ("A", "B"):
        (root / f"train{side}").mkdir(parents=True)
        for i in range(n):
            img = (g.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"train{side}" / f"{i:03d}.png")


def make_data_loader(root: Path, size: int) -> DataLoader:
    """The real data path of ``img2img train pix2pix``: PNG decode, resize to 286/256, random crop."""
    dataset = data.build_dataset("paired", root, split="train", image_size=size, seed=0)
    return data.make_loader(dataset, batch_size=1, num_workers=0, seed=0)


def plain_steps(loader: DataLoader, size: int, steps: int) -> list[dict[str, float]]:
    """The plain way: one hand-written pix2pix step, timed phase by phase."""
    depth = Pix2PixConfig(image_size=size).unet_depth()
    g = init_weights(registry.build("unet", num_downs=depth, ngf=64, norm="batch", dropout=True), "normal", 0.02)
    d = init_weights(registry.build("patchgan", in_channels=6, ndf=64, n_layers=3, norm="batch"), "normal", 0.02)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=False)
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=False)
    g.train()
    d.train()
    times = []
    it = iter(loader)
    for _ in range(steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        real_a, real_b = batch["a"] * 2 - 1, batch["b"] * 2 - 1
        t1 = time.perf_counter()
        fake_b = g(real_a)
        for p in d.parameters():
            p.requires_grad_(True)
        pred_fake = d(torch.cat([real_a, fake_b.detach()], 1))
        pred_real = d(torch.cat([real_a, real_b], 1))
        loss_d = 0.5 * (
            losses.gan_loss(pred_fake, real=False, mode="vanilla") + losses.gan_loss(pred_real, real=True, mode="vanilla")
        )
        t2 = time.perf_counter()
        opt_d.zero_grad()
        loss_d.backward()
        t3 = time.perf_counter()
        opt_d.step()
        t4 = time.perf_counter()
        for p in d.parameters():
            p.requires_grad_(False)
        loss_g = losses.generator_loss(d(torch.cat([real_a, fake_b], 1)), mode="vanilla") + 100 * (
            fake_b - real_b
        ).abs().mean()
        t5 = time.perf_counter()
        opt_g.zero_grad()
        loss_g.backward()
        t6 = time.perf_counter()
        opt_g.step()
        t7 = time.perf_counter()
        times.append({
            "data": t1 - t0,
            "forward": (t2 - t1) + (t5 - t4),
            "backward": (t3 - t2) + (t6 - t5),
            "optimiser": (t4 - t3) + (t7 - t6),
            "total": t7 - t0,
        })
    return times


def ours_steps(loader: DataLoader, size: int, steps: int, workdir: Path) -> list[dict[str, float]]:
    """Our loop: fit() with the Pix2Pix method, phases timed by wrapping the loop's hooks."""
    events: list[tuple[str, float, float]] = []

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            events.append((name, t, time.perf_counter()))
            return out

        return wrapper

    saved = (loop.DataStream.__next__, loop._to_device, StepContext.backward, StepContext.step_optimizer,
             Pix2Pix.train_step, loop.save_checkpoint, loop._export)
    loop.DataStream.__next__ = timed("data", saved[0])
    loop._to_device = timed("data", saved[1])
    StepContext.backward = timed("backward", saved[2])
    StepContext.step_optimizer = timed("optimiser", saved[3])
    Pix2Pix.train_step = timed("train_step", saved[4])
    loop.save_checkpoint = timed("save", lambda *a, **k: None)
    loop._export = timed("save", lambda *a, **k: None)
    try:
        config = build_config(Pix2PixConfig, ("bench", dict(
            image_size=size, steps=steps, ngf=64, ndf=64, log_every=10**9, sample_every=0, val_every=0,
            checkpoint_every=0, tensorboard=False, augment=[])))
        method = Pix2Pix(config)
        loop.fit(method, train_loader=loader, run_dir=workdir, device=torch.device("cpu"), progress=False)
    finally:
        (loop.DataStream.__next__, loop._to_device, StepContext.backward, StepContext.step_optimizer,
         Pix2Pix.train_step, loop.save_checkpoint, loop._export) = saved

    # A step runs from the start of one DataStream fetch to the start of the next (or of the final save).
    starts = [t0 for name, t0, _ in events if name == "data"][::2]  # __next__ then _to_device per step
    end = next(t0 for name, t0, _ in events if name == "save")
    bounds = starts + [end]
    times = []
    for i in range(len(starts)):
        lo, hi = bounds[i], bounds[i + 1]
        sums: dict[str, float] = defaultdict(float)
        for name, t0, t1 in events:
            if lo <= t0 < hi:
                sums[name] += t1 - t0
        times.append({
            "data": sums["data"],
            "forward": sums["train_step"] - sums["backward"] - sums["optimiser"],
            "backward": sums["backward"],
            "optimiser": sums["optimiser"],
            "total": hi - lo,
        })
    return times




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="steps per round and implementation (first is warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    results: dict[str, list[dict[str, float]]] = {"ours": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        write_pairs(Path(tmp) / "pairs", args.size)
        loader = make_data_loader(Path(tmp) / "pairs", args.size)
        for r in range(args.rounds):
            results["ours"] += ours_steps(loader, args.size, args.steps, Path(tmp) / f"round{r}")[1:]
            results["plain"] += plain_steps(loader, args.size, args.steps)[1:]
            print(f"round {r + 1}/{args.rounds}: ours {statistics.median(t['total'] for t in results['ours']):.3f} s,"
                  f" plain {statistics.median(t['total'] for t in results['plain']):.3f} s", flush=True)

    print(f"\npix2pix train step, {args.size}x{args.size}, batch 1, ngf=ndf=64, CPU "
          f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}); "
          f"{args.rounds} interleaved rounds x {args.steps - 1} counted steps")
    print(f"{'':10s}{'total s':>9s}{'data':>9s}{'forward':>9s}{'backward':>9s}{'optimiser':>10s}")
    med = {}
    for name, rows in results.items():
        med[name] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        m = med[name]
        print(f"{name:10s}{m['total']:9.3f}{m['data']:9.3f}{m['forward']:9.3f}{m['backward']:9.3f}{m['optimiser']:10.3f}")
    print(f"\nspeed-up ours vs plain: {med['plain']['total'] / med['ours']['total']:.2f}x (>= 1.0 means ours is faster)")


if __name__ == "__main__":
    main()
