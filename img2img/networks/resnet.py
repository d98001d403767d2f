"""CycleGAN's ResNet generator (Johnson et al. 2016 as used by Zhu et al. 2017).

Module tree and state-dict keys match the reference ``ResnetGenerator`` of
junyanz/pytorch-CycleGAN-and-pix2pix, so its ``latest_net_G*.pth`` files load unchanged:
``model.1`` is the 7x7 stem convolution, ``model.10`` ... ``model.{9 + n_blocks}`` the residual
blocks (``model.10.conv_block.1.weight``), then two transposed convolutions and the 7x7 output
convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from img2img.networks.norms import conv_bias, norm_layer
from img2img.networks.shapes import check_input

# Two stride-2 stages down, two back up.
_N_DOWN = 2


class ResnetBlock(nn.Module):
    """x + conv_block(x): reflect-pad, 3x3 conv, norm, ReLU, [dropout 0.5], reflect-pad, 3x3 conv, norm."""

    def __init__(self, dim: int, *, norm: str, dropout: bool) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
            norm_layer(norm, dim),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
            norm_layer(norm, dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Encoder (7x7 stem, two stride-2 convs), ``n_blocks`` residual blocks, decoder (two transposed convs).

    Input (B, in_channels, H, W) in [-1, 1] with H, W multiples of 4 and at least 8;
    output (B, out_channels, H, W) in [-1, 1] (tanh).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        ngf: int,
        n_blocks: int,
        norm: str,
        dropout: bool,
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = 1
        self.size_multiple = 2**_N_DOWN
        # The 1-pixel reflection padding inside the blocks needs at least 2 pixels at 1/4 size.
        self.min_size = 2 * 2**_N_DOWN
        bias = conv_bias(norm)

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, kernel_size=7, bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(_N_DOWN):
            ch = ngf * 2**i
            layers += [
                nn.Conv2d(ch, ch * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                norm_layer(norm, ch * 2),
                nn.ReLU(True),
            ]
        width = ngf * 2**_N_DOWN
        layers += [ResnetBlock(width, norm=norm, dropout=dropout) for _ in range(n_blocks)]
        for i in range(_N_DOWN):
            ch = ngf * 2 ** (_N_DOWN - i)
            layers += [
                nn.ConvTranspose2d(
                    ch, ch // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                norm_layer(norm, ch // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(
            x,
            in_channels=self.in_channels,
            size_multiple=self.size_multiple,
            min_size=self.min_size,
            name="ResnetGenerator",
        )
        return self.model(x)
