"""Pieces every command module shares: exit codes, the global-options record, error reporting."""

from __future__ import annotations

import sys

import click

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


class CliContext:
    """Global options, reachable from every command as ``ctx.obj``."""

    def __init__(self, device: str = "auto", verbosity: int = 1) -> None:
        self.device = device
        self.verbosity = verbosity  # 0 quiet, 1 normal, 2 verbose


def get_context() -> CliContext:
    """The global options of the running command (defaults when invoked without the group)."""
    ctx = click.get_current_context()
    obj = ctx.find_object(CliContext)
    return obj if obj is not None else CliContext()


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def not_yet_available(name: str) -> None:
    """Stop a command whose feature has not landed yet, with exit code 2."""
    fail(f"img2img {name}: not yet available in this version")
