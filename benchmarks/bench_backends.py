"""Backends through the tiled engine: torch vs ONNX Runtime vs OpenVINO, interleaved in one run.

For each model, one photo-sized random input runs through ``Engine`` with each backend's runner
(the same tiles, blending and quantisation; only what runs a batch of tiles differs), round
after round, backends interleaved within a round so that load changes hit all of them alike.
Printed: seconds per output megapixel (median over rounds) and the ratio to torch, plus the
one-off ONNX export time (cached on disk afterwards) and the load average before and after.

Models (random weights: speed does not depend on them):
    x4       the bundled default upscaler (img2img-sr-x4)
    rrdb     RRDBNet x4, 64 features, 23 blocks (ESRGAN / Real-ESRGAN size)
    resnet   CycleGAN ResNet-9, ngf 64 (InstanceNorm: whole image for every backend, tile 0,
             since only the torch runner receives whole-image statistics when tiling)
    unet     pix2pix U-Net 256, ngf 64 (whole image: its receptive field is its input)

Usage (threads: ONNX Runtime / OpenVINO intra-op threads; torch runs its usual 2 one-core tile workers):
    .venv/bin/python benchmarks/bench_backends.py                       # the record, quiet machine
    .venv/bin/python benchmarks/bench_backends.py --short               # small inputs: does it run
    .venv/bin/python benchmarks/bench_backends.py --models x4 --rounds 5 --batch 2
    .venv/bin/python benchmarks/bench_backends.py --models x4 --side 1000 --rounds 1   # a photo-sized run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

# Input side per model (full run, short run): output megapixels = (side * scale)^2 / 1e6.
SIZES = {"x4": (384, 96), "rrdb": (256, 64), "resnet": (512, 256), "unet": (512, 256)}
BACKENDS = ("torch", "onnxruntime", "openvino")


def model_for(name: str):
    import torch

    from img2img.checkpoints import load_model
    from img2img.checkpoints.descriptor import ModelDescriptor
    from img2img.networks import build, init_weights, resolve_kwargs

    torch.manual_seed(0)
    if name == "x4":
        return load_model("img2img-sr-x4")
    arch, overrides = {
        "rrdb": ("rrdbnet", {"scale": 4, "num_feat": 64, "num_block": 23, "num_grow_ch": 32}),
        "resnet": ("resnet_9blocks", {"ngf": 64}),
        "unet": ("unet_256", {"ngf": 64, "dropout": False}),
    }[name]
    kwargs = resolve_kwargs(arch, **overrides)
    net = build(arch, **kwargs)
    init_weights(net)
    value_range = (0.0, 1.0) if name == "rrdb" else (-1.0, 1.0)
    return ModelDescriptor.from_net(net.eval(), arch=arch, kwargs=kwargs, value_range=value_range)


def engines_for(model, backends, *, threads: int, batch: int | None):
    """{backend: (Engine, export seconds)}; runners are built directly, so an InstanceNorm model
    can be compared on whole images (tile 0) too."""
    from img2img.checkpoints.export import cached_onnx
    from img2img.inference import Engine
    from img2img.inference.backends import OnnxRuntimeRunner, OpenVinoRunner

    whole = model.instance_norm or model.arch.startswith("unet")
    tile = 0 if whole else "auto"
    engines = {}
    export_seconds = 0.0
    if set(backends) - {"torch"}:
        start = time.perf_counter()
        path = cached_onnx(model)
        export_seconds = time.perf_counter() - start
    for backend in backends:
        if backend == "torch":
            engines[backend] = Engine(model, tile=tile, device="cpu", batch=batch)
        else:
            runner_type = OnnxRuntimeRunner if backend == "onnxruntime" else OpenVinoRunner
            runner = runner_type(path, model, threads=threads)
            engines[backend] = Engine(model, tile=tile, batch=batch, runner=runner)
    return engines, export_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="x4,rrdb,resnet,unet")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="tiles per runner call [engine default]")
    parser.add_argument("--short", action="store_true", help="small inputs (a check that it runs)")
    parser.add_argument("--side", type=int, default=None, help="input side for every model (default: SIZES)")
    args = parser.parse_args()

    # What `img2img upscale/translate` does first (cli/__init__.py): glibc keeps freed memory, so
    # torch's tiles do not page-fault their activations in again (docs/backends.md, "Memory churn").
    # Without it the torch rows carry a cost the CLI does not pay and every ratio is flattered.
    from img2img import allocator

    kept = allocator.keep_freed_memory()
    # An export cache of its own, so the export time printed is the first-use cost.
    os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="bench_backends_"))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    backends = [b for b in args.backends.split(",") if b]
    rounds = args.rounds
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; threads {args.threads}; "
          f"malloc keeps freed memory (as the CLI): {kept}")
    print(f"torch {torch.__version__}", end="")
    for module in ("onnxruntime", "openvino"):
        try:
            print(f", {module} {__import__(module).__version__}", end="")
        except ImportError:
            print(f", {module} missing", end="")
    print()
    print(f"{'model':<8} {'input':>9} {'backend':<12} {'s/MP (median)':>14} {'runs':>22} {'vs torch':>9}")
    for name in args.models.split(","):
        model = model_for(name)
        side = args.side or SIZES[name][1 if args.short else 0]
        pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        megapixels = (side * model.scale) ** 2 / 1e6
        engines, export_seconds = engines_for(model, backends, threads=args.threads, batch=args.batch)
        for engine in engines.values():  # warm-up: sessions and compiled shapes, first-call costs
            engine(pixels[: side // 2, : side // 2])
            engine(pixels)
        times: dict[str, list[float]] = {b: [] for b in backends}
        for _ in range(rounds):
            for backend, engine in engines.items():
                start = time.perf_counter()
                engine(pixels)
                times[backend].append((time.perf_counter() - start) / megapixels)
        base = statistics.median(times["torch"]) if "torch" in times else None
        for backend in backends:
            median = statistics.median(times[backend])
            runs = " ".join(f"{t:.2f}" for t in times[backend])
            ratio = f"{base / median:.2f}x" if base else "-"
            print(f"{name:<8} {side:>4}x{side:<4} {backend:<12} {median:>14.3f} {runs:>22} {ratio:>9}")
        if export_seconds:
            print(f"{name:<8} ONNX export (first use, then cached): {export_seconds:.1f} s")
        sys.stdout.flush()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
