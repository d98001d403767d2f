"""SRGAN's networks (Ledig et al. 2017) and BasicSR's BN-free MSRResNet.

- ``MSRResNet``: parameter names match BasicSR ``basicsr/archs/srresnet_arch.py``
  (``conv_first``, ``body.{i}.conv1/conv2``, ``upconv1`` [, ``upconv2`` for x4], ``conv_hr``,
  ``conv_last``) so BasicSR's MSRResNet files load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from img2img.networks.init import scaled_kaiming_
from img2img.networks.shapes import check_input

SCALES = (2, 3, 4)


def _check_scale(scale: int, name: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"{name} supports scale {', '.join(map(str, SCALES))}, got {scale}")


class ResidualBlockNoBN(nn.Module):
    """x + conv2(relu(conv1(x))), 3x3 convs with bias, no normalisation (EDSR-style)."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """Modified SRResNet: SRResNet without BatchNorm, LeakyReLU(0.1), global bilinear skip.

    Input (B, in_channels, H, W) in [0, 1]; output (B, out_channels, H*scale, W*scale),
    trained to lie in [0, 1] (not clamped): the network predicts the residual on top of a
    bilinear upsampling of the input (which is why in/out channels should agree).
    Upsampling: x2 and x3 one conv + pixel-shuffle stage (``upconv1``), x4 two x2 stages.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 16,
    ) -> None:
        super().__init__()
        _check_scale(scale, "MSRResNet")
        if in_channels != out_channels:
            raise ValueError(
                f"MSRResNet adds the upsampled input to its output: in_channels ({in_channels}) "
                f"must equal out_channels ({out_channels})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = scale
        self.size_multiple = 1
        self.min_size = 1

        self.conv_first = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_block)))
        stage = 2 if scale == 4 else scale
        self.upconv1 = nn.Conv2d(num_feat, num_feat * stage * stage, 3, 1, 1)
        self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1) if scale == 4 else None
        self.pixel_shuffle = nn.PixelShuffle(stage)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        # BasicSR's init: every conv Kaiming-normal x 0.1.
        scaled_kaiming_([self], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, in_channels=self.in_channels, size_multiple=1, min_size=1, name="MSRResNet")
        out = self.body(self.lrelu(self.conv_first(x)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.upconv2 is not None:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


def msrresnet(
    *, in_channels: int = 3, out_channels: int = 3, scale: int = 4, num_feat: int = 64, num_block: int = 16
) -> MSRResNet:
    """BasicSR's MSRResNet (BN-free SRResNet), x2 / x3 / x4."""
    return MSRResNet(
        in_channels=in_channels,
        out_channels=out_channels,
        scale=scale,
        num_feat=num_feat,
        num_block=num_block,
    )
