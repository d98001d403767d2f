"""`img2img data {combine,split,degrade,edges,sample}`."""

import click

from img2img.cli.common import not_yet_available


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def data(args: tuple[str, ...]) -> None:
    """Build and convert datasets."""
    not_yet_available("data")
