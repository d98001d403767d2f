"""Shared fixtures: tiny images made in code, fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def smooth_rgb(height: int, width: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """A smooth, photo-like (H, W, 3) image: gradients plus low-frequency blobs."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        fy, fx, phase = g.uniform(0.5, 3.0), g.uniform(0.5, 3.0), g.uniform(0, 6.28)
        img[..., c] = 0.5 + 0.25 * np.sin(2 * np.pi * fy * y / height + phase) * np.cos(2 * np.pi * fx * x / width)
        img[..., c] += 0.2 * (x / max(width - 1, 1) - 0.5) * (c - 1)
    img += g.normal(0, 0.02, img.shape)
    img = np.clip(img, 0, 1)
    top = np.iinfo(dtype).max
    return np.round(img * top).astype(dtype)
