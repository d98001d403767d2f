"""Real-ESRGAN's compact network, SRVGGNetCompact (Wang et al., Real-ESRGAN v0.2.5 release).

A plain stack at the low resolution: a 3x3 conv, then ``num_conv`` times (PReLU, 3x3 conv), a
last 3x3 conv to ``out_channels * scale**2`` channels and one pixel shuffle, plus the
nearest-neighbour upsampled input. No residual blocks and no convolution at the high
resolution, so it costs far less per output pixel than MSRResNet or RRDBNet of similar width.

Parameter names follow the published files (``realesr-general-x4v3``, ``realesr-general-wdn-x4v3``,
``realesr-animevideov3``): one ``body`` list where even indices are convs and odd ones PReLUs
(one slope per channel): ``body.0`` first conv, ``body.1`` its PReLU, ..., ``body.{2*num_conv+2}``
the last conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from img2img.networks.shapes import check_input


class SRVGGNetCompact(nn.Module):
    """Input (B, in_channels, H, W) in [0, 1]; output (B, out_channels, H*scale, W*scale).

    The output is trained to lie in [0, 1] (not clamped): the network predicts the residual on top
    of a nearest-neighbour upsampling of the input, so in/out channels must agree.
    """

    def __init__(
        self, *, in_channels: int, out_channels: int, scale: int, num_feat: int, num_conv: int
    ) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(
                f"SRVGGNetCompact adds the upsampled input to its output: in_channels ({in_channels}) "
                f"must equal out_channels ({out_channels})"
            )
        if scale < 1 or num_feat < 1 or num_conv < 0:
            raise ValueError(f"SRVGGNetCompact: bad sizes scale={scale}, num_feat={num_feat}, num_conv={num_conv}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = scale
        self.size_multiple = 1
        self.min_size = 1
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        layers.append(nn.Conv2d(num_feat, out_channels * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, in_channels=self.in_channels, size_multiple=1, min_size=1, name="SRVGGNetCompact")
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.scale, mode="nearest")
