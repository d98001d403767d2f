"""Choosing the torch device: the one rule shared by training and inference.

A leaf module (torch only), imported by both sides; each turns ``DeviceUnavailable`` into its own
error type (training's ``ConfigError``, inference's ``InferenceError``).
"""

from __future__ import annotations

import torch


class DeviceUnavailable(ValueError):
    """An explicitly requested device that this machine does not have."""


def select_device(spec: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> cuda, then mps, then cpu; anything else as torch understands it.

    Raises DeviceUnavailable when an explicit ``cuda``/``mps`` device is asked for and absent.
    """
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {str(spec)!r} requested but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable("device 'mps' requested but MPS is not available here")
    return device
