"""PatchGAN and 1x1 pixel discriminators of pix2pix/CycleGAN.

Module trees and state-dict keys match the reference ``NLayerDiscriminator`` (``model.N``) and
``PixelDiscriminator`` (``net.N``) of junyanz/pytorch-CycleGAN-and-pix2pix. Both return raw
scores (logits, no sigmoid); the GAN loss decides how to squash them.
"""

from __future__ import annotations

import torch
from torch import nn

from img2img.networks.norms import conv_bias, norm_layer


def patchgan_receptive_field(n_layers: int) -> int:
    """Receptive field (pixels) of one output score: 70 for n_layers=3, 34 for 2, 16 for 1.

    Walks the 4x4 convolutions backwards: n_layers stride-2 ones, then two stride-1 ones.
    """
    strides = [2] * n_layers + [1, 1]
    field = 1
    for stride in reversed(strides):
        field = (field - 1) * stride + 4
    return field


class NLayerDiscriminator(nn.Module):
    """PatchGAN: scores each overlapping patch of the input as real or fake.

    Input (B, in_channels, H, W), any range the generator produces; output (B, 1, H', W') of
    logits, H' = floor(H / 2**n_layers) - 2 (30x30 for a 256x256 input at n_layers=3), so the
    smallest input side is ``min_size = 3 * 2**n_layers`` (24 at n_layers=3).
    """

    def __init__(self, *, in_channels: int, ndf: int, n_layers: int, norm: str) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchGAN needs n_layers >= 1, got {n_layers}")
        self.in_channels = in_channels
        self.n_layers = n_layers
        self.min_size = 3 * 2**n_layers
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=2, padding=1, bias=bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=1, padding=1, bias=bias),
            norm_layer(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN ("pixelGAN"): scores every pixel on its own, from its colour alone.

    Input (B, in_channels, H, W); output (B, 1, H, W) logits.
    """

    def __init__(self, *, in_channels: int, ndf: int, norm: str) -> None:
        super().__init__()
        self.in_channels = in_channels
        bias = conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=bias),
            norm_layer(norm, ndf * 2),
            nn.LeakyReLU(0.2, True),
            # The reference drops this bias too when the norm is not instance; kept for identical keys.
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
