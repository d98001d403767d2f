"""The input-size check every generator runs before its first layer."""

from __future__ import annotations

import torch


def check_input(x: torch.Tensor, *, in_channels: int, size_multiple: int, min_size: int, name: str) -> None:
    """Raise ValueError with a one-line reason unless ``x`` is (B, in_channels, H, W) that ``name`` accepts.

    H and W must be multiples of ``size_multiple`` and at least ``min_size``; callers (the tiled
    engine) pad to satisfy this, so a failure here is a caller's bug or a user's bad crop size.
    """
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    _, c, h, w = x.shape
    if c != in_channels:
        raise ValueError(f"{name}: expected {in_channels} input channels, got {c}")
    if h < min_size or w < min_size:
        raise ValueError(f"{name}: input {h}x{w} is smaller than the minimum side {min_size}")
    if h % size_multiple or w % size_multiple:
        raise ValueError(
            f"{name}: input {h}x{w} is not a multiple of {size_multiple} in height and width; "
            f"pad or crop to a multiple of {size_multiple}"
        )
