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
from img2img.networks.init import init_weights
from img2img.training.config import ConfigError, TrainConfig, check_choice
from img2img.training.method import Export, Method, Prediction, StepContext, adam, set_requires_grad
from img2img.training.schedules import schedule_from_config

GENERATORS = ("unet", "resnet_9blocks", "resnet_6blocks")
DISCRIMINATORS = ("patchgan", "pixel")
MAX_AUTO_NUM_DOWNS = 8
DIFF_AUGMENT_OPS = ("color", "translation", "cutout")  # unet_256; deeper only adds ngf*8 blocks at a 1x1 bottleneck


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

    direction: str = "AtoB"
    in_channels: int = 3
    out_channels: int = 3
    generator: str = "unet"
    num_downs: int = 0
    ngf: int = 64
    ndf: int = 64
    discriminator: str = "patchgan"
    n_layers_d: int = 3
    norm: str = "batch"
    dropout: bool = True
    gan_loss: str = "vanilla"
    l1_weight: float = 100.0
    gp_weight: float = 10.0
    diff_augment: str = ""
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    init: str = "normal"
    init_gain: float = 0.02

    def validate(self) -> None:
        super().validate()
        check_choice("direction", self.direction, ("AtoB", "BtoA"))
        check_choice("generator", self.generator, GENERATORS)
        check_choice("discriminator", self.discriminator, DISCRIMINATORS)
        check_choice("norm", self.norm, ("batch", "instance", "none"))
        check_choice("gan_loss", self.gan_loss, losses.GAN_MODES)
        check_choice("init", self.init, ("normal", "xavier", "kaiming", "orthogonal"))
        for name in ("ngf", "ndf", "n_layers_d", "in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, not {self.lr}")
        unknown = [p for p in self.diff_augment.split(",") if p.strip() and p.strip() not in DIFF_AUGMENT_OPS]
        if unknown:
            raise ConfigError(f"diff_augment: unknown op(s) {', '.join(unknown)}; known: {', '.join(DIFF_AUGMENT_OPS)}")
        if self.generator == "unet":
            depth = self.unet_depth()
            if self.image_size % 2**depth:
                raise ConfigError(
                    f"image_size {self.image_size} is not a multiple of 2**num_downs = {2**depth} (U-Net depth {depth})"
                )
        elif self.image_size % 4:
            raise ConfigError(f"image_size {self.image_size} must be a multiple of 4 for {self.generator}")

    def unet_depth(self) -> int:
        """``num_downs``, or the depth the image size allows (at least 5, at most 8) when it is 0."""
        if self.num_downs:
            if self.num_downs < 5:
                raise ConfigError(f"num_downs must be >= 5 (the U-Net's fixed blocks), not {self.num_downs}")
            return self.num_downs
        depth = 0
        while depth < MAX_AUTO_NUM_DOWNS and self.image_size % 2 ** (depth + 1) == 0:
            depth += 1
        if depth < 5:
            raise ConfigError(f"image_size {self.image_size} is too small or odd for a U-Net: use a multiple of 32")
        return depth


class Pix2Pix(Method):
    """Nets ``g`` (generator, exported as ``model``) and ``d`` (conditional discriminator)."""

    name = "pix2pix"
    config_class = Pix2PixConfig
    dataset_kind = "paired"
    ema_nets = ("g",)

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__(config)
        self.config: Pix2PixConfig = config
        c = config
        if c.generator == "unet":
            g_kwargs: dict[str, Any] = {"num_downs": c.unet_depth(), "dropout": c.dropout}
        else:
            g_kwargs = {"dropout": c.dropout}
        g_kwargs.update(in_channels=c.in_channels, out_channels=c.out_channels, ngf=c.ngf, norm=c.norm)
        self.g_arch = c.generator
        self.g_kwargs = registry.resolve_kwargs(c.generator, **g_kwargs)
        d_kwargs: dict[str, Any] = {"in_channels": c.in_channels + c.out_channels, "ndf": c.ndf, "norm": c.norm}
        if c.discriminator == "patchgan":
            d_kwargs["n_layers"] = c.n_layers_d
        self.nets = {
            "g": init_weights(registry.build(self.g_arch, **self.g_kwargs), c.init, c.init_gain),
            "d": init_weights(registry.build(c.discriminator, **d_kwargs), c.init, c.init_gain),
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
