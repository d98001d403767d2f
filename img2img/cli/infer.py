"""`img2img translate` and `img2img upscale`."""

import click

from img2img.cli.common import not_yet_available


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def translate(args: tuple[str, ...]) -> None:
    """Translate images with a pix2pix/CycleGAN/DiscoGAN generator."""
    not_yet_available("translate")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def upscale(args: tuple[str, ...]) -> None:
    """Upscale images with a super-resolution model."""
    not_yet_available("upscale")
