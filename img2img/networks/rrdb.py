"""ESRGAN's RRDBNet (Wang et al. 2018), with BasicSR's x2 / x1 variants used by Real-ESRGAN.

Parameter names match BasicSR ``basicsr/archs/rrdbnet_arch.py`` (``conv_first``,
``body.{i}.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``), so Real-ESRGAN / BasicSR release files load without remapping (after taking the
``params_ema`` / ``params`` entry). Old ESRGAN files use another layout; the checkpoint loader
renames those keys.

The trunk always upsamples x4 (two nearest-neighbour x2 steps). For scale 2 and 1 the input is
first folded with pixel-unshuffle (x2 / x4), which trades resolution for channels: ``conv_first``
then sees 4x / 16x the input channels, and H, W must be multiples of 2 / 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from img2img.networks.init import scaled_kaiming_
from img2img.networks.shapes import check_input

SCALES = (1, 2, 4)
# Residuals are scaled down before being added: keeps a 23 x 3 x 5 deep stack stable (ESRGAN).
RESIDUAL_SCALE = 0.2


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; conv k sees the input and all earlier outputs.

    (B, num_feat, H, W) -> (B, num_feat, H, W): x + 0.2 * conv5(cat(x, x1, x2, x3, x4)).
    """

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        # BasicSR's init: small residual branches so the deep stack starts close to identity.
        scaled_kaiming_([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(self.lrelu(conv(torch.cat(feats, 1))))
        return x + RESIDUAL_SCALE * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and a scaled outer residual."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """RRDBNet super-resolution generator.

    Input (B, in_channels, H, W) in [0, 1]; output (B, out_channels, H*scale, W*scale), trained to
    lie in [0, 1] but not clamped. H and W must be multiples of ``size_multiple`` (1 for x4,
    2 for x2, 4 for x1).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        scale: int,
        num_feat: int,
        num_block: int,
        num_grow_ch: int,
    ) -> None:
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"RRDBNet supports scale {', '.join(map(str, SCALES))}, got {scale}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = scale
        # Pixel-unshuffle factor that brings x2 / x1 onto the x4 trunk.
        self.unshuffle = 4 // scale
        self.size_multiple = self.unshuffle
        self.min_size = self.unshuffle

        self.conv_first = nn.Conv2d(in_channels * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(
            x,
            in_channels=self.in_channels,
            size_multiple=self.size_multiple,
            min_size=self.min_size,
            name=f"RRDBNet x{self.scale}",
        )
        if self.unshuffle > 1:
            # Channel order c * r*r + dy * r + dx, as BasicSR's pixel_unshuffle.
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
