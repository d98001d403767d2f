"""The `img2img` command line: a thin click layer over the library.

Each command lives in its own module below; this one holds the group, the global options and
the mapping from errors to exit codes (0 all written, 1 some inputs failed, 2 usage error).
"""

from __future__ import annotations

import sys

import click

from img2img._version import __version__
from img2img.cli.common import CliContext

# Commands that run the tiled engine (main() sets the allocator up for them).
INFERENCE_COMMANDS = {"upscale", "translate"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="img2img")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda", "mps"]),
    default="auto",
    show_default=True,
    help="Where networks run: auto picks cuda, then mps, then cpu.",
)
@click.option("--verbose", "-v", "verbosity", flag_value=2, help="More output.")
@click.option("--quiet", "-q", "verbosity", flag_value=0, help="Errors only, no progress bar.")
@click.pass_context
def cli(ctx: click.Context, device: str, verbosity: int | None) -> None:
    """Image-to-image translation: translate, upscale, train and evaluate models."""
    ctx.obj = CliContext(device=device, verbosity=1 if verbosity is None else verbosity)


def _register_commands() -> None:
    # Imported here so each command module stays independent and the group lists all seven.
    from img2img.cli import data, evaluate, infer, serve, train, weights

    cli.add_command(infer.translate)
    cli.add_command(infer.upscale)
    cli.add_command(train.train)
    cli.add_command(evaluate.eval_command)
    cli.add_command(weights.weights)
    cli.add_command(data.data)
    cli.add_command(serve.serve)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from img2img import allocator

    # The process is ours: for tiled inference keep freed memory for reuse (it would otherwise be
    # page-faulted back in tile after tile). This has to happen before any thread allocates, so
    # before click parses anything; see img2img/allocator.py. (Training was not measured: left alone.)
    args = sys.argv[1:] if argv is None else argv
    if INFERENCE_COMMANDS & set(args):
        allocator.keep_freed_memory()
    cli.main(args=argv, prog_name="img2img")
