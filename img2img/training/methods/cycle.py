"""Unpaired translation with cycle-consistency: CycleGAN (Zhu et al. 2017) and its DiscoGAN preset.

Two generators, ``g_ab`` (a -> b) and ``g_ba`` (b -> a), and two discriminators, ``d_a`` (is this a
real image of domain a?) and ``d_b``. One step, in the reference order:

1. translate both ways and back: ``fake_b = g_ab(a)``, ``rec_a = g_ba(fake_b)``,
   ``fake_a = g_ba(b)``, ``rec_b = g_ab(fake_a)``;
2. generators (discriminators frozen): fool ``d_b`` with ``fake_b`` and ``d_a`` with ``fake_a``,
   plus ``lambda_cycle`` x (|rec_a - a| + |rec_b - b|), plus the identity term
   ``lambda_identity`` x ``lambda_cycle`` x (|g_ab(b) - b| + |g_ba(a) - a|);
3. discriminators: real images of their domain against fakes drawn through the 50-image history
   pool, each loss halved.

CycleGAN defaults follow the paper and the reference code (junyanz/pytorch-CycleGAN-and-pix2pix):
ResNet-9 generators and 70x70 PatchGANs with instance norm, LSGAN, lambda 10, identity 0.5,
pool 50, Adam(2e-4, betas 0.5/0.999) for both generators together and both discriminators
together, learning rate constant for the first half of the run then linearly decayed to zero.

DiscoGAN (Kim et al. 2017) is the same method with other defaults (:class:`DiscoGANConfig`): the
conv/deconv generator and the one-score discriminator with batch norm (``discogan_g`` /
``discogan_d``), the BCE GAN loss (computed on logits: the same as a sigmoid then BCE, without its
overflow), a squared-error reconstruction loss of weight 1 on both sides, no identity loss, no pool,
64-px images, batch 64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from img2img import losses
from img2img.networks import registry
from img2img.networks.init import init_weights
from img2img.training.config import ConfigError, TrainConfig, check_choice
from img2img.training.image_pool import ImagePool
from img2img.training.method import Export, Method, Prediction, StepContext, adam, set_requires_grad
from img2img.training.schedules import schedule_from_config
from img2img.training.state import CheckpointError

GENERATORS = ("resnet_9blocks", "resnet_6blocks", "resnet", "unet_128", "unet_256", "discogan_g")
DISCRIMINATORS = ("patchgan", "pixel", "discogan_d")
# Which builders take a `norm` / `dropout` keyword (the DiscoGAN nets have batch norm built in).
_TAKES_NORM = ("resnet_9blocks", "resnet_6blocks", "resnet", "unet_128", "unet_256", "patchgan", "pixel")
_TAKES_DROPOUT = ("resnet_9blocks", "resnet_6blocks", "resnet", "unet_128", "unet_256")


@dataclass
class CycleConfig(TrainConfig):
    """CycleGAN options on top of TrainConfig (defaults: the paper and the reference code).

    in_channels, out_channels: channels of domain a and domain b images.
    generator: resnet_9blocks (256-px crops), resnet_6blocks (128 px), resnet (``n_blocks``
        residual blocks), unet_128, unet_256 or discogan_g; ngf its width. norm (instance | batch | none) and dropout apply to the ResNet
        and U-Net generators and the PatchGAN/pixel discriminators.
    discriminator: patchgan (``n_layers_d`` 3 = 70x70 patches), pixel (1x1) or discogan_d; ndf its width.
    gan_loss: lsgan | vanilla | hinge | wgan-gp (with ``gp_weight``).
    lambda_cycle: weight of each cycle-consistency term (the reference's lambda_A = lambda_B).
    lambda_identity: identity term weight relative to lambda_cycle (0.5 in the paper; 0 = off);
        needs in_channels == out_channels.
    cycle_loss: distance of the cycle and identity terms: l1 (CycleGAN) or l2 (DiscoGAN).
    pool_size: fakes kept in each discriminator's history pool (0 = use the newest only).
    lr, beta1, beta2: Adam for both generator and discriminator optimisers.
    init, init_gain: weight initialisation.
    """

    resume_may_change: ClassVar[tuple[str, ...]] = (*TrainConfig.resume_may_change, "lr")

    in_channels: int = 3
    out_channels: int = 3
    generator: str = "resnet_9blocks"
    n_blocks: int = 9
    ngf: int = 64
    norm: str = "instance"
    dropout: bool = False
    discriminator: str = "patchgan"
    ndf: int = 64
    n_layers_d: int = 3
    gan_loss: str = "lsgan"
    gp_weight: float = 10.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    cycle_loss: str = "l1"
    pool_size: int = 50
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    init: str = "normal"
    init_gain: float = 0.02

    def validate(self) -> None:
        super().validate()
        check_choice("generator", self.generator, GENERATORS)
        check_choice("discriminator", self.discriminator, DISCRIMINATORS)
        check_choice("norm", self.norm, ("instance", "batch", "none"))
        check_choice("gan_loss", self.gan_loss, losses.GAN_MODES)
        check_choice("cycle_loss", self.cycle_loss, ("l1", "l2"))
        check_choice("init", self.init, ("normal", "xavier", "kaiming", "orthogonal"))
        for name in ("ngf", "ndf", "n_layers_d", "in_channels", "out_channels", "n_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("lambda_cycle", "lambda_identity", "pool_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, not {self.lr}")
        if self.lambda_identity > 0 and self.in_channels != self.out_channels:
            raise ConfigError(
                f"lambda_identity > 0 needs as many channels in domain a as in b "
                f"({self.in_channels} != {self.out_channels}); set lambda_identity 0"
            )
        multiple = {"resnet_9blocks": 4, "resnet_6blocks": 4, "resnet": 4, "unet_128": 128, "unet_256": 256, "discogan_g": 16}
        if self.image_size % multiple[self.generator]:
            raise ConfigError(
                f"image_size {self.image_size} must be a multiple of {multiple[self.generator]} for {self.generator}"
            )
        smallest = {"patchgan": 3 * 2**self.n_layers_d, "pixel": 1, "discogan_d": 64}[self.discriminator]
        if self.image_size < smallest:
            raise ConfigError(
                f"image_size {self.image_size} is below the {smallest} px the {self.discriminator} discriminator needs"
            )


@dataclass
class DiscoGANConfig(CycleConfig):
    """DiscoGAN: the cycle method with the networks and losses of Kim et al. 2017 (see module docstring).

    Defaults differ from CycleConfig only; every CycleConfig option still applies.
    """

    image_size: int = 64
    batch_size: int = 64
    generator: str = "discogan_g"
    discriminator: str = "discogan_d"
    norm: str = "batch"
    gan_loss: str = "vanilla"
    lambda_cycle: float = 1.0
    lambda_identity: float = 0.0
    cycle_loss: str = "l2"
    pool_size: int = 0


class Cycle(Method):
    """Nets ``g_ab``, ``g_ba`` (exported as ``g_ab`` / ``g_ba``), ``d_a``, ``d_b``; optimisers ``g``, ``d``."""

    name = "cyclegan"
    config_class = CycleConfig
    dataset_kind = "unpaired"
    ema_nets = ("g_ab", "g_ba")

    def __init__(self, config: CycleConfig) -> None:
        super().__init__(config)
        self.config: CycleConfig = config
        c = config
        self.g_arch = c.generator
        self.g_kwargs = {
            "g_ab": self._generator_kwargs(c.in_channels, c.out_channels),
            "g_ba": self._generator_kwargs(c.out_channels, c.in_channels),
        }
        d_kwargs = {"d_a": self._discriminator_kwargs(c.in_channels), "d_b": self._discriminator_kwargs(c.out_channels)}
        self.nets = {
            **{k: init_weights(registry.build(c.generator, **kw), c.init, c.init_gain) for k, kw in self.g_kwargs.items()},
            **{k: init_weights(registry.build(c.discriminator, **kw), c.init, c.init_gain) for k, kw in d_kwargs.items()},
        }
        betas = (c.beta1, c.beta2)
        # One optimiser per pair, as the reference: the two generators share the objective.
        self.optimizers = {
            "g": adam([*self.nets["g_ab"].parameters(), *self.nets["g_ba"].parameters()], lr=c.lr, betas=betas),
            "d": adam([*self.nets["d_a"].parameters(), *self.nets["d_b"].parameters()], lr=c.lr, betas=betas),
        }
        self.pools = {"a": ImagePool(c.pool_size), "b": ImagePool(c.pool_size)}

    def _generator_kwargs(self, cin: int, cout: int) -> dict[str, Any]:
        c = self.config
        kwargs: dict[str, Any] = {"in_channels": cin, "out_channels": cout, "ngf": c.ngf}
        if c.generator in _TAKES_NORM:
            kwargs["norm"] = c.norm
        if c.generator in _TAKES_DROPOUT:
            kwargs["dropout"] = c.dropout
        if c.generator == "resnet":
            kwargs["n_blocks"] = c.n_blocks
        return registry.resolve_kwargs(c.generator, **kwargs)

    def _discriminator_kwargs(self, cin: int) -> dict[str, Any]:
        c = self.config
        kwargs: dict[str, Any] = {"in_channels": cin, "ndf": c.ndf}
        if c.discriminator in _TAKES_NORM:
            kwargs["norm"] = c.norm
        if c.discriminator == "patchgan":
            kwargs["n_layers"] = c.n_layers_d
        return kwargs

    def dataset_options(self) -> dict[str, Any]:
        """Domain a images with ``in_channels``, domain b with ``out_channels`` (gray or RGB)."""
        return {"channels_a": self.config.in_channels, "channels_b": self.config.out_channels}

    def setup(self, *, total_steps: int) -> None:
        super().setup(total_steps=total_steps)
        schedule = schedule_from_config(self.config, length=total_steps)
        self.schedules = {"g": schedule, "d": schedule}

    def train_step(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        g_ab, g_ba, d_a, d_b = (self.nets[k] for k in ("g_ab", "g_ba", "d_a", "d_b"))
        real_a, real_b = batch["a"] * 2 - 1, batch["b"] * 2 - 1  # the nets work in [-1, 1]

        # Generators, with the discriminators frozen so their weights collect no gradient.
        set_requires_grad([d_a, d_b], False)
        with ctx.autocast():
            fake_b = g_ab(real_a)
            rec_a = g_ba(fake_b)
            fake_a = g_ba(real_b)
            rec_b = g_ab(fake_a)
            gan_ab = losses.generator_loss(d_b(fake_b), mode=c.gan_loss)
            gan_ba = losses.generator_loss(d_a(fake_a), mode=c.gan_loss)
            cycle_a = losses.pixel_loss(rec_a, real_a, kind=c.cycle_loss)
            cycle_b = losses.pixel_loss(rec_b, real_b, kind=c.cycle_loss)
            loss_g = gan_ab + gan_ba + c.lambda_cycle * (cycle_a + cycle_b)
            out = {"gan_ab": gan_ab, "gan_ba": gan_ba, "cycle_a": cycle_a, "cycle_b": cycle_b}
            if c.lambda_identity > 0:
                # g_ab should leave an image that is already in domain b unchanged, and vice versa.
                idt_b = losses.pixel_loss(g_ab(real_b), real_b, kind=c.cycle_loss)
                idt_a = losses.pixel_loss(g_ba(real_a), real_a, kind=c.cycle_loss)
                loss_g = loss_g + c.lambda_cycle * c.lambda_identity * (idt_a + idt_b)
                out.update(idt_a=idt_a, idt_b=idt_b)
        ctx.backward(loss_g)
        ctx.step_optimizer("g")

        # Discriminators: real images of their own domain against (pooled) fakes.
        set_requires_grad([d_a, d_b], True)
        pooled_a = self.pools["a"].query(fake_a)
        pooled_b = self.pools["b"].query(fake_b)
        with ctx.autocast():
            loss_d_a = self._discriminator_loss(d_a, real_a, pooled_a)
            loss_d_b = self._discriminator_loss(d_b, real_b, pooled_b)
        ctx.backward(loss_d_a + loss_d_b)
        ctx.step_optimizer("d")
        out.update(d_a=loss_d_a, d_b=loss_d_b)
        return {k: v.detach() for k, v in out.items()}

    def _discriminator_loss(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Half the sum of the real and fake terms (reference), plus the gradient penalty for wgan-gp."""
        c = self.config
        loss = losses.discriminator_loss(d(real), d(fake), mode=c.gan_loss)
        if c.gan_loss == "wgan-gp":
            loss = loss + losses.gradient_penalty(d, real, fake, weight=c.gp_weight)
        return loss

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor], nets: Mapping[str, nn.Module]) -> Prediction:
        """One grid row per image pair: real a | fake b | reconstructed a | real b | fake a | reconstructed b."""
        real_a, real_b = batch["a"] * 2 - 1, batch["b"] * 2 - 1
        fake_b = nets["g_ab"](real_a)
        fake_a = nets["g_ba"](real_b)
        rec_a = nets["g_ba"](fake_b)
        rec_b = nets["g_ab"](fake_a)

        def unit(x: torch.Tensor) -> torch.Tensor:
            return ((x.float() + 1) / 2).clamp(0, 1)

        return Prediction(
            input=batch["a"],
            output=unit(fake_b),
            target=None,  # unpaired: nothing to measure against
            extra={"rec_a": unit(rec_a), "real_b": batch["b"], "fake_a": unit(fake_a), "rec_b": unit(rec_b)},
        )

    def exports(self) -> list[Export]:
        return [
            Export(file="g_ab", net="g_ab", arch=self.g_arch, kwargs=self.g_kwargs["g_ab"],
                   info={"direction": "AtoB"}),
            Export(file="g_ba", net="g_ba", arch=self.g_arch, kwargs=self.g_kwargs["g_ba"],
                   info={"direction": "BtoA"}),
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"pools": {k: pool.state_dict() for k, pool in self.pools.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            for k, pool in self.pools.items():
                pool.load_state_dict(state["pools"][k])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"the checkpoint's {self.name} state does not fit this run ({e})") from None


class DiscoGAN(Cycle):
    """The cycle method with the DiscoGAN preset (:class:`DiscoGANConfig`); nothing else differs."""

    name = "discogan"
    config_class = DiscoGANConfig
