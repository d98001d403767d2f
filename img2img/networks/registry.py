"""The one explicit table from architecture name to builder and default keyword arguments.

No decorators and no import-time registration: to add an architecture, add a line to
``ARCHITECTURES``. CLI, training and checkpoint loading all build networks through here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from img2img.networks.discogan import discogan_d, discogan_g
from img2img.networks.patchgan import patchgan, pixel
from img2img.networks.resnet import resnet
from img2img.networks.rrdb import rrdbnet
from img2img.networks.srresnet import msrresnet, srgan_d, srresnet
from img2img.networks.srvgg import srvgg_compact
from img2img.networks.unet import unet


class UnknownArchitectureError(KeyError):
    """Raised for a name that is not in ``ARCHITECTURES``; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture.

    builder: keyword-only function returning the ``nn.Module``.
    defaults: keyword arguments used when the caller gives none.
    role: ``"generator"`` or ``"discriminator"``.
    value_range: tensor range the network is trained in by default.
    summary: one line for `img2img weights list` and error messages.
    """

    builder: Callable[..., nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    role: str = "generator"
    value_range: tuple[float, float] = (-1.0, 1.0)
    summary: str = ""


# Translation nets work in [-1, 1] (tanh outputs); SR nets in [0, 1].
_PM1 = (-1.0, 1.0)
_UNIT = (0.0, 1.0)

# Defaults follow the reference code: pix2pix (U-Net, PatchGAN, pixel D: batch norm, U-Net with
# dropout) and CycleGAN (ResNet: instance norm, no dropout). Each entry lists every keyword so
# `resolve_kwargs` gives the complete set a descriptor stores.
_UNET = {"in_channels": 3, "out_channels": 3, "ngf": 64, "norm": "batch", "dropout": True}
_RESNET = {"in_channels": 3, "out_channels": 3, "ngf": 64, "norm": "instance", "dropout": False}

ARCHITECTURES: dict[str, ArchSpec] = {
    "unet": ArchSpec(
        unet,
        {**_UNET, "num_downs": 8},
        value_range=_PM1,
        summary="pix2pix U-Net, depth num_downs (sides multiple of 2**num_downs)",
    ),
    "unet_128": ArchSpec(
        unet, {**_UNET, "num_downs": 7}, value_range=_PM1, summary="pix2pix U-Net for 128-px crops"
    ),
    "unet_256": ArchSpec(
        unet, {**_UNET, "num_downs": 8}, value_range=_PM1, summary="pix2pix U-Net for 256-px crops"
    ),
    "resnet": ArchSpec(
        resnet,
        {**_RESNET, "n_blocks": 9},
        value_range=_PM1,
        summary="CycleGAN ResNet generator, n_blocks blocks",
    ),
    "resnet_6blocks": ArchSpec(
        resnet,
        {**_RESNET, "n_blocks": 6},
        value_range=_PM1,
        summary="CycleGAN ResNet generator, 6 blocks (128 px)",
    ),
    "resnet_9blocks": ArchSpec(
        resnet,
        {**_RESNET, "n_blocks": 9},
        value_range=_PM1,
        summary="CycleGAN ResNet generator, 9 blocks (256 px)",
    ),
    "patchgan": ArchSpec(
        patchgan,
        {"in_channels": 3, "ndf": 64, "n_layers": 3, "norm": "batch"},
        role="discriminator",
        value_range=_PM1,
        summary="PatchGAN discriminator (70x70 patches at n_layers=3)",
    ),
    "pixel": ArchSpec(
        pixel,
        {"in_channels": 3, "ndf": 64, "norm": "batch"},
        role="discriminator",
        value_range=_PM1,
        summary="1x1 pixel discriminator",
    ),
    "discogan_g": ArchSpec(
        discogan_g,
        {"in_channels": 3, "out_channels": 3, "ngf": 64},
        value_range=_PM1,
        summary="DiscoGAN generator (conv encoder / deconv decoder, BN), sides multiple of 16",
    ),
    "discogan_d": ArchSpec(
        discogan_d,
        {"in_channels": 3, "ndf": 64},
        role="discriminator",
        value_range=_PM1,
        summary="DiscoGAN discriminator (one score per 64x64 image)",
    ),
    "srresnet": ArchSpec(
        srresnet,
        {"in_channels": 3, "out_channels": 3, "scale": 4, "num_feat": 64, "num_block": 16},
        value_range=_UNIT,
        summary="SRGAN generator (SRResNet: BN + PReLU residual blocks, sub-pixel), x2/x3/x4",
    ),
    "srgan_d": ArchSpec(
        srgan_d,
        {"in_channels": 3, "ndf": 64, "input_size": 96},
        role="discriminator",
        value_range=_UNIT,
        summary="SRGAN VGG-style discriminator for input_size-px crops",
    ),
    "msrresnet": ArchSpec(
        msrresnet,
        {"in_channels": 3, "out_channels": 3, "scale": 4, "num_feat": 64, "num_block": 16},
        value_range=_UNIT,
        summary="BasicSR MSRResNet (SRResNet without BN), x2/x3/x4",
    ),
    "rrdbnet": ArchSpec(
        rrdbnet,
        {"in_channels": 3, "out_channels": 3, "scale": 4, "num_feat": 64, "num_block": 23, "num_grow_ch": 32},
        value_range=_UNIT,
        summary="ESRGAN / Real-ESRGAN RRDBNet, x1/x2/x4",
    ),
    "srvgg_compact": ArchSpec(
        srvgg_compact,
        {"in_channels": 3, "out_channels": 3, "scale": 4, "num_feat": 64, "num_conv": 16},
        value_range=_UNIT,
        summary="Real-ESRGAN SRVGGNetCompact (conv + PReLU stack, pixel shuffle, nearest skip), any scale",
    ),
}


def known_names() -> list[str]:
    return sorted(ARCHITECTURES)


def get_spec(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; known: {', '.join(known_names())}"
        ) from None


def resolve_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """Defaults of ``name`` updated with ``overrides`` (the exact kwargs the builder gets)."""
    return {**get_spec(name).defaults, **overrides}


def build(name: str, **overrides: Any) -> nn.Module:
    """Build architecture ``name`` with its defaults updated by ``overrides``."""
    return get_spec(name).builder(**resolve_kwargs(name, **overrides))
