"""`img2img translate` and `img2img upscale`: run a model over a file, a folder or a glob.

A thin layer: parse, load the model (``img2img.checkpoints.load_model``), build an
``img2img.inference.Engine``, run the folder pipeline, map the outcome to exit codes
(0 all written or already there, 1 some inputs failed, each named on stderr, 2 usage errors).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from img2img.cli.common import EXIT_OK, EXIT_SOME_FAILED, fail, get_context


class TileType(click.ParamType):
    """``auto``, ``0`` (whole image) or a tile side in pixels."""

    name = "PX|auto|0"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            tile = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of pixels, 'auto' or 0", param, ctx)
        if tile < 0:
            self.fail(f"{tile} is negative; use a number of pixels, 'auto' or 0", param, ctx)
        return tile


def _common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by translate and upscale (applied bottom-up, listed top-down in --help)."""
    options = [
        click.argument("src", type=str),
        click.argument("dst", type=click.Path(path_type=Path)),
        click.option(
            "--tile",
            type=TileType(),
            default="auto",
            show_default=True,
            help="Input tile side in pixels; 'auto' picks from free GPU memory (or a CPU default); 0 runs whole images.",
        ),
        click.option(
            "--overlap",
            type=click.IntRange(min=0),
            default=None,
            help="Pixels shared by neighbouring tiles, blended smoothly [default: 16 x the model's size multiple].",
        ),
        click.option(
            "--batch",
            type=click.IntRange(min=1),
            default=None,
            help="Tiles per forward pass [default: 4 on a GPU; on a CPU 2, run side by side on one core each].",
        ),
        click.option("--half", is_flag=True, help="fp16 autocast on CUDA/MPS (ignored with a note on CPU)."),
        click.option(
            "--compile", "compile_", is_flag=True, help="torch.compile the model (pays off on long runs)."
        ),
        click.option(
            "--backend",
            type=click.Choice(["auto", "torch", "onnxruntime", "openvino"]),  # backends.BACKENDS (a test checks)
            default="auto",
            show_default=True,
            envvar="IMG2IMG_BACKEND",
            help="What runs the network: auto takes the fastest runtime measured on a CPU for this "
            "architecture when the run is large enough to pay for its one-off ONNX export (or it is "
            "cached), else torch; torch on a GPU (docs/backends.md) [env IMG2IMG_BACKEND].",
        ),
        click.option(
            "--recursive",
            "-r",
            is_flag=True,
            help="Include sub-folders of SRC (keeping their structure), or '**' in a glob.",
        ),
        click.option("--suffix", default="", help="Appended to each output file's stem, e.g. '_x4'."),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["same", "png", "jpg", "webp"]),
            default="same",
            show_default=True,
            help="Output format.",
        ),
        click.option(
            "--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality."
        ),
        click.option(
            "--max-pixels",
            type=click.IntRange(min=0),
            default=None,
            envvar="IMG2IMG_MAX_PIXELS",
            help="Refuse inputs with more pixels, a guard against decompression bombs; 0: no limit "
            "[default: 250 million; env IMG2IMG_MAX_PIXELS].",
        ),
        click.option(
            "--skip-existing/--overwrite",
            default=True,
            show_default=True,
            help="Keep outputs that already exist (an interrupted run resumes), or redo them.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@_common_options
@click.option(
    "--model", "-m", required=True, help="Bundled name, model file (.safetensors/.pth) or run directory."
)
@click.option(
    "--direction",
    type=click.Choice(["AtoB", "BtoA"]),
    default=None,
    help="Which generator of a two-generator model (CycleGAN/DiscoGAN) [default: AtoB].",
)
@click.option("--arch", default=None, help="Architecture of a foreign file whose layout is ambiguous.")
@click.option(
    "--scale",
    type=click.IntRange(min=1),
    default=None,
    help="Scale of a foreign file whose layout is ambiguous.",
)
def translate(model: str, direction: str | None, arch: str | None, scale: int | None, **options: Any) -> None:
    """Translate images SRC -> DST with a pix2pix / CycleGAN / DiscoGAN generator.

    SRC is an image file, a directory or a quoted glob; DST a directory, or a file when SRC is one file.
    """
    _run(model=model, arch=arch, scale=scale, direction=direction, **options)


@click.command()
@_common_options
@click.option(
    "--model",
    "-m",
    default=None,
    help="Bundled name, model file (.safetensors/.pth) or run directory [default: the bundled upscaler for --scale].",
)
@click.option(
    "--scale",
    type=click.IntRange(min=1),
    default=None,
    help="Upscaling factor: picks the bundled default model [4], or settles an ambiguous foreign file.",
)
@click.option("--arch", default=None, help="Architecture of a foreign file whose layout is ambiguous.")
@click.option(
    "--denoise",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Denoise strength 0..1: blend the model with the real-world companion its card declares "
    "(0: clean-trained, 1: trained on noise/JPEG/blur) [default: the card's value; none for other models].",
)
@click.option(
    "--outscale",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Output size as a multiple of the input, e.g. 3.5: the model runs at its own scale, then the "
    "result is resized (area filter down, bicubic up) [default: the model's scale].",
)
def upscale(
    model: str | None, scale: int | None, arch: str | None, denoise: float | None, outscale: float | None,
    **options: Any,
) -> None:
    """Upscale images SRC -> DST with a super-resolution model (any size, tiled, seamless).

    SRC is an image file, a directory or a quoted glob; DST a directory, or a file when SRC is one file.
    The default model is PSNR-oriented: it restores edges and removes noise and JPEG artefacts at the
    card's denoise strength; it does not invent texture (docs/inference.md).
    """
    if model is None:
        from img2img.checkpoints import default_upscaler_name

        try:
            model = default_upscaler_name(4 if scale is None else scale)
        except ValueError as err:
            fail(str(err))
    _run(model=model, arch=arch, scale=scale, direction=None, denoise="default" if denoise is None else denoise,
         outscale=outscale, upscaling=True, **options)


def _run(
    *,
    model: str,
    arch: str | None,
    scale: int | None,
    direction: str | None,
    denoise: float | str | None = None,
    outscale: float | None = None,
    upscaling: bool = False,
    src: str,
    dst: Path,
    tile: int | str,
    overlap: int | None,
    batch: int | None,
    half: bool,
    compile_: bool,
    backend: str,
    recursive: bool,
    suffix: str,
    fmt: str,
    quality: int,
    max_pixels: int | None,
    skip_existing: bool,
) -> None:
    from img2img import image_io
    from img2img.checkpoints import CheckpointError, load_model
    from img2img.cli.progress import TileProgress
    from img2img.inference import (
        InferenceError,
        PipelineUsageError,
        output_megapixels,
        plan_jobs,
        run_jobs,
        sharding,
    )
    from img2img.inference.backends import make_engine

    settings = get_context()
    verbosity = settings.verbosity
    # Under torchrun each process takes every WORLD_SIZE-th file; rank 0 reports for all (docs/distributed.md).
    with _inference_logging(verbosity), sharding.session() as shard:
        main = shard is None or shard.is_main
        try:
            jobs = sharding.take(plan_jobs(src, dst, recursive=recursive, suffix=suffix, fmt=fmt), shard)
            device = sharding.device_for(settings.device, shard)
            descriptor = load_model(
                model, arch=arch, scale=scale, direction=direction, device=device, denoise=denoise
            )
            if upscaling and descriptor.scale == 1:
                fail(
                    f"{model}: a {descriptor.arch} model of scale 1 (image-to-image translation), not an "
                    f"upscaler; run it with `img2img translate --model {model}`, or resize with --outscale "
                    f"of an upscaling model"
                )
            work = output_megapixels(jobs, descriptor.scale, overwrite=not skip_existing) if backend == "auto" else None
            engine = make_engine(
                descriptor,
                backend=backend,
                output_megapixels=work,
                tile=tile,
                overlap=overlap,
                batch=batch,
                half=half,
                compile=compile_,
                device=device,
            )
        except (PipelineUsageError, CheckpointError, InferenceError, ValueError) as err:
            fail(str(err))
        if verbosity >= 2:
            # The tile plan each image gets is logged by the engine (INFO, shown at this verbosity).
            click.echo(
                f"model {descriptor.arch} x{descriptor.scale} on {device}; tile {tile}, overlap {engine.overlap}, "
                f"batch {engine.batch}, {engine.workers} CPU worker(s), {type(engine.runner).__name__}; {len(jobs)} input(s)",
                err=True,
            )
            if outscale is not None:
                click.echo(
                    f"outputs resized from x{descriptor.scale} to x{outscale:g} of the input "
                    f"({'area filter' if outscale < descriptor.scale else 'bicubic'})",
                    err=True,
                )
        tiles = TileProgress(jobs, stream=sys.stderr, terminal=sys.stderr.isatty()) if verbosity >= 1 and main else None
        try:
            report = run_jobs(
                engine,
                jobs,
                overwrite=not skip_existing,
                quality=quality,
                max_pixels=image_io.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels or None,
                progress=verbosity >= 1 and sys.stderr.isatty() and main,
                on_error=lambda path, reason: click.echo(f"error: {path}: {reason}", err=True),
                tile_progress=tiles,
                outscale=outscale,
            )
        finally:
            if tiles is not None:
                tiles.close()  # the bar of an image cut short (Ctrl-C) is removed too
        report = sharding.merge(report, shard)  # every rank's files, so every rank's exit code agrees
    if verbosity >= 1 and main:
        parts = [f"wrote {len(report.written)}"]
        if report.skipped:
            parts.append(f"skipped {len(report.skipped)} existing (--overwrite to redo)")
        if report.failed:
            parts.append(f"failed {len(report.failed)}")
        click.echo(f"{', '.join(parts)} in {report.seconds:.1f} s", err=True)
    sys.exit(EXIT_OK if report.ok else EXIT_SOME_FAILED)


@contextlib.contextmanager
def _inference_logging(verbosity: int) -> Iterator[None]:
    """Engine notes on stderr, by verbosity: warnings (``--half`` on a CPU, out-of-memory retries)
    normally, also each image's tile plan with ``-v``. Python warnings raised while reading files
    (image_io's and Pillow's, e.g. unreadable EXIF data) are one line each, without a source location."""
    logger = logging.getLogger("img2img.inference")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("note: %(message)s"))
    saved = logger.level, warnings.formatwarning
    logger.setLevel({0: logging.ERROR, 1: logging.WARNING}.get(verbosity, logging.INFO))
    logger.addHandler(handler)
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        warnings.formatwarning = saved[1]
