"""The pix2pix U-Net generator (Isola et al. 2017).

Built from the inside out as nested skip blocks, exactly the module tree of the reference
``UnetGenerator`` / ``UnetSkipConnectionBlock`` (junyanz/pytorch-CycleGAN-and-pix2pix), so its
checkpoints load unchanged: keys read ``model.model.0.weight`` (outermost down-conv),
``model.model.1.model.1.weight`` (next block's down-conv), ``model.model.1.model.2.running_mean`` ...

Each of the ``num_downs`` blocks halves H and W on the way down (4x4 stride-2 conv) and doubles
them on the way up (4x4 stride-2 transposed conv), so H and W must be multiples of
``2 ** num_downs``: 128 for ``unet_128`` (7), 256 for ``unet_256`` (8).
"""

from __future__ import annotations

import torch
from torch import nn

from img2img.networks.norms import conv_bias, norm_layer
from img2img.networks.shapes import check_input

# The outermost block, three widening blocks and the innermost block have fixed widths; only
# the number of ngf*8 blocks in between grows with num_downs.
MIN_NUM_DOWNS = 5


class UnetSkipBlock(nn.Module):
    """One level of the U-Net: down-sample, run ``submodule``, up-sample, concatenate the input.

    Layer order (indices matter for state-dict keys):
      outermost: down-conv, submodule, ReLU, up-conv (with bias), tanh — no skip concatenation;
      innermost: LeakyReLU, down-conv, ReLU, up-conv, norm;
      otherwise: LeakyReLU, down-conv, norm, submodule, ReLU, up-conv, norm, [dropout 0.5].
    Non-outermost blocks return cat([x, model(x)], dim=1), i.e. 2 * outer_ch channels.
    """

    def __init__(
        self,
        outer_ch: int,
        inner_ch: int,
        *,
        norm: str,
        input_ch: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        bias = conv_bias(norm)
        input_ch = outer_ch if input_ch is None else input_ch
        down_conv = nn.Conv2d(input_ch, inner_ch, kernel_size=4, stride=2, padding=1, bias=bias)

        layers: list[nn.Module]
        if outermost:
            assert submodule is not None
            up_conv = nn.ConvTranspose2d(inner_ch * 2, outer_ch, kernel_size=4, stride=2, padding=1)
            layers = [down_conv, submodule, nn.ReLU(True), up_conv, nn.Tanh()]
        elif submodule is None:  # innermost: the bottleneck, no norm after its down-conv
            up_conv = nn.ConvTranspose2d(inner_ch, outer_ch, kernel_size=4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), up_conv, norm_layer(norm, outer_ch)]
        else:
            up_conv = nn.ConvTranspose2d(
                inner_ch * 2, outer_ch, kernel_size=4, stride=2, padding=1, bias=bias
            )
            layers = [
                nn.LeakyReLU(0.2, True),
                down_conv,
                norm_layer(norm, inner_ch),
                submodule,
                nn.ReLU(True),
                up_conv,
                norm_layer(norm, outer_ch),
            ]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` down/up levels and skip connections at every level.

    Input (B, in_channels, H, W) in [-1, 1] with H, W multiples of ``2 ** num_downs``;
    output (B, out_channels, H, W) in [-1, 1] (tanh). ``dropout`` puts Dropout(0.5) in the
    ``num_downs - 5`` innermost-but-one decoder levels (pix2pix's noise source; off in eval mode).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        num_downs: int,
        ngf: int,
        norm: str,
        dropout: bool,
    ) -> None:
        super().__init__()
        if num_downs < MIN_NUM_DOWNS:
            raise ValueError(f"U-Net needs num_downs >= {MIN_NUM_DOWNS}, got {num_downs}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_downs = num_downs
        self.scale = 1
        self.size_multiple = 2**num_downs
        self.min_size = 2**num_downs

        block = UnetSkipBlock(ngf * 8, ngf * 8, norm=norm)
        for _ in range(num_downs - MIN_NUM_DOWNS):
            block = UnetSkipBlock(ngf * 8, ngf * 8, norm=norm, submodule=block, dropout=dropout)
        block = UnetSkipBlock(ngf * 4, ngf * 8, norm=norm, submodule=block)
        block = UnetSkipBlock(ngf * 2, ngf * 4, norm=norm, submodule=block)
        block = UnetSkipBlock(ngf, ngf * 2, norm=norm, submodule=block)
        self.model = UnetSkipBlock(
            out_channels, ngf, norm=norm, input_ch=in_channels, submodule=block, outermost=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(
            x,
            in_channels=self.in_channels,
            size_multiple=self.size_multiple,
            min_size=self.min_size,
            name=f"U-Net (num_downs={self.num_downs})",
        )
        return self.model(x)
