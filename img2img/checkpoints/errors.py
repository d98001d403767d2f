"""The one error type of the checkpoints package."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A model source that cannot be read, recognised or rebuilt.

    The message is one line that starts with the file (or name) and says why, e.g.
    ``"weights/x.pth: refused: ..."``; the CLI prints it as is and exits with code 2.
    """
