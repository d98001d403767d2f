"""PSNR/SSIM/L1 on known images, against formulas and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from img2img import metrics
from tests.helpers import smooth_rgb


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def test_psnr_of_identical_images_is_inf_and_ssim_is_one() -> None:
    x = as_tensor(smooth_rgb(32, 32))
    assert math.isinf(float(metrics.psnr(x, x)[0]))
    assert float(metrics.ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.l1(x, x)[0]) == 0.0


def test_psnr_of_a_known_noise_level() -> None:
    # A +-0.1 checkerboard around mid-gray: MSE = 0.01 exactly, PSNR = 20 dB.
    target = torch.full((2, 3, 16, 16), 0.5)
    sign = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2 - 1
    pred = target + 0.1 * sign
    got = metrics.psnr(pred, target)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert metrics.l1(pred, target).tolist() == pytest.approx([0.1, 0.1], abs=1e-6)


def test_y_channel_psnr_matches_the_basicsr_formula() -> None:
    hr = smooth_rgb(24, 24, seed=1).astype(np.float64)
    sr = np.clip(hr + np.random.default_rng(3).normal(0, 6, hr.shape), 0, 255).round()
    # BasicSR: Y in [0, 255] of studio-range BT.601 from RGB in [0, 1], border of `scale` px cropped.
    def y(img: np.ndarray) -> np.ndarray:
        rgb = img / 255.0
        return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]

    c = 4
    err = ((y(sr) - y(hr))[c:-c, c:-c] ** 2).mean()
    want = 10 * math.log10(255.0**2 / err)
    got = metrics.psnr(as_tensor(sr.astype(np.uint8)), as_tensor(hr.astype(np.uint8)), crop=c, y_channel=True)
    assert float(got[0]) == pytest.approx(want, abs=1e-3)


def test_crop_ignores_the_border() -> None:
    target = as_tensor(smooth_rgb(20, 20))
    pred = target.clone()
    pred[..., :2, :] = 1 - pred[..., :2, :]
    assert math.isinf(float(metrics.psnr(pred, target, crop=2)[0]))
    assert float(metrics.psnr(pred, target, crop=1)[0]) < 40


def test_rgb_to_y_range() -> None:
    black, white = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    assert float(metrics.rgb_to_y(black)) == pytest.approx(16 / 255)
    assert float(metrics.rgb_to_y(white)) == pytest.approx(235 / 255, abs=1e-5)


def test_ssim_matches_scikit_image() -> None:
    a = smooth_rgb(40, 48, seed=2)
    b = np.clip(a.astype(np.float64) + np.random.default_rng(5).normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    want = structural_similarity(
        a / 255.0, b / 255.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0,
    )
    got = float(metrics.ssim(as_tensor(b), as_tensor(a))[0])
    assert 0.2 < want < 0.99
    assert got == pytest.approx(want, abs=1e-4)


def test_image_metrics_and_errors() -> None:
    x = torch.rand(3, 3, 8, 8)
    out = metrics.image_metrics(x, x.flip(-1))
    assert set(out) == {"psnr", "l1"}  # 8 px is too small for an 11 px SSIM window
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(x, x[..., :4])
    with pytest.raises(ValueError, match="border crop 4 leaves nothing"):
        metrics.psnr(x, x, crop=4)
