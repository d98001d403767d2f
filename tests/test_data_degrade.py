"""SR degradations: bicubic against PIL, Real-ESRGAN-style pipeline determinism and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from img2img.data import bicubic_downscale, degrade_realesrgan
from img2img.data.degrade import blur, gaussian_kernel, jpeg
from tests.helpers import smooth_rgb


def to_tensor(px: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(px.astype(np.float32) / 255).permute(2, 0, 1)


def test_bicubic_matches_pil_antialiased_bicubic() -> None:
    hr = smooth_rgb(48, 64, seed=1)
    lr = bicubic_downscale(to_tensor(hr), 4)
    pil = np.asarray(PILImage.fromarray(hr).resize((16, 12), PILImage.BICUBIC))
    assert lr.shape == (3, 12, 16)
    assert np.abs(lr.permute(1, 2, 0).numpy() * 255 - pil).max() <= 2  # same kernel; rounding/border only
    assert torch.equal(lr, torch.round(lr * 255) / 255)  # 8-bit levels, like an LR file


def test_bicubic_keeps_a_constant_image_and_refuses_odd_sizes() -> None:
    flat = torch.full((1, 16, 16), 0.4)
    assert torch.allclose(bicubic_downscale(flat, 2), torch.full((1, 8, 8), round(0.4 * 255) / 255))
    with pytest.raises(ValueError, match="not a multiple of scale 4"):
        bicubic_downscale(torch.rand(3, 10, 12), 4)


def test_gaussian_kernel_definition() -> None:
    k = gaussian_kernel(7, 1.5, 1.5, 0.0)
    assert torch.isclose(k.sum(), torch.tensor(1.0)) and torch.allclose(k, k.T)
    r = torch.arange(-3, 4, dtype=torch.float64)
    g = torch.exp(-0.5 * (r / 1.5) ** 2)
    assert torch.allclose(k.double(), torch.outer(g, g) / torch.outer(g, g).sum(), atol=1e-7)
    wide_x = gaussian_kernel(9, 3.0, 0.5, 0.0)
    assert torch.allclose(
        gaussian_kernel(9, 3.0, 0.5, np.pi / 2), wide_x.T, atol=1e-6
    )  # rotated by 90 degrees


def test_blur_preserves_a_constant_and_jpeg_is_close_at_high_quality() -> None:
    x = torch.full((1, 3, 12, 12), 0.25)
    assert torch.allclose(blur(x, gaussian_kernel(5, 1.0, 2.0, 0.3)), x, atol=1e-6)
    img = to_tensor(smooth_rgb(32, 32))[None]
    out = jpeg(img, 95)
    assert out.shape == img.shape and (out - img).abs().mean() < 0.02


def test_realesrgan_degradation_is_seeded_and_sized() -> None:
    hr = to_tensor(smooth_rgb(64, 64, seed=2))
    a = degrade_realesrgan(hr, 4, np.random.default_rng(0))
    b = degrade_realesrgan(hr, 4, np.random.default_rng(0))
    c = degrade_realesrgan(hr, 4, np.random.default_rng(1))
    assert a.shape == (3, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Degraded, yet still an image of the same scene: closer to its own bicubic LR than to another's.
    own = bicubic_downscale(hr, 4)
    other = bicubic_downscale(to_tensor(smooth_rgb(64, 64, seed=7)), 4)
    assert (a - own).abs().mean() < (a - other).abs().mean()


def test_photo_degradation_branches() -> None:
    from img2img.data.degrade import PhotoDegradationConfig, degrade_photo

    hr = to_tensor(smooth_rgb(96, 96, seed=4))
    own = bicubic_downscale(hr, 4)
    # The clean share is exactly the bicubic LR.
    clean = PhotoDegradationConfig(clean_prob=1.0)
    assert torch.equal(degrade_photo(hr, 4, np.random.default_rng(0), clean), own)
    # JPEG only at a fixed quality, no blur, bicubic resize: exactly jpeg(bicubic LR).
    only_jpeg = PhotoDegradationConfig(clean_prob=0.0, branch_probs=(0, 1, 0), jpeg_range=(50, 50), blur_prob=0.0,
                                       resize_probs=(1, 0, 0))
    assert torch.equal(degrade_photo(hr, 4, np.random.default_rng(0), only_jpeg), jpeg(own[None], 50)[0])
    # Noise only, Gaussian sigma 15 (8-bit units) on a mid-grey image: the residual's spread is 15/255.
    grey = torch.full((3, 256, 256), 0.5)
    noise = PhotoDegradationConfig(clean_prob=0.0, branch_probs=(1, 0, 0), noise_range=(15.0, 15.0), gaussian_prob=1.0,
                                   gray_noise_prob=0.0, blur_prob=0.0, resize_probs=(1, 0, 0))
    lr = degrade_photo(grey, 4, np.random.default_rng(0), noise)
    assert abs(float((lr - bicubic_downscale(grey, 4)).std()) * 255 - 15) < 1.0
    # Default recipe: seeded, sized, 8-bit.
    a = degrade_photo(hr, 4, np.random.default_rng(3))
    assert a.shape == (3, 24, 24) and torch.equal(a, degrade_photo(hr, 4, np.random.default_rng(3)))
    assert torch.equal(a, torch.round(a * 255) / 255)
