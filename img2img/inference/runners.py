"""Runners: what turns a batch of input tiles into output tiles for the engine.

The engine (``engine.py``) owns tiling, blending, InstanceNorm statistics, memory and retries;
a runner only runs the network. ``TorchRunner`` runs the descriptor's ``nn.Module``; other
runtimes (ONNX Runtime, OpenVINO) implement the same small ``Runner`` protocol in their own
modules and are handed to ``Engine(..., runner=...)``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from img2img import devices
from img2img.inference.errors import InferenceError

log = logging.getLogger(__name__)


@runtime_checkable
class Runner(Protocol):
    """Runs the network on one batch of tiles.

    ``runner(batch)``: ``batch`` is (B, C_in, h, w) float32 in the model's value range, on
    ``runner.device``, with h and w meeting the model's size multiple and minimum; returns
    (B, C_out, h * scale, w * scale), any float dtype, on any device (the engine copies it to the
    CPU as float32). Errors propagate; an out-of-memory error should be ``torch.OutOfMemoryError``
    or a RuntimeError saying "out of memory", so the engine retries with smaller tiles.

    Attributes:
        device: where the engine puts the input tiles.
        fixed_shape: True when every call must get the same input shape (a compiled graph, a
            static-shape exported model): the engine then keeps one tile side and pads the last
            batch with copies of its last tile.
    """

    device: torch.device
    fixed_shape: bool

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


def select_device(spec: str | torch.device | None) -> torch.device:
    """``"auto"`` -> cuda, then mps, then cpu; anything else as torch understands it."""
    try:
        return devices.select_device(spec)
    except devices.DeviceUnavailable as e:
        raise InferenceError(str(e)) from None


class TorchRunner:
    """Runs an ``nn.Module`` with PyTorch: eval mode, inference mode, optional fp16 and compile.

    Args:
        net: the network (moved to ``device`` and put in eval mode, in place).
        device: where it runs.
        half: fp16 autocast on CUDA/MPS; ignored with a warning on a CPU (slow or unsupported).
        compile: ``torch.compile`` with inductor freezing; sets ``fixed_shape`` so one graph is
            compiled per tile shape. A compiled net is called from one thread only.

    On CUDA the input and the network use channels-last (tensor cores prefer NHWC); on a CPU
    NCHW measured faster (docs/benchmarks.md).
    """

    def __init__(self, net: nn.Module, *, device: torch.device, half: bool = False, compile: bool = False) -> None:
        self.net = net.to(device).eval()
        self.device = device
        self.half = half and device.type in ("cuda", "mps")
        if half and not self.half:
            log.warning("--half: reduced precision is slow or unsupported on a CPU; running float32")
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.compiled = compile
        self.fixed_shape = compile
        self._forward = torch.compile(self.net, options={"freezing": True}) if compile else self.net

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        # Both are thread-local: entered here, so the runner works the same from any thread.
        with torch.inference_mode(), self._autocast():
            return self._forward(batch)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.half:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()
