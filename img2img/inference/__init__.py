"""Inference: the tiled engine and the folder pipeline (docs/inference.md).

    from img2img.checkpoints import load_model
    from img2img.inference import Engine

    engine = Engine(load_model("img2img-sr-x4"), tile=192, overlap=16)
    out = engine(pixels)                      # (H, W, C) uint8/uint16 -> (4H, 4W, C), same dtype
    report = engine.run_folder("photos/", "out/", suffix="_x4")

or in one call, ``run_folder(model="img2img-sr-x4", src="photos/", dst="out/")``.
"""

from __future__ import annotations

import os
from typing import Any

from img2img.inference.engine import DEFAULT_OVERLAP, Engine, InferenceError, default_overlap, select_device
from img2img.inference.pipeline import Job, PipelineUsageError, RunReport, plan_jobs, run_jobs

__all__ = [
    "DEFAULT_OVERLAP",
    "Engine",
    "InferenceError",
    "Job",
    "default_overlap",
    "PipelineUsageError",
    "RunReport",
    "plan_jobs",
    "run_folder",
    "run_jobs",
    "select_device",
]


def run_folder(
    *,
    model: str | os.PathLike[str],
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    device: str = "auto",
    arch: str | None = None,
    scale: int | None = None,
    direction: str | None = None,
    recursive: bool = False,
    suffix: str = "",
    fmt: str = "same",
    overwrite: bool = False,
    **engine_options: Any,
) -> RunReport:
    """Load ``model`` (bundled name, file or run directory) and run it over ``src`` into ``dst``.

    ``engine_options`` go to ``Engine`` (tile, overlap, batch, half, compile). Returns the report;
    failed files are listed in ``report.failed``, not raised.
    """
    from img2img.checkpoints import load_model

    descriptor = load_model(model, arch=arch, scale=scale, direction=direction, device=select_device(device))
    engine = Engine(descriptor, **engine_options)
    jobs = plan_jobs(src, dst, recursive=recursive, suffix=suffix, fmt=fmt)
    return run_jobs(engine, jobs, overwrite=overwrite)
