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
from img2img.networks.init import INIT_SCHEMES, init_weights
from img2img.networks.norms import NORMS
from img2img.training.config import ConfigError, TrainConfig, check_fits, option, probe_network
from img2img.training.image_pool import ImagePool
from img2img.training.method import Export, Method, Prediction, StepContext, adam, set_requires_grad
from img2img.training.schedules import schedule_from_config
from img2img.training.state import CheckpointError

GENERATORS = ("resnet_9blocks", "resnet_6blocks", "resnet", "unet_128", "unet_256", "discogan_g")
DISCRIMINATORS = ("patchgan", "pixel", "discogan_d")


@dataclass
class CycleConfig(TrainConfig):
    """CycleGAN options on top of TrainConfig (defaults: the paper and the reference code).

    in_channels, out_channels: channels of domain a and domain b images.
    generator: resnet_9blocks (256-px crops), resnet_6blocks (128 px), resnet (``n_blocks``
        residual blocks), unet_128, unet_256 or discogan_g; ngf its width. norm (instance | batch |
        none) and dropout apply to the networks that take them (not the DiscoGAN nets, which have
        batch norm built in).
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
    generator: str = option("resnet_9blocks", help="Generator architecture.", choices=GENERATORS)
    n_blocks: int = 9
    ngf: int = option(64, help="Generator width (e.g. 16 for a CPU).")
    norm: str = option("instance", choices=NORMS)
    dropout: bool = False
    discriminator: str = option("patchgan", choices=DISCRIMINATORS)
    ndf: int = option(64, help="Discriminator width.")
    n_layers_d: int = 3
    gan_loss: str = option("lsgan", help="GAN objective.", choices=losses.GAN_MODES)
    gp_weight: float = 10.0
    lambda_cycle: float = option(10.0, help="Weight of each cycle-consistency term.")
    lambda_identity: float = option(0.5, help="Identity term weight relative to --lambda-cycle (0: off).")
    cycle_loss: str = option("l1", choices=("l1", "l2"))
    pool_size: int = option(50, help="Fakes kept in each discriminator's history pool (0: off).")
    lr: float = option(2e-4, help="Adam learning rate for generators and discriminators.")
    beta1: float = 0.5
    beta2: float = 0.999
    init: str = option("normal", choices=INIT_SCHEMES)
    init_gain: float = 0.02

    def validate(self) -> None:
        super().validate()
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
        g = probe_network(self.generator, self.generator_kwargs(self.in_channels, self.out_channels))
        check_fits(self.image_size, g, self.generator, "generator")
        d = probe_network(self.discriminator, self.discriminator_kwargs(self.in_channels))
        check_fits(self.image_size, d, self.discriminator, "discriminator")

    def generator_kwargs(self, cin: int, cout: int) -> dict[str, Any]:
        """Complete registry kwargs of a generator from ``cin`` to ``cout`` channels."""
        # n_blocks sizes the free `resnet` only; the named variants (resnet_9blocks ...) fix their depth.
        depth = {"n_blocks": self.n_blocks} if self.generator == "resnet" else {}
        return registry.resolve_accepted(self.generator, in_channels=cin, out_channels=cout, ngf=self.ngf,
                                         norm=self.norm, dropout=self.dropout, **depth)

    def discriminator_kwargs(self, cin: int) -> dict[str, Any]:
        return registry.resolve_accepted(self.discriminator, in_channels=cin, ndf=self.ndf, norm=self.norm,
                                         n_layers=self.n_layers_d)


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
    """CycleGAN: two ResNet generators + two PatchGANs on unpaired folders (trainA/, trainB/).

    Defaults as Zhu et al. 2017 (instance norm, LSGAN, history pool; learning rate constant, then
    linear decay to 0). Nets g_ab, g_ba (exported as RUN_DIR/g_ab.safetensors and g_ba.safetensors),
    d_a, d_b; optimisers g, d. Example:
      img2img train cyclegan --data datasets/horse2zebra --out runs/h2z --epochs 200
      img2img translate horses/ zebras/ --model runs/h2z --direction AtoB
    """

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
            "g_ab": c.generator_kwargs(c.in_channels, c.out_channels),
            "g_ba": c.generator_kwargs(c.out_channels, c.in_channels),
        }
        d_kwargs = {"d_a": c.discriminator_kwargs(c.in_channels), "d_b": c.discriminator_kwargs(c.out_channels)}
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
    """DiscoGAN: the cycle method with Kim et al. 2017's networks and losses (a preset of cyclegan).

    Only the defaults (DiscoGANConfig) differ: discogan_g / discogan_d (batch norm), 64-px
    images, batch 64, BCE GAN loss, squared-error reconstruction of weight 1 on both sides, no
    identity loss, no pool. Example:
      img2img train discogan --data datasets/edges2shoes_unpaired --out runs/e2s --steps 20000
    """

    name = "discogan"
    config_class = DiscoGANConfig
