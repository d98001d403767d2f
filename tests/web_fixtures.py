"""Tiny models and images shared by the web tests (tests/test_web.py, tests/test_web_browser.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from img2img import image_io
from img2img.checkpoints import save_model
from img2img.networks import build
from tests.helpers import smooth_rgb

RRDB_X2 = {"scale": 2, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}
RESNET = {"ngf": 4, "n_blocks": 1}


def models_folder(folder: Path) -> Path:
    """``sr-tiny.safetensors`` (x2) and a CycleGAN-layout run directory ``cyc`` (g_ab, g_ba)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build("rrdbnet", **RRDB_X2)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()  # outputs that depend on the input
    save_model(net, folder / "sr-tiny.safetensors", arch="rrdbnet", kwargs=RRDB_X2, value_range=(0.0, 1.0))
    for name in ("g_ab", "g_ba"):
        save_model(build("resnet", **RESNET), folder / "cyc" / f"{name}.safetensors", arch="resnet",
                   kwargs=RESNET, value_range=(-1.0, 1.0))
    return folder


def photo(path: Path, height: int = 20, width: int = 24, seed: int = 1) -> Path:
    image_io.write_image(path, image_io.Image(pixels=smooth_rgb(height, width, seed=seed)))
    return path
