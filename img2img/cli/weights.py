"""`img2img weights {list,info,convert}`."""

import click

from img2img.cli.common import not_yet_available


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def weights(args: tuple[str, ...]) -> None:
    """List, inspect and convert model files."""
    not_yet_available("weights")
