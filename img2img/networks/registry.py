"""The one explicit table from architecture name to network class and default keyword arguments.

No decorators and no import-time registration: to add an architecture, add its class in its own
file and a line to ``ARCHITECTURES``. CLI, training and checkpoint loading all build networks
through here.

One place per fact: the defaults live only here (the classes' keyword arguments have none, so
they cannot disagree); which keywords a network takes is its class signature (:func:`accepts`);
the sizes it needs are its ``size_multiple`` / ``min_size`` attributes (:func:`probe` reads them
without allocating weights).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from img2img.networks.discogan import DiscoGANDiscriminator, DiscoGANGenerator
from img2img.networks.patchgan import NLayerDiscriminator, PixelDiscriminator
from img2img.networks.resnet import ResnetGenerator
from img2img.networks.rrdb import RRDBNet
from img2img.networks.srresnet import MSRResNet, SRGANDiscriminator, SRResNet
from img2img.networks.srvgg import SRVGGNetCompact
from img2img.networks.unet import UnetGenerator


class UnknownArchitectureError(KeyError):
    """Raised for a name that is not in ``ARCHITECTURES``; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture.

    builder: the ``nn.Module`` class (or a keyword-only function returning one).
    defaults: every keyword argument of ``builder`` with its default: the only place defaults live.
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
# dropout, as pix2pix trains: it has no weights and eval mode turns it off) and CycleGAN (ResNet:
# instance norm, no dropout). Each entry lists every keyword (tests/test_networks.py checks it
# against the class signature) so `resolve_kwargs` gives the complete set a descriptor stores.
_UNET = {"in_channels": 3, "out_channels": 3, "ngf": 64, "norm": "batch", "dropout": True}
_RESNET = {"in_channels": 3, "out_channels": 3, "ngf": 64, "norm": "instance", "dropout": False}

ARCHITECTURES: dict[str, ArchSpec] = {
    "unet": ArchSpec(
        UnetGenerator,
        {**_UNET, "num_downs": 8},
        value_range=_PM1,
        summary="pix2pix U-Net, depth num_downs (sides multiple of 2**num_downs)",
    ),
    "unet_128": ArchSpec(
        UnetGenerator, {**_UNET, "num_downs": 7}, value_range=_PM1, summary="pix2pix U-Net for 128-px crops"
    ),
    "unet_256": ArchSpec(
        UnetGenerator, {**_UNET, "num_downs": 8}, value_range=_PM1, summary="pix2pix U-Net for 256-px crops"
    ),
    "resnet": ArchSpec(
        ResnetGenerator,
        {**_RESNET, "n_blocks": 9},
        value_range=_PM1,
        summary="CycleGAN ResNet generator, n_blocks blocks",
    ),
    "resnet_6blocks": ArchSpec(
        ResnetGenerator,
        {**_RESNET, "n_blocks": 6},
        value_range=_PM1,
        summary="CycleGAN ResNet generator, 6 blocks (128 px)",
    ),
    "resnet_9blocks": ArchSpec(
        ResnetGenerator,
        {**_RESNET, "n_blocks": 9},
        value_range=_PM1,
        summary="CycleGAN ResNet generator, 9 blocks (256 px)",
    ),
    "patchgan": ArchSpec(
        NLayerDiscriminator,
        {"in_channels": 3, "ndf": 64, "n_layers": 3, "norm": "batch"},
        role="discriminator",
        value_range=_PM1,
        summary="PatchGAN discriminator (70x70 patches at n_layers=3; pix2pix: in_channels = in + out)",
    ),
    "pixel": ArchSpec(
        PixelDiscriminator,
        {"in_channels": 3, "ndf": 64, "norm": "batch"},
        role="discriminator",
        value_range=_PM1,
        summary="1x1 pixel discriminator",
    ),
    "discogan_g": ArchSpec(
        DiscoGANGenerator,
        {"in_channels": 3, "out_channels": 3, "ngf": 64},
        value_range=_PM1,
        summary="DiscoGAN generator (conv encoder / deconv decoder, BN), sides multiple of 16",
    ),
    "discogan_d": ArchSpec(
        DiscoGANDiscriminator,
        {"in_channels": 3, "ndf": 64},
        role="discriminator",
        value_range=_PM1,
        summary="DiscoGAN discriminator (one score per 64x64 image)",
    ),
    "srresnet": ArchSpec(
        SRResNet,
        {"in_channels": 3, "out_channels": 3, "scale": 4, "num_feat": 64, "num_block": 16},
        value_range=_UNIT,
        summary="SRGAN generator (SRResNet: BN + PReLU residual blocks, sub-pixel), x2/x3/x4",
    ),
    "srgan_d": ArchSpec(
        SRGANDiscriminator,
        {"in_channels": 3, "ndf": 64, "input_size": 96},
        role="discriminator",
        value_range=_UNIT,
        summary="SRGAN VGG-style discriminator for input_size-px crops",
    ),
    "msrresnet": ArchSpec(
        MSRResNet,
        {"in_channels": 3, "out_channels": 3, "scale": 4, "num_feat": 64, "num_block": 16},
        value_range=_UNIT,
        summary="BasicSR MSRResNet (SRResNet without BN), x2/x3/x4",
    ),
    "rrdbnet": ArchSpec(
        RRDBNet,
        {"in_channels": 3, "out_channels": 3, "scale": 4, "num_feat": 64, "num_block": 23, "num_grow_ch": 32},
        value_range=_UNIT,
        summary="ESRGAN / Real-ESRGAN RRDBNet, x1/x2/x4 (64/23/32: the full model, 64/6/32: anime 6B)",
    ),
    "srvgg_compact": ArchSpec(
        SRVGGNetCompact,
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


def accepts(name: str) -> frozenset[str]:
    """The keyword arguments architecture ``name`` takes (its builder's signature)."""
    return frozenset(inspect.signature(get_spec(name).builder).parameters)


def resolve_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """Defaults of ``name`` updated with ``overrides`` (the exact kwargs the builder gets)."""
    return {**get_spec(name).defaults, **overrides}


def resolve_accepted(name: str, **candidates: Any) -> dict[str, Any]:
    """``resolve_kwargs`` with only those ``candidates`` that ``name`` takes (e.g. ``norm`` is
    dropped for a network with its normalisation built in)."""
    taken = accepts(name)
    return resolve_kwargs(name, **{k: v for k, v in candidates.items() if k in taken})


def build(name: str, **overrides: Any) -> nn.Module:
    """Build architecture ``name`` with its defaults updated by ``overrides``."""
    return get_spec(name).builder(**resolve_kwargs(name, **overrides))


def probe(name: str, **overrides: Any) -> nn.Module:
    """``build`` on PyTorch's meta device: the module's attributes (``size_multiple``, ``min_size``,
    ``scale``) without allocating or initialising weights; it cannot run. ValueError for bad kwargs."""
    with torch.device("meta"):
        return build(name, **overrides)
