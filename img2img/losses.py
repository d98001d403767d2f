"""Training losses: GAN objectives (vanilla, lsgan, hinge, wgan-gp), pixel losses, VGG perceptual loss.

Discriminators return raw scores (logits, any shape); the GAN loss decides how to squash them.
Pixel and perceptual losses take (B, C, H, W) tensors; see each docstring for the value range.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES: tuple[str, ...] = ("vanilla", "lsgan", "hinge", "wgan-gp")
PIXEL_KINDS: tuple[str, ...] = ("l1", "l2", "charbonnier")


def check_gan_mode(mode: str) -> None:
    if mode not in GAN_MODES:
        raise ValueError(f"unknown GAN loss {mode!r}; known: {', '.join(GAN_MODES)}")


def gan_loss(logits: torch.Tensor, *, real: bool, mode: str, for_discriminator: bool = True) -> torch.Tensor:
    """GAN loss of discriminator scores ``logits`` against the label real/fake, averaged to a scalar.

    vanilla: binary cross-entropy on logits (pix2pix/CycleGAN ``vanilla``, SRGAN).
    lsgan: squared error to 1 (real) or 0 (fake) (CycleGAN default).
    hinge: discriminator ``relu(1 - s)`` for real, ``relu(1 + s)`` for fake; generator ``-s``.
    wgan-gp: discriminator ``-s`` for real, ``s`` for fake; generator ``-s``
        (add :func:`gradient_penalty` to the discriminator loss).
    A generator update calls this with ``real=True, for_discriminator=False``.
    """
    check_gan_mode(mode)
    logits = logits.float()  # losses in fp32 even under autocast
    if mode == "vanilla":
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return (logits - (1.0 if real else 0.0)).pow(2).mean()
    if not for_discriminator:  # hinge and wgan generators: raise the score of fakes
        if not real:
            raise ValueError(f"{mode} generator loss is defined for real=True only")
        return -logits.mean()
    if mode == "hinge":
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()
    return -logits.mean() if real else logits.mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, *, mode: str) -> torch.Tensor:
    """Discriminator loss on scores of real and fake inputs: half their sum, as the pix2pix/CycleGAN
    reference (which slows D relative to G)."""
    return 0.5 * (gan_loss(real_logits, real=True, mode=mode) + gan_loss(fake_logits, real=False, mode=mode))


def generator_loss(fake_logits: torch.Tensor, *, mode: str) -> torch.Tensor:
    """Adversarial loss of the generator: make the discriminator score fakes as real."""
    return gan_loss(fake_logits, real=True, mode=mode, for_discriminator=False)


def gradient_penalty(
    discriminator: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    weight: float = 10.0,
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): ``weight * E[(||grad D(x_hat)||_2 - 1)^2]``.

    ``x_hat`` mixes ``real`` and ``fake`` (both (B, C, H, W), same shape) with one uniform weight per
    sample; the graph is kept so the penalty can be backpropagated into the discriminator.
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = discriminator(mixed)
    (grad,) = torch.autograd.grad(scores.float().sum(), mixed, create_graph=True)
    norm = grad.flatten(1).float().norm(2, dim=1)
    return weight * (norm - 1.0).pow(2).mean()


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, *, kind: str = "l1", eps: float = 1e-6) -> torch.Tensor:
    """Mean pixel loss between same-shaped tensors: ``l1``, ``l2`` (MSE) or ``charbonnier``
    (``sqrt(d^2 + eps^2)``). Also the cycle-consistency and identity losses of CycleGAN (``l1``)."""
    if kind == "l1":
        return F.l1_loss(pred.float(), target.float())
    if kind == "l2":
        return F.mse_loss(pred.float(), target.float())
    if kind == "charbonnier":
        return torch.sqrt((pred.float() - target.float()).pow(2) + eps * eps).mean()
    raise ValueError(f"unknown pixel loss {kind!r}; known: {', '.join(PIXEL_KINDS)}")


# VGG19 feature layers by name: blocks of 2, 2, 4, 4, 4 convolutions, each conv followed by its ReLU,
# a max-pool after each block; names follow the "relu5_4" convention of the SRGAN/ESRGAN papers.
_VGG19_BLOCKS = (2, 2, 4, 4, 4)


def vgg19_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` modules in order: conv1_1, relu1_1, ..., pool5."""
    names = []
    for block, convs in enumerate(_VGG19_BLOCKS, start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """Frozen VGG19 feature extractor returning the activations of named layers.

    Input (B, 3, H, W) RGB in [0, 1] (normalised with the ImageNet mean/std inside); output a dict
    layer name -> (B, C_l, H_l, W_l). Layers are named as in :func:`vgg19_layer_names` (e.g.
    ``relu5_4`` for SRGAN's VGG54, ``conv5_4`` for ESRGAN's features before activation).

    weights: ``"imagenet"`` (torchvision's ``VGG19_Weights.IMAGENET1K_V1``, downloaded to the torch
        hub cache on first use), a path to a local state dict of ``torchvision.models.vgg19`` (keys
        ``features.N.weight`` ...; loaded with ``weights_only=True``), or None (random; tests only).
    """

    def __init__(self, layers: Sequence[str], *, weights: str | os.PathLike[str] | None = "imagenet") -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        names = vgg19_layer_names()
        unknown = [n for n in layers if n not in names]
        if unknown or not layers:
            raise ValueError(f"unknown VGG19 layer(s) {unknown or list(layers)}; known: {', '.join(names)}")
        self.layers = tuple(layers)
        depth = max(names.index(n) for n in layers) + 1
        features = make_layers(cfgs["E"], batch_norm=False)  # torchvision's vgg19().features, no classifier
        if weights is not None:
            state = _vgg19_state(weights)
            features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
        for layer in features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False  # a requested conv output must not be overwritten by its ReLU
        self.features = features[:depth]
        self._names = names[:depth]
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # always frozen: no dropout/BN in features, but keep it explicit

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        out = {}
        for name, layer in zip(self._names, self.features, strict=True):
            x = layer(x)
            if name in self.layers:
                out[name] = x
        return out


def _vgg19_state(weights: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    if weights == "imagenet":
        from torchvision.models import VGG19_Weights

        try:
            return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as e:  # offline: say what to do instead of a stack of URL errors
            raise RuntimeError(
                f"cannot get torchvision's VGG19 ImageNet weights ({type(e).__name__}: {e}); "
                "download vgg19-dcbb9e9d.pth once and pass its path as the perceptual weights"
            ) from None
    path = os.fspath(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path}: cannot read VGG19 weights ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "features.0.weight" not in state:
        raise RuntimeError(f"{path}: not a torchvision vgg19 state dict (no 'features.0.weight')")
    return state


class PerceptualLoss(nn.Module):
    """Weighted distance between VGG19 features of ``pred`` and ``target`` (Johnson et al.; SRGAN).

    ``layer_weights`` maps layer names to weights (SRGAN VGG54: ``{"relu5_4": 1.0}``; the paper
    rescales features by 1/12.75, i.e. a weight of 1/12.75**2 ~ 0.006 with ``criterion="l2"``).
    Inputs (B, 3, H, W) in [0, 1]; returns a scalar. The target's features are computed without grad.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        *,
        criterion: str = "l1",
        weights: str | os.PathLike[str] | None = "imagenet",
    ) -> None:
        super().__init__()
        if criterion not in ("l1", "l2"):
            raise ValueError(f"perceptual criterion must be l1 or l2, not {criterion!r}")
        self.layer_weights = dict(layer_weights)
        self.criterion = criterion
        self.vgg = VGGFeatures(list(self.layer_weights), weights=weights)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_features = self.vgg(pred)
        with torch.no_grad():
            target_features = self.vgg(target.detach())
        total = pred.new_zeros((), dtype=torch.float32)
        for name, w in self.layer_weights.items():
            total = total + w * pixel_loss(pred_features[name], target_features[name], kind=self.criterion)
        return total
