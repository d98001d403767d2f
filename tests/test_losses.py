"""GAN, pixel and perceptual losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from img2img import losses


def test_vanilla_matches_the_log_likelihood() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want_real = -(math.log(sig(2.0)) + math.log(sig(-1.0))) / 2
    want_fake = -(math.log(1 - sig(0.5)) + math.log(1 - sig(-3.0))) / 2
    got = losses.discriminator_loss(real, fake, mode="vanilla")
    assert float(got) == pytest.approx(0.5 * (want_real + want_fake), rel=1e-6)
    assert float(losses.generator_loss(fake, mode="vanilla")) == pytest.approx(
        -(math.log(sig(0.5)) + math.log(sig(-3.0))) / 2, rel=1e-6
    )


def test_lsgan_and_hinge_values() -> None:
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, 0.25])
    assert float(losses.gan_loss(real, real=True, mode="lsgan")) == pytest.approx((0.25 + 1.0) / 2)
    assert float(losses.gan_loss(fake, real=False, mode="lsgan")) == pytest.approx((0.25 + 0.0625) / 2)
    # hinge D: relu(1 - 0.5) + relu(1 - 2) -> 0.5/2; relu(1 - 0.5) + relu(1 + 0.25) -> 1.75/2
    assert float(losses.gan_loss(real, real=True, mode="hinge")) == pytest.approx(0.25)
    assert float(losses.gan_loss(fake, real=False, mode="hinge")) == pytest.approx(0.875)
    assert float(losses.generator_loss(fake, mode="hinge")) == pytest.approx(-(-0.5 + 0.25) / 2)
    assert float(losses.discriminator_loss(real, fake, mode="wgan-gp")) == pytest.approx(0.5 * (-1.25 + -0.125))


def test_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown GAN loss 'wgan'; known: vanilla, lsgan, hinge, wgan-gp"):
        losses.gan_loss(torch.zeros(1), real=True, mode="wgan")


def test_gradient_penalty_of_a_linear_critic() -> None:
    # D(x) = <w, x>: its gradient is w everywhere, so the penalty is weight * (|w| - 1)^2 exactly.
    w = torch.tensor([3.0, 0.0, 4.0]).view(1, 3, 1, 1)
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.rand(4, 3, 1, 1), torch.rand(4, 3, 1, 1)
    gp = losses.gradient_penalty(critic, real, fake, weight=10.0)
    assert float(gp) == pytest.approx(10.0 * (5.0 - 1.0) ** 2)


def test_gradient_penalty_backpropagates_into_the_discriminator() -> None:
    d = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Conv2d(4, 1, 1))
    gp = losses.gradient_penalty(d, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    gp.backward()
    assert d[0].weight.grad is not None and d[0].weight.grad.abs().sum() > 0


def test_pixel_losses() -> None:
    a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]]])
    assert float(losses.pixel_loss(a, b, kind="l1")) == pytest.approx(1.0)
    assert float(losses.pixel_loss(a, b, kind="l2")) == pytest.approx(1.5)
    assert float(losses.pixel_loss(a, b, kind="charbonnier", eps=1e-3)) == pytest.approx(
        (2 * math.sqrt(1 + 1e-6) + math.sqrt(1e-6) + math.sqrt(4 + 1e-6)) / 4
    )


def test_vgg19_layer_names_line_up_with_torchvision() -> None:
    from torchvision.models.vgg import cfgs, make_layers

    names = losses.vgg19_layer_names()
    features = make_layers(cfgs["E"])
    assert len(names) == len(features) == 37
    # Known indices in torchvision's vgg19().features (used by SRGAN/ESRGAN code as 35 and 34).
    assert names.index("relu5_4") == 35 and names.index("conv5_4") == 34 and names.index("relu2_2") == 8
    kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    for name, layer in zip(names, features, strict=True):
        assert isinstance(layer, kinds[name[:4]]), name


def test_perceptual_loss_with_random_vgg() -> None:
    loss = losses.PerceptualLoss({"conv2_2": 1.0, "relu2_2": 0.5}, weights=None)
    x = torch.rand(1, 3, 16, 16)
    assert float(loss(x, x)) == 0.0
    pred = torch.rand(1, 3, 16, 16, requires_grad=True)
    value = loss(pred, x)
    value.backward()
    assert float(value.detach()) > 0 and pred.grad is not None
    assert all(p.grad is None for p in loss.parameters())
    feats = loss.vgg(x)
    # conv2_2 is kept as it was before its ReLU (no in-place clobbering): it has negative values.
    assert feats["conv2_2"].min() < 0 and feats["relu2_2"].min() >= 0
    torch.testing.assert_close(feats["relu2_2"], feats["conv2_2"].clamp_min(0))


def test_vgg_bad_weights_file_is_named(tmp_path) -> None:
    bad = tmp_path / "not_vgg.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(RuntimeError, match=r"not_vgg.pth: not a torchvision vgg19 state dict"):
        losses.VGGFeatures(["relu1_1"], weights=bad)
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        losses.VGGFeatures(["relu6_1"], weights=None)
