"""Pix2Pix (Isola et al. 2017): a U-Net generator and a PatchGAN discriminator conditioned on the input.

Defaults follow the paper and the reference code (junyanz/pytorch-CycleGAN-and-pix2pix):
U-Net with batch norm and dropout (the noise source), 70x70 PatchGAN scoring (input, output)
pairs, vanilla GAN loss, L1 weight 100, Adam(2e-4, betas 0.5/0.999), batch size 1, learning rate
constant for the first half of the run then linearly decayed to 0, N(0, 0.02) initialisation,
discriminator loss halved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from img2img import losses
from img2img.data import diff_augment
from img2img.networks import registry
from img2img.networks.init import INIT_SCHEMES, init_weights
from img2img.networks.norms import NORMS
from img2img.networks.unet import MIN_NUM_DOWNS
from img2img.training.config import ConfigError, TrainConfig, check_fits, option, probe_network
from img2img.training.method import Export, Method, Prediction, StepContext, adam, set_requires_grad
from img2img.training.schedules import schedule_from_config

GENERATORS = ("unet", "resnet_9blocks", "resnet_6blocks")
DISCRIMINATORS = ("patchgan", "pixel")
MAX_AUTO_NUM_DOWNS = 8  # unet_256; deeper only adds ngf*8 blocks at a 1x1 bottleneck
DIFF_AUGMENT_OPS = ("color", "translation", "cutout")


@dataclass
class Pix2PixConfig(TrainConfig):
    """Pix2Pix options on top of TrainConfig.

    direction: ``AtoB`` learns a -> b, ``BtoA`` learns b -> a.
    generator: ``unet`` (depth ``num_downs``; 0 = follows ``image_size``: 256 -> 8, 128 -> 7,
        64 -> 6, 32 -> 5), or ``resnet_9blocks`` / ``resnet_6blocks``.
    ngf, ndf: widths of the first generator / discriminator layer (64 in the paper; smaller for CPUs).
    discriminator: ``patchgan`` (``n_layers_d`` = 3 is the 70x70 PatchGAN) or ``pixel`` (1x1).
    norm: ``batch`` (paper), ``instance`` or ``none``; dropout: Dropout(0.5) in the U-Net decoder.
    gan_loss: vanilla | lsgan | hinge | wgan-gp (with ``gp_weight``); l1_weight: lambda of the L1 term.
    diff_augment: DiffAugment policy for the discriminator's inputs (e.g. ``color,translation,cutout``
        for a few hundred images; Zhao et al. 2020); empty = off.
    lr, beta1, beta2: Adam for both networks. init, init_gain: weight initialisation.
    """

    resume_may_change: ClassVar[tuple[str, ...]] = (*TrainConfig.resume_may_change, "lr")

    direction: str = option("AtoB", help="Learn a -> b (AtoB) or b -> a.", choices=("AtoB", "BtoA"))
    in_channels: int = 3
    out_channels: int = 3
    generator: str = option("unet", choices=GENERATORS)
    num_downs: int = option(0, help="U-Net depth (default: follows --image-size).", show_default=False)
    ngf: int = option(64, help="Generator width (e.g. 16 for a CPU).")
    ndf: int = option(64, help="Discriminator width.")
    discriminator: str = option("patchgan", choices=DISCRIMINATORS)
    n_layers_d: int = 3
    norm: str = option("batch", choices=NORMS)
    dropout: bool = True
    gan_loss: str = option("vanilla", help="GAN objective.", choices=losses.GAN_MODES)
    l1_weight: float = option(100.0, help="Weight of the L1 term.")
    gp_weight: float = 10.0
    diff_augment: str = ""
    lr: float = option(2e-4, help="Adam learning rate for both networks.")
    beta1: float = 0.5
    beta2: float = 0.999
    init: str = option("normal", choices=INIT_SCHEMES)
    init_gain: float = 0.02

    def validate(self) -> None:
        super().validate()
        for name in ("ngf", "ndf", "n_layers_d", "in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, not {self.lr}")
        unknown = [p for p in self.diff_augment.split(",") if p.strip() and p.strip() not in DIFF_AUGMENT_OPS]
        if unknown:
            raise ConfigError(f"diff_augment: unknown op(s) {', '.join(unknown)}; known: {', '.join(DIFF_AUGMENT_OPS)}")
        g = probe_network(self.generator, self.generator_kwargs())
        if self.generator == "unet" and self.image_size % g.size_multiple:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of 2**num_downs = {g.size_multiple} "
                              f"(U-Net depth {self.unet_depth()})")
        check_fits(self.image_size, g, self.generator, "generator")
        check_fits(self.image_size, probe_network(self.discriminator, self.discriminator_kwargs()),
                   self.discriminator, "discriminator")

    def unet_depth(self) -> int:
        """``num_downs``, or the depth the image size allows (at most 8) when it is 0."""
        if self.num_downs:
            return self.num_downs
        depth = 0
        while depth < MAX_AUTO_NUM_DOWNS and self.image_size % 2 ** (depth + 1) == 0:
            depth += 1
        if depth < MIN_NUM_DOWNS:
            raise ConfigError(
                f"image_size {self.image_size} is too small or odd for a U-Net: use a multiple of {2**MIN_NUM_DOWNS}"
            )
        return depth

    def generator_kwargs(self) -> dict[str, Any]:
        """Complete registry kwargs of the generator (what the exported model stores)."""
        depth = {"num_downs": self.unet_depth()} if "num_downs" in registry.accepts(self.generator) else {}
        return registry.resolve_accepted(self.generator, in_channels=self.in_channels, out_channels=self.out_channels,
                                         ngf=self.ngf, norm=self.norm, dropout=self.dropout, **depth)

    def discriminator_kwargs(self) -> dict[str, Any]:
        """The conditional discriminator scores (input, output) stacked on channels."""
        return registry.resolve_accepted(self.discriminator, in_channels=self.in_channels + self.out_channels,
                                         ndf=self.ndf, norm=self.norm, n_layers=self.n_layers_d)


class Pix2Pix(Method):
    """Pix2Pix: U-Net + conditional PatchGAN on paired images (A/B folders or side-by-side AB).

    Nets g (the generator, exported as RUN_DIR/model.safetensors) and d (the conditional
    discriminator). Example:
      img2img train pix2pix --data datasets/facades --out runs/facades --steps 40000
      img2img train pix2pix --out runs/facades --resume
    """

    name = "pix2pix"
    config_class = Pix2PixConfig
    dataset_kind = "paired"
    ema_nets = ("g",)

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__(config)
        self.config: Pix2PixConfig = config
        c = config
        self.g_arch = c.generator
        self.g_kwargs = c.generator_kwargs()
        self.nets = {
            "g": init_weights(registry.build(self.g_arch, **self.g_kwargs), c.init, c.init_gain),
            "d": init_weights(registry.build(c.discriminator, **c.discriminator_kwargs()), c.init, c.init_gain),
        }
        betas = (c.beta1, c.beta2)
        self.optimizers = {
            "g": adam(self.nets["g"].parameters(), lr=c.lr, betas=betas),
            "d": adam(self.nets["d"].parameters(), lr=c.lr, betas=betas),
        }

    def setup(self, *, total_steps: int) -> None:
        super().setup(total_steps=total_steps)
        schedule = schedule_from_config(self.config, length=total_steps)
        self.schedules = {"g": schedule, "d": schedule}

    def _pair(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) in [0, 1] for the configured direction."""
        if self.config.direction == "AtoB":
            return batch["a"], batch["b"]
        return batch["b"], batch["a"]

    def _d_input(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The conditional discriminator's input: (source, image) stacked on channels, DiffAugmented
        with one parameter draw for both when configured (a new draw per call, as the paper)."""
        if self.config.diff_augment:
            source, image = diff_augment((source, image), self.config.diff_augment)
        return torch.cat([source, image], 1)

    def train_step(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        g, d = self.nets["g"], self.nets["d"]
        source, target = self._pair(batch)
        real_a, real_b = source * 2 - 1, target * 2 - 1  # the nets work in [-1, 1]

        with ctx.autocast():
            fake_b = g(real_a)

        # Discriminator: real pairs -> real, generated pairs -> fake.
        set_requires_grad([d], True)
        with ctx.autocast():
            pred_fake = d(self._d_input(real_a, fake_b.detach()))
            pred_real = d(self._d_input(real_a, real_b))
            d_fake = losses.gan_loss(pred_fake, real=False, mode=c.gan_loss)
            d_real = losses.gan_loss(pred_real, real=True, mode=c.gan_loss)
            loss_d = 0.5 * (d_fake + d_real)
            if c.gan_loss == "wgan-gp":
                loss_d = loss_d + losses.gradient_penalty(
                    lambda x: d(self._d_input(real_a, x)), real_b, fake_b, weight=c.gp_weight
                )
        ctx.backward(loss_d)
        ctx.step_optimizer("d")

        # Generator: fool the (frozen) discriminator and stay close to the target in L1.
        set_requires_grad([d], False)
        with ctx.autocast():
            g_gan = losses.generator_loss(d(self._d_input(real_a, fake_b)), mode=c.gan_loss)
            g_l1 = losses.pixel_loss(fake_b, real_b, kind="l1")
            loss_g = g_gan + c.l1_weight * g_l1
        ctx.backward(loss_g)
        ctx.step_optimizer("g")
        set_requires_grad([d], True)
        return {"g_gan": g_gan.detach(), "g_l1": g_l1.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach()}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor], nets: Mapping[str, nn.Module]) -> Prediction:
        source, target = self._pair(batch)
        out = nets["g"](source * 2 - 1)
        return Prediction(input=source, output=((out.float() + 1) / 2).clamp(0, 1), target=target)

    def exports(self) -> list[Export]:
        return [
            Export(
                file="model",
                net="g",
                arch=self.g_arch,
                kwargs=self.g_kwargs,
                value_range=(-1.0, 1.0),
                info={"direction": self.config.direction},
            )
        ]
