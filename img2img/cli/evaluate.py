"""`img2img eval`."""

import click

from img2img.cli.common import not_yet_available


@click.command("eval", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def eval_command(args: tuple[str, ...]) -> None:
    """Measure PSNR/SSIM/L1 of predictions against targets."""
    not_yet_available("eval")
