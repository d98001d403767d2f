"""The model descriptor: one record for every loaded model, whatever file it came from.

The tiled engine, the CLI and the trainers talk in descriptors, never in string flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class ModelDescriptor:
    """A network plus everything a caller needs to run it correctly.

    Attributes:
        net: the `nn.Module`, in eval mode once loaded for inference.
        arch: registry name of the architecture (e.g. ``"resnet_9blocks"``, ``"rrdbnet"``).
        kwargs: keyword arguments that rebuild ``net`` with the registry builder.
        scale: output side / input side (1 for translation, 2/3/4 for super-resolution).
        in_channels, out_channels: 1 (gray) or 3 (RGB) typically.
        value_range: range of input and output tensors, ``(-1.0, 1.0)`` (pix2pix/CycleGAN)
            or ``(0.0, 1.0)`` (super-resolution).
        size_multiple: input height and width must be multiples of this (callers pad).
        min_size: smallest input side the network accepts.
        instance_norm: True when the net normalises with per-image statistics
            (InstanceNorm), which tiling must take from the whole image.
        provenance: where the weights came from (file, format, training command, step, ...).
    """

    net: nn.Module
    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    scale: int = 1
    in_channels: int = 3
    out_channels: int = 3
    value_range: tuple[float, float] = (0.0, 1.0)
    size_multiple: int = 1
    min_size: int = 1
    instance_norm: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_net(
        cls,
        net: nn.Module,
        *,
        arch: str,
        kwargs: Mapping[str, Any],
        value_range: tuple[float, float],
        provenance: Mapping[str, Any] | None = None,
    ) -> ModelDescriptor:
        """Describe ``net`` from the int attributes every img2img generator carries.

        ``in_channels``, ``out_channels``, ``scale``, ``size_multiple`` and ``min_size`` are read
        from ``net`` when it has them (discriminators lack some; the field defaults apply then);
        ``instance_norm`` is found by looking for InstanceNorm layers.
        """
        from img2img.networks import has_instance_norm

        return cls(
            net=net,
            arch=arch,
            kwargs=dict(kwargs),
            scale=int(getattr(net, "scale", 1)),
            in_channels=int(getattr(net, "in_channels", 3)),
            out_channels=int(getattr(net, "out_channels", 3)),
            value_range=(float(value_range[0]), float(value_range[1])),
            size_multiple=int(getattr(net, "size_multiple", 1)),
            min_size=int(getattr(net, "min_size", 1)),
            instance_norm=has_instance_norm(net),
            provenance=dict(provenance or {}),
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on ``x`` of shape (B, in_channels, H, W) in ``value_range``.

        Returns (B, out_channels, H*scale, W*scale) in ``value_range`` (not clamped).
        H and W must already satisfy ``size_multiple`` and ``min_size``.
        """
        return self.net(x)

    @property
    def device(self) -> torch.device:
        for p in self.net.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> ModelDescriptor:
        """Move the network to ``device`` in place and return self."""
        self.net.to(device)
        return self

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (no tensors), used by `img2img weights info`."""
        return {
            "arch": self.arch,
            "kwargs": dict(self.kwargs),
            "scale": self.scale,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "value_range": list(self.value_range),
            "size_multiple": self.size_multiple,
            "min_size": self.min_size,
            "instance_norm": self.instance_norm,
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "provenance": dict(self.provenance),
        }
