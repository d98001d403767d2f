"""`img2img data {combine,split,degrade,edges,sample}`: build and convert datasets.

Exit codes: 0 every file written, 1 some files failed (each named on stderr), 2 usage error
(bad option, missing folder, output inside an input, scikit-image missing for ``sample``).
"""

from __future__ import annotations

import sys

import click

from img2img.cli.common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, fail, get_context


def _finish(report, what: str) -> None:  # report: img2img.data.tools.ToolReport
    for line in report.failed:
        click.echo(f"error: {line}", err=True)
    if get_context().verbosity > 0:
        tail = f", {len(report.failed)} failed" if report.failed else ""
        click.echo(f"wrote {len(report.written)} {what}{tail}")
    sys.exit(EXIT_SOME_FAILED if report.failed else EXIT_OK)


def _run(job, what: str) -> None:
    from img2img.data import DataError

    try:
        report = job()
    except DataError as e:
        fail(str(e), EXIT_USAGE)
    _finish(report, what)


@click.group()
def data() -> None:
    """Build and convert datasets (paired A|B images, A/B folders, SR evaluation sets, samples)."""


@data.command()
@click.argument("a_dir", type=click.Path(file_okay=False))
@click.argument("b_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--ext", default=None, help="Output suffix, e.g. png or jpg (default: the A file's).")
def combine(a_dir: str, b_dir: str, out_dir: str, ext: str | None) -> None:
    """A|B side-by-side images from matching stems in A_DIR and B_DIR."""
    from img2img.data.tools import combine as run

    _run(lambda: run(a_dir, b_dir, out_dir, ext=ext), "side-by-side images")


@data.command()
@click.argument("ab_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--prefix", default="", help="Folder prefix: 'train' writes OUT_DIR/trainA and OUT_DIR/trainB.")
@click.option("--ext", default=None, help="Output suffix (default: the input file's).")
def split(ab_dir: str, out_dir: str, prefix: str, ext: str | None) -> None:
    """Split A|B images into OUT_DIR/{PREFIX}A and OUT_DIR/{PREFIX}B."""
    from img2img.data.tools import split as run

    _run(lambda: run(ab_dir, out_dir, prefix=prefix, ext=ext), "images")


@data.command()
@click.argument("hr_dir", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--scale", type=click.IntRange(1, 16), required=True, help="Downscale factor.")
@click.option(
    "--degradation",
    type=click.Choice(["bicubic", "realesrgan", "photo"]),
    default="bicubic",
    show_default=True,
    help="bicubic (antialiased) or the Real-ESRGAN-style blur/resize/noise/JPEG pipeline.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the realesrgan draws.")
@click.option("--ext", default=".png", show_default=True, help="Output suffix.")
def degrade(hr_dir: str, out_dir: str, scale: int, degradation: str, seed: int, ext: str) -> None:
    """LR images of HR_DIR for SR evaluation (HR cut to multiples of --scale)."""
    from img2img.data.tools import degrade_folder

    _run(
        lambda: degrade_folder(hr_dir, out_dir, scale=scale, degradation=degradation, seed=seed, ext=ext),
        "LR images",
    )


@data.command()
@click.argument("src", type=click.Path())
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--size", type=click.IntRange(8, None), default=None, help="Resize photos to SIZE x SIZE first."
)
@click.option("--low", type=float, default=None, help="Canny low threshold (default: from the image median).")
@click.option(
    "--high", type=float, default=None, help="Canny high threshold (default: from the image median)."
)
def edges(src: str, out_dir: str, size: int | None, low: float | None, high: float | None) -> None:
    """Edges|photo pairs from photos (SRC: folder or file), as edges2shoes."""
    from img2img.data.tools import edges as run

    _run(lambda: run(src, out_dir, size=size, low=low, high=high), "edges|photo images")


@data.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--size",
    type=click.IntRange(16, 1024),
    default=128,
    show_default=True,
    help="Image side (multiple of 4).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def sample(out_dir: str, size: int, seed: int) -> None:
    """Small paired/unpaired/SR sample sets from scikit-image photos."""
    from img2img.data import DataError
    from img2img.data.sample import make_sample

    try:
        roots = make_sample(out_dir, size=size, seed=seed)
    except DataError as e:
        fail(str(e), EXIT_USAGE)
    if get_context().verbosity > 0:
        for kind, root in roots.items():
            click.echo(f"{kind}: {root}")
