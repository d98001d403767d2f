"""Weight initialisation schemes for training from scratch.

``init_weights`` follows the pix2pix/CycleGAN reference convention: convolution and linear
weights drawn from the chosen scheme, their biases zero, BatchNorm weights N(1, gain) and
biases zero. ``scaled_kaiming_`` is the BasicSR convention for SR residual networks
(Kaiming-normal weights times a small factor so deep residual stacks start near identity).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

INIT_SCHEMES: tuple[str, ...] = ("normal", "xavier", "kaiming", "orthogonal")

_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@torch.no_grad()
def init_weights(net: nn.Module, scheme: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise ``net`` in place and return it.

    Args:
        net: any module; every Conv2d / ConvTranspose2d / Linear and BatchNorm2d inside is set.
        scheme: ``"normal"`` (N(0, gain)), ``"xavier"`` (Xavier-normal with ``gain``),
            ``"kaiming"`` (Kaiming-normal, fan-in, ``gain`` unused as in the reference) or
            ``"orthogonal"`` (with ``gain``).
        gain: standard deviation / gain; 0.02 is the DCGAN/pix2pix value.

    Layers of other types (PReLU, InstanceNorm without affine, ...) keep their values.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    for m in net.modules():
        if isinstance(m, _WEIGHTED):
            if scheme == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif scheme == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


@torch.no_grad()
def scaled_kaiming_(modules: Iterable[nn.Module], scale: float) -> None:
    """Kaiming-normal weights times ``scale`` and zero biases for every Conv2d/Linear inside ``modules``."""
    for module in modules:
        for m in module.modules():
            # Meta tensors (registry.probe) hold no values: nothing to draw, and drawing is slow there.
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight)
                m.weight.mul_(scale)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
