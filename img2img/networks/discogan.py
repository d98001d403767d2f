"""DiscoGAN's generator and discriminator (Kim et al. 2017), at the reference's 64-px scale.

The layout follows the authors' code (SKTBrain/DiscoGAN ``discogan/model.py``), and so do the
parameter names: the generator is one ``main`` Sequential (``main.0.weight``, ``main.3.running_mean``
...), the discriminator has ``conv1``..``conv5`` and ``bn2``..``bn4``. All convolutions are 4x4 and
bias-free, as in the reference.

One deliberate difference: the reference generator ends in a sigmoid (images in [0, 1]); ours
ends in tanh so DiscoGAN works in [-1, 1] like the other translation networks here. The
discriminator returns logits (the loss applies the sigmoid) and can also return the three
intermediate activations DiscoGAN's feature-matching loss uses.
"""

from __future__ import annotations

import torch
from torch import nn

from img2img.networks.shapes import check_input

# Four stride-2 stages down and four back up.
_N_DOWN = 4


class DiscoGANGenerator(nn.Module):
    """Conv encoder (4 stride-2 convs, BN + LeakyReLU 0.2) and transposed-conv decoder (BN + ReLU).

    Input (B, in_channels, H, W) in [-1, 1], H and W multiples of 16; output
    (B, out_channels, H, W) in [-1, 1] (tanh). Widths ngf, 2ngf, 4ngf, 8ngf at 1/2 .. 1/16 size.
    """

    def __init__(self, *, in_channels: int, out_channels: int, ngf: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = 1
        self.size_multiple = 2**_N_DOWN
        self.min_size = 2**_N_DOWN
        widths = [ngf * 2**i for i in range(_N_DOWN)]  # 64, 128, 256, 512

        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        for cin, cout in zip(widths[:0:-1], widths[-2::-1], strict=True):
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(widths[0], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(
            x,
            in_channels=self.in_channels,
            size_multiple=self.size_multiple,
            min_size=self.min_size,
            name="DiscoGAN generator",
        )
        return self.main(x)


class DiscoGANDiscriminator(nn.Module):
    """Four stride-2 4x4 convs (BN + LeakyReLU 0.2 after all but the first) and a 4x4 valid conv.

    Input (B, in_channels, H, W) with H, W >= 64; output (B, 1, H // 16 - 3, W // 16 - 3) logits,
    a single score for the reference's 64x64 images.
    """

    def __init__(self, *, in_channels: int, ndf: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.min_size = 64
        self.conv1 = nn.Conv2d(in_channels, ndf, 4, 2, 1, bias=False)
        self.relu1 = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ndf * 2)
        self.relu2 = nn.LeakyReLU(0.2, inplace=True)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(ndf * 4)
        self.relu3 = nn.LeakyReLU(0.2, inplace=True)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(ndf * 8)
        self.relu4 = nn.LeakyReLU(0.2, inplace=True)
        self.conv5 = nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the activations after stages 2, 3 and 4 (for the feature-matching loss)."""
        h2 = self.relu2(self.bn2(self.conv2(self.relu1(self.conv1(x)))))
        h3 = self.relu3(self.bn3(self.conv3(h2)))
        h4 = self.relu4(self.bn4(self.conv4(h3)))
        return self.conv5(h4), [h2, h3, h4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
