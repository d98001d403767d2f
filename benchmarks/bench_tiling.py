"""Tiled inference: our engine vs the plain tiling loop of the reference tools, in one run.

For RRDBNet x4 (64 features, 23 blocks) and the CycleGAN ResNet-9 generator on a SIZE x SIZE photo,
each configuration runs in its own subprocess (so its peak RSS, ru_maxrss, is its own) and prints
seconds, peak RSS and *useful* GFLOP/s: the FLOPs of the image itself (per-pixel model FLOPs x
H x W), so recomputed overlap does not count.

Configurations:
    matmul   float32 2048^2 matmul: the machine's rate, for scale
    plain    the reference tools' loop: 128-px tiles, 10 px of context each side (clipped at the
             border), eager float32 NCHW forward, crop, paste into a float32 output, quantise at the end
    ours     Engine at its defaults on uint8 pixels (what `img2img upscale/translate` runs)
    extra, with --configs: ours-1worker (one tile at a time on all cores), ours-compile
             (--compile), ours-tiled (an InstanceNorm net tiled at 256 px instead of whole)

Usage:
    .venv/bin/python benchmarks/bench_tiling.py --size 1024            # the record (run time: docs/benchmarks.md)
    .venv/bin/python benchmarks/bench_tiling.py --size 256 --models rrdb --configs plain,ours,ours-1worker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = ("matmul", "plain", "ours", "ours-1worker", "ours-compile", "ours-tiled")
DEFAULT_CONFIGS = ("matmul", "plain", "ours")
MODELS = ("rrdb", "resnet")
PLAIN_TILE, PLAIN_PAD = 128, 10


def at_overlap(engine, overlap: int):
    """``engine`` with its overlap set directly: these measurements include half a tile, which
    ``Engine(overlap=...)`` and the CLI refuse for users (the plan still caps it at half a tile)."""
    engine.overlap = overlap
    return engine


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------------- worker side


def model_for(name: str):
    import torch

    from img2img.checkpoints.descriptor import ModelDescriptor
    from img2img.networks import build, init_weights

    torch.manual_seed(0)
    if name == "rrdb":
        net = build("rrdbnet", scale=4, num_feat=64, num_block=23, num_grow_ch=32)
        kwargs, value_range = {}, (0.0, 1.0)
    else:
        net = init_weights(build("resnet_9blocks"), "normal", 0.02)
        kwargs, value_range = {}, (-1.0, 1.0)
    return ModelDescriptor.from_net(net.eval(), arch=name, kwargs=kwargs, value_range=value_range)


def flops_per_pixel(model) -> float:
    """Convolution FLOPs (2 x multiply-adds) per input pixel, counted with hooks on a 64 x 64 probe."""
    import torch
    from torch import nn

    total = [0]

    def conv(m: nn.Conv2d, inputs, out) -> None:
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def deconv(m: nn.ConvTranspose2d, inputs, out) -> None:
        total[0] += inputs[0].numel() * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else deconv)
        for m in model.net.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    with torch.inference_mode():
        model.net(torch.zeros(1, model.in_channels, 64, 64))
    for h in hooks:
        h.remove()
    return 2 * total[0] / 64**2


def photo(size: int):
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def plain_loop(model, pixels):
    """The reference tools' tiling: context crop, eager float32 NCHW, crop, paste into float32."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    low, high = model.value_range
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 * (high - low) + low
    _, c, h, w = x.shape
    s, m = model.scale, model.size_multiple
    out = torch.zeros(1, model.out_channels, h * s, w * s)
    with torch.no_grad():
        for y0 in range(0, h, PLAIN_TILE):
            for x0 in range(0, w, PLAIN_TILE):
                y1, x1 = min(y0 + PLAIN_TILE, h), min(x0 + PLAIN_TILE, w)
                py0, px0 = max(y0 - PLAIN_PAD, 0), max(x0 - PLAIN_PAD, 0)
                py1, px1 = min(y1 + PLAIN_PAD, h), min(x1 + PLAIN_PAD, w)
                tile = x[:, :, py0:py1, px0:px1]
                th, tw = tile.shape[2:]
                if (th % m) or (tw % m):  # e.g. CycleGAN's ResNet needs multiples of 4
                    tile = F.pad(tile, (0, -tw % m, 0, -th % m), mode="reflect")
                y = model.net(tile)
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = y[
                    :, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
                ]
    u8 = ((out[0] - low) / (high - low) * 255).clamp(0, 255).round().to(torch.uint8)
    return np.ascontiguousarray(u8.permute(1, 2, 0).numpy())


def worker(model_name: str, config: str, size: int) -> dict:
    import torch

    if config == "matmul":
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        a @ b
        reps, start = 10, time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "gflops": reps * 2 * 2048**3 / seconds / 1e9,
            "peak_rss_mib": peak_rss_mib(),
        }

    from img2img.inference import Engine

    model = model_for(model_name)
    pixels = photo(size)
    useful = flops_per_pixel(model) * size * size
    start_rss = rss_mib()
    start = time.perf_counter()
    if config == "plain":
        out = plain_loop(model, pixels)
    else:
        options = {
            "ours": {},
            "ours-1worker": {"workers": 1},
            "ours-compile": {"compile": True},
            "ours-tiled": {"tile": 256},
        }[config]
        engine = Engine(model, **options)
        out = engine(pixels)
    seconds = time.perf_counter() - start
    assert out.shape == (size * model.scale, size * model.scale, 3)
    return {
        "seconds": seconds,
        "gflops": useful / seconds / 1e9,
        "useful_gflop": useful / 1e9,
        "rss_before_mib": start_rss,
        "peak_rss_mib": peak_rss_mib(),
        "output_mib": out.nbytes / 2**20,
    }


# ----------------------------------------------------------------------------------- measurements


def measure_overlap() -> None:
    """Max |tiled - whole| (levels of 255) for RRDBNet x4 64/23 by overlap, three initialisations.

    A coffee-photo crop of 128 x 128, 64-px tiles (so 3 x 3 tiles), outputs rescaled to mean 0.5 and
    std 0.25 so they span the range like a trained model's.
    """
    import torch
    from skimage import data
    from torch import nn

    from img2img.checkpoints.descriptor import ModelDescriptor
    from img2img.inference import Engine
    from img2img.networks import build

    x = torch.from_numpy(data.coffee()[100:228, 200:328].copy()).permute(2, 0, 1).float() / 255
    for init in ("basicsr", "pytorch-default", "kaiming"):
        torch.manual_seed(0)
        net = build("rrdbnet").eval()
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and init == "pytorch-default":
                m.reset_parameters()
            elif isinstance(m, nn.Conv2d) and init == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0.2)
                nn.init.zeros_(m.bias)
        with torch.inference_mode():
            y = net(x[None])
            net.conv_last.weight.mul_(0.25 / y.std())
            net.conv_last.bias.add_(0.5 - net(x[None]).mean())
        model = ModelDescriptor.from_net(net, arch="rrdbnet", kwargs={}, value_range=(0.0, 1.0))
        whole = Engine(model, tile=0)(x)
        cells = []
        for overlap in (0, 8, 16, 24, 32):
            tiled = at_overlap(Engine(model, tile=64), overlap)(x)
            cells.append(f"{overlap}: {255 * (tiled - whole).abs().max().item():.3f}")
        print(f"{init:<16} max |tiled - whole| x 255 by overlap  " + "   ".join(cells), flush=True)


def measure_instance_norm() -> None:
    """PSNR(tiled, whole) for a CycleGAN ResNet-9 (ngf 16, N(0, 0.02), last conv rescaled) on astronaut.

    Rows: per-tile statistics (the naive way), statistics of a downscaled copy frozen, the exact
    layer-by-layer streaming (ours) at three overlaps, and ours' sensitivity: whole-image output
    with every layer's statistics perturbed by 0.1 % / 1 %.
    """
    import math

    import torch
    import torch.nn.functional as F
    from skimage import data
    from torch import nn

    from img2img.checkpoints.descriptor import ModelDescriptor
    from img2img.inference import Engine, instance_norm
    from img2img.inference.tiling import plan_axis
    from img2img.networks import build, init_weights

    torch.manual_seed(0)
    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 127.5 - 1
    net = init_weights(build("resnet_9blocks", ngf=16), "normal", 0.02).eval()
    last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.inference_mode():
        seen = {}
        hook = last.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
        net(x[None])
        hook.remove()
        last.weight.div_(seen["out"].std())
    model = ModelDescriptor.from_net(net, arch="resnet_9blocks", kwargs={}, value_range=(-1.0, 1.0))

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        qa, qb = ((a.clamp(-1, 1) + 1) * 127.5).round(), ((b.clamp(-1, 1) + 1) * 127.5).round()
        mse = (qa - qb).square().mean().item()
        return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)

    def timed(engine: Engine) -> str:
        start = time.perf_counter()
        out = engine(x)
        return f"{psnr(out, whole):.1f} dB ({time.perf_counter() - start:.1f} s)"

    start = time.perf_counter()
    whole = Engine(model, tile=0)(x)
    print(f"whole image 512 x 512: {time.perf_counter() - start:.1f} s")
    naive = at_overlap(Engine(model, tile=128), 32)
    naive.norm_layers = []  # every tile normalises by itself
    print(f"per-tile statistics, tile 128 overlap 32: {timed(naive)}")

    layers = instance_norm.per_image_norms(net)

    def whole_image_stats(image: torch.Tensor) -> dict:
        """Exact statistics of a (3, H, W) image run whole: one tile covering it."""
        _, h, w = image.shape
        with torch.inference_mode():
            return instance_norm.measure_stats(
                net, layers, net, lambda y0, y1, x0, x1: image[:, y0:y1, x0:x1],
                rows=plan_axis(h, tile=0, overlap=0), cols=plan_axis(w, tile=0, overlap=0), multiple=1, batch=1,
            )

    # Statistics of the image box-filtered to 1/4 size, frozen for the tiles.
    stats = whole_image_stats(F.avg_pool2d(x[None], 4)[0])
    frozen = at_overlap(Engine(model, tile=128), 64)
    frozen.norm_layers = []
    with instance_norm.frozen(net, layers, stats):
        print(f"statistics of a 1/4-size copy, tile 128 overlap 64: {timed(frozen)}")

    for tile, overlap in ((128, 32), (128, 64), (256, 64)):
        print(
            f"ours (layer-by-layer), tile {tile} overlap {overlap}: {timed(at_overlap(Engine(model, tile=tile), overlap))}"
        )

    true = whole_image_stats(x)
    with torch.inference_mode():
        for eps in (0.001, 0.01):
            g = torch.Generator().manual_seed(1)
            noisy = {
                i: (
                    m + eps * v.sqrt() * torch.randn(m.shape, generator=g),
                    v * (1 + eps * torch.randn(v.shape, generator=g)),
                )
                for i, (m, v) in true.items()
            }
            with instance_norm.frozen(net, layers, noisy):
                out = net(x[None])[0]
            print(f"whole image, every layer's statistics off by {100 * eps:g} %: {psnr(out, whole):.1f} dB")


def measure_memory_worker(width: int, height: int) -> dict:
    """Peak RSS of one x4 upscale of a width x height image with a cheap stand-in model."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from img2img.checkpoints.descriptor import ModelDescriptor
    from img2img.inference import Engine

    class NearestX4(nn.Module):  # memory behaviour of the engine, not of a network's activations
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=4, mode="nearest")

    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    engine = Engine(ModelDescriptor(net=NearestX4(), arch="nearest", scale=4), tile=192)
    before = rss_mib()
    out = engine(pixels)
    return {"before_mib": before, "peak_rss_mib": peak_rss_mib(), "output_mib": out.nbytes / 2**20}


def measure_memory() -> None:
    """Peak RSS of x4 upscales of growing images: it should grow with the uint8 output only."""
    print(
        f"{'input':>12}{'output MiB':>12}{'RSS before':>12}{'peak RSS':>10}{'peak - before - output':>24}{'float output would be':>23}"
    )
    for width, height in ((1000, 750), (2000, 1500), (4000, 3000)):
        cmd = [sys.executable, __file__, "--worker", "memory", str(width), str(height)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        extra = r["peak_rss_mib"] - r["before_mib"] - r["output_mib"]
        print(
            f"{width:>6}x{height:<5}{r['output_mib']:>12.0f}{r['before_mib']:>12.0f}{r['peak_rss_mib']:>10.0f}"
            f"{extra:>24.0f}{4 * r['output_mib']:>23.0f}",
            flush=True,
        )


# ----------------------------------------------------------------------------------- parent side


def run_config(model: str, config: str, size: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", model, config, str(size)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model}/{config} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024, help="input side in pixels (default 1024)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: rrdb,resnet")
    parser.add_argument(
        "--configs", default=",".join(DEFAULT_CONFIGS), help=f"comma-separated from {','.join(CONFIGS)}"
    )
    parser.add_argument(
        "--measure",
        choices=("overlap", "instance-norm", "memory"),
        help="run a measurement behind docs/inference.md instead",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds over the configs (interleaved); the best time counts"
    )
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "CONFIG", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, config, size = args.worker
        if model == "memory":
            print(json.dumps(measure_memory_worker(int(config), int(size))))
        else:
            print(json.dumps(worker(model, config, int(size))))
        return
    if args.measure:
        {"overlap": measure_overlap, "instance-norm": measure_instance_norm, "memory": measure_memory}[
            args.measure
        ]()
        return

    import torch

    configs = [c for c in args.configs.split(",") if c]
    models = [m for m in args.models.split(",") if m]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads; input {args.size}x{args.size}; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    matmul = run_config("-", "matmul", 0) if "matmul" in configs else None
    if matmul:
        print(f"float32 matmul 2048^2: {matmul['gflops']:.1f} GFLOP/s")
    for model in models:
        print(f"\n{model} (useful work counts the image once; overlap recomputation does not):")
        print(
            f"  {'config':<14}{'seconds':>10}{'GFLOP/s':>10}{'% matmul':>10}{'peak RSS MiB':>14}{'RSS before':>12}{'output MiB':>12}"
        )
        runs = [c for c in configs if c != "matmul" and not (c == "ours-tiled" and model != "resnet")]
        results: dict[str, dict] = {}
        for round_ in range(args.repeat):
            # Interleaved, order rotated each round, best time kept: a shared machine's load drifts.
            for config in runs[round_ % len(runs) :] + runs[: round_ % len(runs)]:
                r = run_config(model, config, args.size)
                if config not in results or r["seconds"] < results[config]["seconds"]:
                    results[config] = r
                print(f"  ({config} round {round_ + 1}: {r['seconds']:.1f} s)", flush=True)
        for config in runs:
            r = results[config]
            share = f"{100 * r['gflops'] / matmul['gflops']:.0f}%" if matmul else "-"
            print(
                f"  {config:<14}{r['seconds']:>10.1f}{r['gflops']:>10.1f}{share:>10}{r['peak_rss_mib']:>14.0f}"
                f"{r['rss_before_mib']:>12.0f}{r['output_mib']:>12.1f}",
                flush=True,
            )
        if "plain" in results:
            for config, r in results.items():
                if config != "plain":
                    print(f"  {config} vs plain: {results['plain']['seconds'] / r['seconds']:.2f}x faster")
    print(
        f"\nload average at end {os.getloadavg()[0]:.1f} (the machine is shared: compare ratios, not absolutes)"
    )


if __name__ == "__main__":
    main()
