"""SRGAN (Ledig et al. 2017): SRResNet pixel pre-training, then perceptual + adversarial training.

Phase 1 (``step < pretrain_steps``): the generator alone, pixel loss (MSE by default), the
PSNR-oriented "SRResNet" model. Phase 2 (the remaining steps): content loss on VGG19 features
(``relu5_4``, "VGG54", by default), ``adv_weight`` (1e-3) x adversarial loss against the VGG-style
discriminator (vanilla, or ESRGAN's relativistic average ``ragan``), plus an optional pixel loss.
A run with ``pretrain_steps >= steps`` is phase 1 only and never needs the VGG weights.

Batches are ``{"lr": (B, 3, h, w), "hr": (B, 3, h*scale, w*scale)}`` in [0, 1] (the ``sr``
dataset, docs/data.md); every network here works in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from img2img import losses
from img2img.data.degrade import DEGRADATIONS
from img2img.networks import registry
from img2img.training.config import ConfigError, TrainConfig, option, probe_network
from img2img.training.method import Export, Method, Prediction, StepContext, adam, set_requires_grad
from img2img.training.schedules import Schedule, schedule_from_config

SR_ARCHS: tuple[str, ...] = ("srresnet", "msrresnet", "rrdbnet")
SR_GAN_MODES: tuple[str, ...] = ("vanilla", "ragan")
PERCEPTUAL_KINDS: tuple[str, ...] = ("vgg", "none")


class VGGWeightsUnavailableError(ConfigError):
    """The VGG19 ImageNet weights for the perceptual loss cannot be had (e.g. offline).

    A ConfigError, so ``img2img train`` reports it in one line with the usage exit code.
    """


@dataclass
class SRGANConfig(TrainConfig):
    """SRGAN options (on top of TrainConfig; ``image_size`` is the HR crop side).

    scale: 2, 3 or 4 (rrdbnet: 2 or 4).
    arch, num_feat, num_block: the generator (``num_block`` 0 = the architecture's default).
    init: ``network`` keeps the architecture's own initialisation (BasicSR: Kaiming x 0.1);
        ``zero_last`` re-initialises every conv with PyTorch's default and zeroes the last conv, so
        the model starts as exactly its bilinear/upsampling skip and leaves that plateau much faster
        (measured: MSRResNet x2, fixed batch, MSE halves in ~50 steps instead of not moving).
    pretrain_steps: phase 1 length (pixel loss only); the remaining ``steps`` are phase 2.
    init_from: a model (run directory, our ``.safetensors``, or a reference file such as BasicSR's
        MSRResNet / RRDBNet) whose weights start the generator of a fresh run: the paper's SRGAN
        starts from its trained SRResNet (``--pretrain-steps 0 --init-from RUN``), and a finished
        run can be fine-tuned (e.g. on larger crops). Its architecture and kwargs must equal this
        run's generator. Not read on ``--resume``: the checkpoint holds the weights.
    degradation: how LR crops are made from HR crops (``bicubic``, ``realesrgan`` or ``photo``:
        ``img2img.data.degrade``); ignored when the data has LR files.
    pixel_loss: ``l2`` (MSE, as the paper), ``l1`` or ``charbonnier``; phase 1 weight is 1.
    pixel_weight: weight of the pixel loss in phase 2 (0 in the paper).
    perceptual: ``vgg`` (VGG19 feature loss) or ``none``.
    perceptual_layer, perceptual_weight, perceptual_criterion: the content loss
        ``w * dist(phi(sr), phi(hr))``; 0.006 ~ 1/12.75**2 with l2 is the paper's feature rescaling.
    vgg_weights: local torchvision vgg19 state dict; empty = torchvision's weights API (its cache).
    gan_mode: ``vanilla`` (paper) or ``ragan`` (relativistic average, ESRGAN); adv_weight 1e-3.
    ndf: discriminator width.
    lr_g, lr_d, beta1, beta2: Adam settings (paper: 1e-4, betas 0.9/0.999).
    """

    resume_may_change: ClassVar[tuple[str, ...]] = (*TrainConfig.resume_may_change, "lr_g", "lr_d")

    image_size: int = 96
    batch_size: int = 16
    val_data: str = option("", help="Held-out HR folder for validation PSNR/SSIM.", path="dir")
    val_every: int = option(1000, help="Validate every N steps (PSNR/SSIM on Y, border crop = scale).")
    lr_schedule: str = "constant"
    scale: int = option(4, help="Upscaling factor (rrdbnet: 2 or 4).", choices=(2, 3, 4))
    arch: str = option("srresnet", choices=SR_ARCHS,
                       help="Generator: srresnet (paper, BN), msrresnet (BasicSR, no BN) or rrdbnet (ESRGAN).")
    num_feat: int = option(64, help="Generator width.")
    num_block: int = option(0, help="Generator residual blocks (0: the architecture's default).")
    init: str = option("network", choices=("network", "zero_last"))
    pretrain_steps: int = option(0, help="Phase 1 steps (pixel loss only); the rest is phase 2 (GAN).")
    init_from: str = option("", help="Start the generator from this model (run dir, .safetensors or reference "
                                     ".pth), e.g. the SRResNet for phase 2 or a run to fine-tune; same "
                                     "architecture and sizes.")
    degradation: str = option("bicubic", choices=DEGRADATIONS,
                              help="How LR crops are made from HR crops (data/degrade.py): bicubic, "
                                   "realesrgan or photo (real-world photos: blur, noise, JPEG).")
    pixel_loss: str = option("l2", help="Pixel loss (l2 = MSE).", choices=losses.PIXEL_KINDS)
    pixel_weight: float = option(0.0, help="Weight of the pixel loss in phase 2.")
    perceptual: str = option("vgg", help="Phase 2 content loss on VGG19 features.", choices=PERCEPTUAL_KINDS)
    perceptual_layer: str = option("relu5_4", help="VGG19 layer of the content loss (relu5_4 = VGG54).")
    perceptual_weight: float = option(0.006, help="Weight of the content loss.")
    perceptual_criterion: str = option("l2", choices=("l1", "l2"))
    vgg_weights: str = option("", help="Local torchvision vgg19 state dict (.pth).", path="file")
    gan_mode: str = option("vanilla", help="Adversarial loss (ragan: ESRGAN).", choices=SR_GAN_MODES)
    adv_weight: float = option(1e-3, help="Weight of the adversarial loss.")
    ndf: int = 64
    lr_g: float = option(1e-4, help="Generator Adam learning rate.")
    lr_d: float = option(1e-4, help="Discriminator Adam learning rate.")
    beta1: float = 0.9
    beta2: float = 0.999

    def validate(self) -> None:
        super().validate()
        if self.image_size % self.scale:
            raise ConfigError(f"image_size (HR crop) {self.image_size} must be a multiple of scale {self.scale}")
        if self.perceptual_layer not in losses.vgg19_layer_names():
            raise ConfigError(f"perceptual_layer {self.perceptual_layer!r} is not a VGG19 layer "
                              f"(e.g. relu5_4, relu2_2, conv5_4)")
        for name in ("num_feat", "ndf"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("num_block", "pretrain_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("pixel_weight", "perceptual_weight", "adv_weight", "lr_g", "lr_d"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        # The networks say what they accept: the generator its scales and LR sizes, D its crop size.
        g = probe_network(self.arch, self.generator_kwargs())
        lr_side = self.image_size // self.scale
        if lr_side % g.size_multiple or lr_side < g.min_size:
            raise ConfigError(f"image_size {self.image_size} gives {lr_side}-px LR crops; {self.arch} x{self.scale} "
                              f"needs a multiple of {g.size_multiple} (at least {g.min_size})")
        if self.has_phase2:
            try:
                probe_network("srgan_d", {"in_channels": 3, "ndf": self.ndf, "input_size": self.image_size})
            except ConfigError as e:
                raise ConfigError(f"image_size {self.image_size} (the HR crop the discriminator sees): {e}") from None

    @property
    def has_phase2(self) -> bool:
        """True when the run goes past pre-training (``steps`` 0 = length still given by epochs)."""
        return self.steps == 0 or self.pretrain_steps < self.steps

    def generator_kwargs(self) -> dict[str, Any]:
        """Complete registry kwargs of the generator (what the exported model stores)."""
        overrides: dict[str, Any] = {"scale": self.scale, "num_feat": self.num_feat}
        if self.num_block:
            overrides["num_block"] = self.num_block
        return registry.resolve_kwargs(self.arch, **overrides)


@dataclass(frozen=True)
class PhaseSchedule:
    """Phase 1's schedule before ``switch``, phase 2's from it (both pure functions of the step)."""

    first: Schedule
    second: Schedule
    switch: int

    def factor(self, step: int) -> float:
        return self.first.factor(step) if step < self.switch else self.second.factor(step)


def build_perceptual(config: SRGANConfig) -> losses.PerceptualLoss:
    """The VGG19 content loss of ``config``; VGGWeightsUnavailableError names every way to get weights."""
    weights = config.vgg_weights or "imagenet"
    try:
        return losses.PerceptualLoss(
            {config.perceptual_layer: config.perceptual_weight},
            criterion=config.perceptual_criterion,
            weights=weights,
        )
    except RuntimeError as e:
        if config.vgg_weights:
            raise VGGWeightsUnavailableError(str(e)) from None
        raise VGGWeightsUnavailableError(
            "the VGG19 ImageNet weights for the perceptual loss are not available here (offline?). "
            "Either put torchvision's vgg19-dcbb9e9d.pth in the torch hub cache "
            f"({_hub_checkpoint_dir()}), or pass a local file with --vgg-weights FILE, "
            "or train without the content loss: --perceptual none"
        ) from None


def _hub_checkpoint_dir() -> str:
    import os

    return os.path.join(torch.hub.get_dir(), "checkpoints")


class SRGAN(Method):
    """SRGAN / SRResNet super-resolution from a folder of HR images (LR made by bicubic downscaling).

    Phase 1 (--pretrain-steps) trains the generator on the pixel loss alone, phase 2 (the rest)
    adds the VGG content loss and the discriminator. Example (PSNR model only, then GAN fine-tuning):
      img2img train srgan --data photos --out runs/sr --scale 4 --steps 20000 --pretrain-steps 20000
      img2img train srgan --data photos --out runs/srgan --scale 4 --steps 40000 --pretrain-steps 20000
    """

    name = "srgan"
    config_class = SRGANConfig
    dataset_kind = "sr"
    ema_nets = ("g",)
    val_y_channel = True

    def __init__(self, config: SRGANConfig) -> None:
        super().__init__(config)
        self.config: SRGANConfig = config
        # Both nets always exist (so a checkpoint has the same nets in either phase); the VGG is
        # only built when phase 2 uses it, so pixel-only runs never need its weights.
        self.nets = {
            "g": registry.build(config.arch, **config.generator_kwargs()),
            "d": registry.build("srgan_d", in_channels=3, ndf=config.ndf, input_size=_d_size(config)),
        }
        if config.init == "zero_last":
            _zero_last_init(self.nets["g"])
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "g": adam(self.nets["g"].parameters(), lr=config.lr_g, betas=betas),
            "d": adam(self.nets["d"].parameters(), lr=config.lr_d, betas=betas),
        }
        self.perceptual: losses.PerceptualLoss | None = None
        if config.has_phase2 and config.perceptual == "vgg" and config.perceptual_weight > 0:
            self.perceptual = build_perceptual(config)

    @property
    def val_crop(self) -> int:  # the SR convention: validation crops `scale` border pixels
        return self.config.scale

    def dataset_options(self) -> dict[str, Any]:
        return {"scale": self.config.scale, "degradation": self.config.degradation}

    def setup(self, *, total_steps: int) -> None:
        super().setup(total_steps=total_steps)
        cfg = self.config
        switch = min(cfg.pretrain_steps, total_steps)
        first = schedule_from_config(cfg, length=switch)
        second = schedule_from_config(cfg, length=total_steps - switch, start=switch)
        self.schedules = {"g": PhaseSchedule(first, second, switch), "d": second}

    def to(self, device: torch.device, *, channels_last: bool = False) -> None:
        super().to(device, channels_last=channels_last)
        if self.perceptual is not None:  # frozen, not trained or checkpointed, but must follow the nets
            self.perceptual.to(device)
            if channels_last:
                self.perceptual.to(memory_format=torch.channels_last)

    def train_step(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        g, d = self.nets["g"], self.nets["d"]
        lr, hr = batch["lr"], batch["hr"]
        if ctx.step < cfg.pretrain_steps:
            with ctx.autocast():
                sr = g(lr)
                loss = losses.pixel_loss(sr, hr, kind=cfg.pixel_loss)
            ctx.backward(loss)
            ctx.step_optimizer("g")
            return {"g_pix": loss.detach()}

        # Generator: content + adversarial (+ pixel); D frozen so its grads stay empty.
        set_requires_grad([d], False)
        out: dict[str, torch.Tensor] = {}
        with ctx.autocast():
            sr = g(lr)
            total = sr.new_zeros((), dtype=torch.float32)
            if cfg.pixel_weight > 0:
                out["g_pix"] = losses.pixel_loss(sr, hr, kind=cfg.pixel_loss)
                total = total + cfg.pixel_weight * out["g_pix"]
            if self.perceptual is not None:
                out["g_vgg"] = self.perceptual(sr, hr)
                total = total + out["g_vgg"]
            fake_logits = d(sr)
            real_logits = d(hr).detach() if cfg.gan_mode == "ragan" else None
            out["g_gan"] = _generator_adv(fake_logits, real_logits, mode=cfg.gan_mode)
            total = total + cfg.adv_weight * out["g_gan"]
        ctx.backward(total)
        ctx.step_optimizer("g")

        # Discriminator on real HR and the (detached) generated image.
        set_requires_grad([d], True)
        with ctx.autocast():
            loss_d = _discriminator_adv(d(hr), d(sr.detach()), mode=cfg.gan_mode)
        ctx.backward(loss_d)
        ctx.step_optimizer("d")
        out["d"] = loss_d
        return {k: v.detach() for k, v in out.items()}

    def predict(self, batch: dict[str, torch.Tensor], nets: Mapping[str, nn.Module]) -> Prediction:
        sr = nets["g"](batch["lr"]).clamp(0, 1)
        return Prediction(input=batch["lr"], output=sr, target=batch.get("hr"))

    def initialise(self) -> None:
        cfg = self.config
        if not cfg.init_from:
            return
        from img2img.checkpoints import CheckpointError, load_model

        try:
            start = load_model(cfg.init_from)
        except CheckpointError as e:
            raise ConfigError(f"init_from: {e}") from None
        found = (start.arch, registry.resolve_kwargs(start.arch, **start.kwargs))
        wanted = (cfg.arch, cfg.generator_kwargs())
        if found != wanted:
            raise ConfigError(
                f"init_from {cfg.init_from}: holds {_describe(*found)}, but this run trains {_describe(*wanted)}; "
                "pass the matching --arch / --scale / --num-feat / --num-block"
            )
        self.nets["g"].load_state_dict(start.net.state_dict())

    def exports(self) -> list[Export]:
        cfg = self.config
        info = {"phase": "srresnet" if not cfg.has_phase2 else "srgan", "pretrain_steps": cfg.pretrain_steps}
        if cfg.init_from:
            info["init_from"] = cfg.init_from
        return [Export(file="model", net="g", arch=cfg.arch, kwargs=cfg.generator_kwargs(),
                       value_range=(0.0, 1.0), scale=cfg.scale, info=info)]


def _describe(arch: str, kwargs: dict[str, Any]) -> str:
    return f"{arch}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def _zero_last_init(net: nn.Module) -> None:
    """PyTorch's default init for every conv, then zero the last one: output = the network's skip path."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        conv.reset_parameters()
    nn.init.zeros_(convs[-1].weight)
    if convs[-1].bias is not None:
        nn.init.zeros_(convs[-1].bias)


def _d_size(config: SRGANConfig) -> int:
    """Discriminator input side: the HR crop (rounded down to the D's size multiple for pixel-only
    runs, where D is idle)."""
    multiple = registry.get_spec("srgan_d").builder.size_multiple
    return max(multiple, config.image_size - config.image_size % multiple)


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _generator_adv(fake: torch.Tensor, real: torch.Tensor | None, *, mode: str) -> torch.Tensor:
    """Vanilla: -log D(G(x)). RaGAN (ESRGAN): mean of both relativistic terms with swapped labels."""
    if mode == "vanilla":
        return _bce(fake, True)
    assert real is not None
    return 0.5 * (_bce(real - fake.mean(), False) + _bce(fake - real.mean(), True))


def _discriminator_adv(real: torch.Tensor, fake: torch.Tensor, *, mode: str) -> torch.Tensor:
    """Vanilla: BCE(real, 1) + BCE(fake, 0) (the SRGAN/BasicSR sum). RaGAN: relativistic average."""
    if mode == "vanilla":
        return _bce(real, True) + _bce(fake, False)
    return 0.5 * (_bce(real - fake.mean(), True) + _bce(fake - real.mean(), False))
