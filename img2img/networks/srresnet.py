"""SRGAN's networks (Ledig et al. 2017) and BasicSR's BN-free MSRResNet.

- ``SRResNet``: the SRGAN generator as the paper draws it (9x9 head, residual blocks with
  BatchNorm and PReLU, a long skip, sub-pixel upsampling, 9x9 tail). The reference code was never
  released, so the parameter names are our own: ``conv_first``, ``act_first``,
  ``body.{i}.{conv1,bn1,act,conv2,bn2}``, ``conv_body``, ``bn_body``, ``upsample.{j}.{conv,act}``,
  ``conv_last``.
- ``SRGANDiscriminator``: the paper's VGG-style discriminator (eight 3x3 convs, two dense layers)
  for a fixed crop size; names ``conv_first``, ``blocks.{i}.{conv,bn}``, ``fc1``, ``fc2``.
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
        in_channels: int,
        out_channels: int,
        scale: int,
        num_feat: int,
        num_block: int,
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


# --- SRGAN (Ledig et al. 2017) ---------------------------------------------------------------------


class ResidualBlockBN(nn.Module):
    """x + bn2(conv2(act(bn1(conv1(x))))): SRGAN's residual block (3x3 convs, BN, PReLU)."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        # No conv bias before a BatchNorm: the norm's shift does the same job.
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_feat)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SubPixelStage(nn.Module):
    """3x3 conv to ``factor**2`` times the channels, pixel-shuffle by ``factor``, PReLU."""

    def __init__(self, num_feat: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(num_feat, num_feat * factor * factor, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """SRGAN's generator: 9x9 conv + PReLU, ``num_block`` BN residual blocks, 3x3 conv + BN with a
    skip over the whole body, sub-pixel upsampling (x2, x3: one stage; x4: two x2 stages), 9x9 conv.

    Input (B, in_channels, H, W) in [0, 1]; output (B, out_channels, H*scale, W*scale), trained to
    lie in [0, 1] (linear output, not clamped). PReLUs have one shared slope each (PyTorch's default).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        scale: int,
        num_feat: int,
        num_block: int,
    ) -> None:
        super().__init__()
        _check_scale(scale, "SRResNet")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = scale
        self.size_multiple = 1
        self.min_size = 1

        self.conv_first = nn.Conv2d(in_channels, num_feat, 9, 1, 4)
        self.act_first = nn.PReLU()
        self.body = nn.Sequential(*(ResidualBlockBN(num_feat) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False)
        self.bn_body = nn.BatchNorm2d(num_feat)
        factors = [2, 2] if scale == 4 else [scale]
        self.upsample = nn.Sequential(*(SubPixelStage(num_feat, f) for f in factors))
        self.conv_last = nn.Conv2d(num_feat, out_channels, 9, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, in_channels=self.in_channels, size_multiple=1, min_size=1, name="SRResNet")
        feat = self.act_first(self.conv_first(x))
        feat = feat + self.bn_body(self.conv_body(self.body(feat)))
        return self.conv_last(self.upsample(feat))


class ConvBNAct(nn.Module):
    """3x3 conv (no bias), BatchNorm, LeakyReLU(0.2): one discriminator stage."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


# (width multiplier, stride) of the seven conv-BN stages after the first conv (paper, Fig. 4).
_SRGAN_D_STAGES = ((1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2))


class SRGANDiscriminator(nn.Module):
    """SRGAN's VGG-style discriminator for ``input_size`` x ``input_size`` crops.

    3x3 conv + LeakyReLU, seven conv-BN-LeakyReLU stages (widths ndf..8*ndf, four of them
    stride 2), then dense 1024 + LeakyReLU and dense 1. Input (B, in_channels, input_size,
    input_size) in the generator's range; output (B, 1) logits (no sigmoid). The dense layer fixes
    the crop size: ``input_size`` must be a multiple of ``size_multiple`` = 16 (the paper trains on
    96-px HR crops).
    """

    # Four stride-2 stages: the dense layer sees input_size / 16 on each side.
    size_multiple = 16

    def __init__(self, *, in_channels: int, ndf: int, input_size: int) -> None:
        super().__init__()
        if input_size < self.size_multiple or input_size % self.size_multiple:
            raise ValueError(
                f"SRGAN discriminator input_size must be a positive multiple of {self.size_multiple}, got {input_size}"
            )
        self.in_channels = in_channels
        self.input_size = input_size
        self.min_size = input_size
        self.conv_first = nn.Conv2d(in_channels, ndf, 3, 1, 1)
        self.act_first = nn.LeakyReLU(0.2, inplace=True)
        stages = []
        width = ndf
        for mult, stride in _SRGAN_D_STAGES:
            stages.append(ConvBNAct(width, ndf * mult, stride))
            width = ndf * mult
        self.blocks = nn.Sequential(*stages)
        side = input_size // self.size_multiple
        self.fc1 = nn.Linear(width * side * side, 1024)
        self.act_fc = nn.LeakyReLU(0.2, inplace=True)
        self.fc2 = nn.Linear(1024, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"SRGAN discriminator built for {self.input_size}x{self.input_size} crops, got shape {tuple(x.shape)}"
            )
        feat = self.blocks(self.act_first(self.conv_first(x)))
        return self.fc2(self.act_fc(self.fc1(feat.flatten(1))))
