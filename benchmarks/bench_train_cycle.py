"""Seconds per CycleGAN training step on this machine: our loop vs the same step written the plain way.

Both train the same networks (two ResNet-9 generators, ngf = 64, and two 70x70 PatchGANs,
ndf = 64, instance norm) at 256x256, batch 1, with the same objective (LSGAN, cycle lambda 10,
identity 0.5, 50-image history pools) and the same data loader (the real unpaired one: 8 + 8 PNGs
decoded, resized to 286 and randomly cropped to 256 in the main process; no flips in either).
"Ours" is ``img2img.training.loop.fit`` with the ``cyclegan`` method and its CPU defaults (fp32,
NCHW, fused Adam); "plain" is a hand-written eager step in the reference order: NCHW, fp32,
``loss.backward()``, ``torch.optim.Adam(foreach=False)``, a list as the image pool.

The machine may be shared, so the two run interleaved step by step in one process: each of our
steps is followed by one plain step (run from inside our loop and taken out of our time), for
``--steps`` steps in each of ``--rounds`` rounds; the first step of every round is a warm-up and
not counted; medians are reported. Checkpoint and export writes happen once per run, not per
step, and are left out (disabled here).

Split: data = fetching the next batch and moving it to the device; forward = the four generator
passes, the two identity passes, the discriminator passes and the losses; backward = the two
backward passes; optimiser = the two Adam steps (and zero_grad). Ours also has loop overhead
(learning rates, NaN guard, logging) in its total.

    .venv/bin/python benchmarks/bench_train_cycle.py [--size 256] [--steps 4] [--rounds 1]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from img2img import data
from img2img.networks import registry
from img2img.networks.init import init_weights
from img2img.training import loop
from img2img.training.config import build_config
from img2img.training.method import StepContext
from img2img.training.methods.cycle import Cycle, CycleConfig

LAMBDA_CYCLE, LAMBDA_IDENTITY, POOL_SIZE = 10.0, 0.5, 50


def write_domains(root: Path, size: int, n: int = 8) -> None:
    """``root/trainA`` and ``root/trainB``: n noisy size x size PNGs each (horse2zebra-like sizes)."""
    from PIL import Image

    g = np.random.default_rng(0)
    for side in ("A", "B"):
        (root / f"train{side}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray((g.random((size, size, 3)) * 255).astype(np.uint8)).save(root / f"train{side}" / f"{i}.png")


def make_data_loader(root: Path, size: int) -> DataLoader:
    """The real data path of ``img2img train cyclegan``: PNG decode, resize to 286/256, random crop."""
    dataset = data.build_dataset("unpaired", root, split="train", image_size=size, seed=0)
    return data.make_loader(dataset, batch_size=1, num_workers=0, seed=0)


def plain_pool(pool: list[torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The reference history pool, written inline: store while filling, else swap with p = 1/2."""
    out = []
    for image in images.detach():
        if len(pool) < POOL_SIZE:
            pool.append(image.clone())
            out.append(image)
        elif random.random() < 0.5:
            slot = random.randrange(POOL_SIZE)
            out.append(pool[slot])
            pool[slot] = image.clone()
        else:
            out.append(image)
    return torch.stack(out)


class PlainCycle:
    """The plain way: the networks, optimisers and pools of a hand-written CycleGAN step."""

    def __init__(self, loader: DataLoader) -> None:
        def net(name: str, **kwargs) -> torch.nn.Module:
            return init_weights(registry.build(name, **kwargs), "normal", 0.02).train()

        self.g_ab, self.g_ba = (net("resnet_9blocks", ngf=64, norm="instance") for _ in range(2))
        self.d_a, self.d_b = (net("patchgan", in_channels=3, ndf=64, n_layers=3, norm="instance") for _ in range(2))
        g_params = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        self.d_params = [*self.d_a.parameters(), *self.d_b.parameters()]
        self.opt_g = torch.optim.Adam(g_params, lr=2e-4, betas=(0.5, 0.999), foreach=False)
        self.opt_d = torch.optim.Adam(self.d_params, lr=2e-4, betas=(0.5, 0.999), foreach=False)
        self.pool_a: list[torch.Tensor] = []
        self.pool_b: list[torch.Tensor] = []
        self.loader = loader
        self.it = iter(loader)

    def step(self) -> dict[str, float]:
        """One step in the reference order, timed phase by phase."""
        g_ab, g_ba, d_a, d_b = self.g_ab, self.g_ba, self.d_a, self.d_b
        t0 = time.perf_counter()
        try:
            batch = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            batch = next(self.it)
        real_a, real_b = batch["a"] * 2 - 1, batch["b"] * 2 - 1
        t1 = time.perf_counter()
        for p in self.d_params:
            p.requires_grad_(False)
        fake_b = g_ab(real_a)
        rec_a = g_ba(fake_b)
        fake_a = g_ba(real_b)
        rec_b = g_ab(fake_a)
        loss_g = (
            (d_b(fake_b) - 1).pow(2).mean()
            + (d_a(fake_a) - 1).pow(2).mean()
            + LAMBDA_CYCLE * ((rec_a - real_a).abs().mean() + (rec_b - real_b).abs().mean())
            + LAMBDA_CYCLE * LAMBDA_IDENTITY * ((g_ab(real_b) - real_b).abs().mean() + (g_ba(real_a) - real_a).abs().mean())
        )
        t2 = time.perf_counter()
        self.opt_g.zero_grad()
        loss_g.backward()
        t3 = time.perf_counter()
        self.opt_g.step()
        t4 = time.perf_counter()
        for p in self.d_params:
            p.requires_grad_(True)
        pooled_a, pooled_b = plain_pool(self.pool_a, fake_a), plain_pool(self.pool_b, fake_b)
        loss_d = 0.5 * (
            (d_a(real_a) - 1).pow(2).mean() + d_a(pooled_a).pow(2).mean()
            + (d_b(real_b) - 1).pow(2).mean() + d_b(pooled_b).pow(2).mean()
        )
        t5 = time.perf_counter()
        self.opt_d.zero_grad()
        loss_d.backward()
        t6 = time.perf_counter()
        self.opt_d.step()
        t7 = time.perf_counter()
        assert torch.isfinite(loss_g) and torch.isfinite(loss_d)
        return {
            "data": t1 - t0,
            "forward": (t2 - t1) + (t5 - t4),
            "backward": (t3 - t2) + (t6 - t5),
            "optimiser": (t4 - t3) + (t7 - t6),
            "total": t7 - t0,
        }


def interleaved(loader: DataLoader, plain_loader: DataLoader, size: int, steps: int, workdir: Path
                ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """``steps`` steps of our loop (fit() with the cycle method), each followed by one plain step.

    Our phases are timed by wrapping the loop's hooks; the plain step runs right after each of our
    ``train_step`` calls and its time is taken out of ours, so both see the same machine load.
    """
    events: list[tuple[str, float, float]] = []
    plain = PlainCycle(plain_loader)
    plain_times: list[dict[str, float]] = []

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            events.append((name, t, time.perf_counter()))
            return out

        return wrapper

    def ours_then_plain(self, ctx, batch):
        out = timed("train_step", saved[4])(self, ctx, batch)
        t = time.perf_counter()
        plain_times.append(plain.step())
        events.append(("plain", t, time.perf_counter()))
        return out

    saved = (loop.DataStream.__next__, loop._to_device, StepContext.backward, StepContext.step_optimizer,
             Cycle.train_step, loop.save_checkpoint, loop._export)
    loop.DataStream.__next__ = timed("data", saved[0])
    loop._to_device = timed("data", saved[1])
    StepContext.backward = timed("backward", saved[2])
    StepContext.step_optimizer = timed("optimiser", saved[3])
    Cycle.train_step = ours_then_plain
    loop.save_checkpoint = timed("save", lambda *a, **k: None)
    loop._export = timed("save", lambda *a, **k: None)
    try:
        config = build_config(CycleConfig, ("bench", dict(
            image_size=size, steps=steps, ngf=64, ndf=64, log_every=10**9, sample_every=0, val_every=0,
            checkpoint_every=0, tensorboard=False, augment=[])))
        method = Cycle(config)
        loop.fit(method, train_loader=loader, run_dir=workdir, device=torch.device("cpu"), progress=False)
    finally:
        (loop.DataStream.__next__, loop._to_device, StepContext.backward, StepContext.step_optimizer,
         Cycle.train_step, loop.save_checkpoint, loop._export) = saved

    # Our step runs from the start of one DataStream fetch to the start of the next (or of the final
    # save), less the plain step inside it.
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
            "total": hi - lo - sums["plain"],
        })
    return times, plain_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="steps per round and implementation (first is warm-up)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    random.seed(0)
    results: dict[str, list[dict[str, float]]] = {"ours": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_domains(root, args.size * 286 // 256)
        for r in range(args.rounds):
            ours, plain = interleaved(make_data_loader(root, args.size), make_data_loader(root, args.size),
                                      args.size, args.steps, Path(tmp) / f"round{r}")
            for i, (o, p) in enumerate(zip(ours, plain, strict=True)):
                print(f"round {r + 1} step {i + 1}: ours {o['total']:.2f} s, plain {p['total']:.2f} s"
                      + (" (warm-up)" if i == 0 else ""), flush=True)
            results["ours"] += ours[1:]
            results["plain"] += plain[1:]

    print(f"\nCycleGAN train step, {args.size}x{args.size}, batch 1, resnet_9blocks ngf=64 + PatchGAN ndf=64, CPU "
          f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}); "
          f"{args.rounds} round(s) x {args.steps - 1} counted steps, interleaved step by step")
    print(f"{'':10s}{'total s':>9s}{'data':>9s}{'forward':>9s}{'backward':>9s}{'optimiser':>10s}")
    med = {}
    for name, rows in results.items():
        med[name] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        m = med[name]
        print(f"{name:10s}{m['total']:9.2f}{m['data']:9.3f}{m['forward']:9.2f}{m['backward']:9.2f}{m['optimiser']:10.3f}")
    print(f"\nspeed-up ours vs plain: {med['plain']['total'] / med['ours']['total']:.2f}x (>= 1.0 means ours is faster)")


if __name__ == "__main__":
    main()
