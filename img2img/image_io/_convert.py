"""Pixels <-> tensors: the only conversions between (H, W, C) uint8/uint16 pixels and float (C, H, W) tensors."""

from __future__ import annotations

import numpy as np
import torch


def _pixel_max(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise ValueError(f"pixels must be uint8 or uint16, got {dtype}")


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    return low, high


def pixels_to_tensor(pixels: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """(H, W, C) uint8/uint16 pixels -> float32 (C, H, W) CPU tensor in ``value_range``.

    0 maps to low and the dtype's maximum (255 or 65535) to high, linearly.
    """
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3:
        raise ValueError(
            f"pixels must be an (H, W, C) array, got {getattr(pixels, 'shape', type(pixels).__name__)}"
        )
    top = _pixel_max(pixels.dtype)
    low, high = _check_range(value_range)
    x = (
        torch.from_numpy(np.ascontiguousarray(pixels))
        .permute(2, 0, 1)
        .to(torch.float32, memory_format=torch.contiguous_format)
    )
    if (low, high) == (0.0, 1.0):
        return x.div_(top)
    return x.mul_((high - low) / top).add_(low)


def tensor_to_pixels(
    tensor: torch.Tensor, dtype: np.dtype | type, value_range: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """Float (C, H, W) tensor in ``value_range`` -> (H, W, C) ``dtype`` (uint8/uint16) numpy array.

    Values are clamped to the range, then rounded to the nearest level (not truncated). Works on
    any device; the arithmetic happens there and only the integer result is copied to the CPU.
    NaN raises ValueError (it has no pixel value; it usually means the model diverged).
    """
    dtype = np.dtype(dtype)
    top = _pixel_max(dtype)
    low, high = _check_range(value_range)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or not tensor.is_floating_point():
        raise ValueError(
            f"expected a float (C, H, W) tensor, got {getattr(tensor, 'dtype', type(tensor).__name__)} "
            f"{tuple(getattr(tensor, 'shape', ()))}"
        )
    x = tensor.detach().to(torch.float32)
    if torch.isnan(x).any():
        raise ValueError("tensor holds NaN values; they have no pixel value")
    x = ((x - low) * (top / (high - low))).clamp_(0, top).round_()
    x = x.to(torch.uint8 if top == 255 else torch.int32).permute(1, 2, 0).contiguous().cpu().numpy()
    return x.astype(dtype, copy=False)
