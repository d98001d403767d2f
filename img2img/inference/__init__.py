"""Inference: the tiled engine and the folder pipeline (docs/inference.md).

    from img2img.checkpoints import load_model
    from img2img.inference import Engine, run_folder

    engine = Engine(load_model("img2img-sr-x4"), tile=192, overlap=16)
    out = engine(pixels)                      # (H, W, C) uint8/uint16 -> (4H, 4W, C), same dtype
    report = run_folder(engine, "photos/", "out/", suffix="_x4")

Modules, from the bottom: ``errors``, ``tiling`` (pure tensor tiling and blending),
``tile_policy`` (tile sizes and plans), ``sources`` (pixels/tensors in and out),
``runners`` (what runs the network), ``tile_pool`` (CPU threads), ``instance_norm``
(whole-image statistics), ``engine``, ``pipeline`` (files), ``sharding`` (torchrun).
"""

from __future__ import annotations

from img2img.inference.engine import Engine
from img2img.inference.errors import InferenceError, PipelineUsageError
from img2img.inference.pipeline import Job, RunReport, output_megapixels, plan_jobs, run_folder, run_jobs
from img2img.inference.runners import Runner, TorchRunner, select_device
from img2img.inference.tile_policy import DEFAULT_OVERLAP, TilePlan, default_overlap

__all__ = [
    "DEFAULT_OVERLAP",
    "Engine",
    "InferenceError",
    "Job",
    "PipelineUsageError",
    "RunReport",
    "Runner",
    "TilePlan",
    "TorchRunner",
    "default_overlap",
    "output_megapixels",
    "plan_jobs",
    "run_folder",
    "run_jobs",
    "select_device",
]
