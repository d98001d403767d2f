"""`img2img train {pix2pix,cyclegan,discogan,srgan}`."""

import click

from img2img.cli.common import not_yet_available


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args: tuple[str, ...]) -> None:
    """Train a model on your own data."""
    not_yet_available("train")
