"""The errors inference raises for inputs it cannot process (the CLI turns them into exit codes)."""

from __future__ import annotations


class InferenceError(RuntimeError):
    """An image or a setting the engine cannot work with (out of memory even at the smallest tile,
    a device that is not there); reported per file by the pipeline, exit code 2 from the CLI at start."""


class PipelineUsageError(ValueError):
    """SRC/DST that cannot work (nothing to read, output onto an input, ...); the CLI exits 2."""
