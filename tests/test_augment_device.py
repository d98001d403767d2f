"""The device stage (DeviceAugment) and DiffAugment: pair consistency, LR/HR alignment, seeds, ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from img2img.data import AugmentParams, DeviceAugment, bicubic_downscale, diff_augment
from img2img.data.device_augment import _hue_matrix, _saturation_matrix
from tests.helpers import smooth_rgb


def batch(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1] with noise, so any misplaced pixel shows."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.stack(
        [
            torch.from_numpy(smooth_rgb(size, size, seed=seed + i).astype(np.float32) / 255).permute(2, 0, 1)
            for i in range(n)
        ]
    )
    return (smooth + 0.2 * torch.rand(smooth.shape, generator=g) - 0.1).clamp(0, 1)


ALL_ON = AugmentParams(flip_p=0.5, color_p=1.0, affine_p=1.0)


@pytest.mark.parametrize("ops", [["hflip", "vflip"], ["rot90"], ["affine"], ["hflip", "rot90", "affine"]])
def test_geometry_is_shared_by_a_pair(ops) -> None:
    a = batch()
    out = DeviceAugment(ops, params=ALL_ON)(
        {"a": a, "b": 1 - a, "path_a": ["x"] * 6}, torch.Generator().manual_seed(0)
    )
    assert out["path_a"] == ["x"] * 6
    assert torch.allclose(out["a"] + out["b"], torch.ones_like(a), atol=1e-5)
    assert not torch.allclose(out["a"], a)


def test_colour_jitter_is_shared_by_a_pair_and_stays_in_range() -> None:
    a = batch()
    out = DeviceAugment(["color_jitter"], params=ALL_ON)(
        {"a": a, "b": a.clone()}, torch.Generator().manual_seed(1)
    )
    assert torch.equal(out["a"], out["b"])
    assert out["a"].min() >= 0 and out["a"].max() <= 1
    assert (out["a"] - a).abs().amax(dim=(1, 2, 3)).min() > 0  # every sample changed (color_p = 1)


def test_unpaired_domains_get_their_own_draws() -> None:
    a = batch()
    out = DeviceAugment(["hflip", "rot90"], paired=False)(
        {"a": a, "b": a.clone()}, torch.Generator().manual_seed(2)
    )
    assert not torch.equal(out["a"], out["b"])


def test_seeded_generator_repeats_and_none_uses_the_global_rng() -> None:
    a = batch()
    aug = DeviceAugment(["hflip", "vflip", "rot90", "color_jitter", "affine"])
    one = aug({"a": a}, torch.Generator().manual_seed(3))["a"]
    assert torch.equal(one, aug({"a": a}, torch.Generator().manual_seed(3))["a"])
    torch.manual_seed(9)
    two = aug({"a": a})["a"]
    torch.manual_seed(9)
    assert torch.equal(two, aug({"a": a})["a"])


def test_flips_and_quarter_turns_keep_lr_hr_aligned_exactly() -> None:
    hr = batch(8, 32)
    lr = bicubic_downscale(hr, 4)
    out = DeviceAugment(["hflip", "vflip", "rot90"])({"lr": lr, "hr": hr}, torch.Generator().manual_seed(4))
    assert out["lr"].shape == (8, 3, 8, 8) and out["hr"].shape == (8, 3, 32, 32)
    assert torch.allclose(bicubic_downscale(out["hr"], 4), out["lr"], atol=1e-6)


def test_affine_on_lr_hr_uses_one_transform_at_both_scales() -> None:
    """Warping HR then downscaling ~ warping LR with the same draw (interior, smooth images)."""
    hr = torch.stack(
        [
            torch.from_numpy(smooth_rgb(64, 64, seed=i).astype(np.float32) / 255).permute(2, 0, 1)
            for i in range(6)
        ]
    )
    lr = bicubic_downscale(hr, 4)
    params = AugmentParams(affine_p=1.0, degrees=20, translate=0.15, scale=(0.8, 1.2), shear=10)
    out = DeviceAugment(["affine"], params=params)({"lr": lr, "hr": hr}, torch.Generator().manual_seed(5))
    inner = (slice(None), slice(None), slice(3, 13), slice(3, 13))  # away from reflected borders
    err = (bicubic_downscale(out["hr"], 4) - out["lr"])[inner].abs().mean()
    # The same LR result misplaced by a single LR pixel is several times further off.
    shifted = torch.roll(out["lr"], shifts=(1, 0), dims=(-2, -1))
    wrong = (bicubic_downscale(out["hr"], 4) - shifted)[inner].abs().mean()
    assert err < 0.015 and wrong > 4 * err
    assert not torch.allclose(out["lr"], lr)


def test_non_square_batches_keep_their_shape_under_rot90() -> None:
    x = torch.rand(5, 3, 8, 12)
    out = DeviceAugment(["rot90"])({"a": x}, torch.Generator().manual_seed(0))["a"]
    assert out.shape == x.shape
    for i in range(5):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], torch.rot90(x[i], 2, dims=(-2, -1)))


def test_gray_tensors_take_brightness_and_contrast_only() -> None:
    x = torch.rand(4, 1, 16, 16)
    out = DeviceAugment(["color_jitter"], params=ALL_ON)({"a": x}, torch.Generator().manual_seed(0))["a"]
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_empty_ops_is_identity_and_bad_names_are_refused() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert DeviceAugment([])({"a": x})["a"] is x
    with pytest.raises(Exception, match="unknown augmentation 'blur'"):
        DeviceAugment(["blur"])
    with pytest.raises(ValueError, match="aspect ratio"):
        DeviceAugment(["hflip"])({"a": x, "b": torch.rand(2, 3, 8, 4)})


def test_colour_matrices_against_their_definitions() -> None:
    eye = torch.eye(3)
    assert torch.allclose(_hue_matrix(torch.tensor([0.0]))[0], eye, atol=1e-6)
    assert torch.allclose(_hue_matrix(torch.tensor([2 * np.pi]))[0], eye, atol=1e-5)
    gray = torch.tensor([0.3, 0.3, 0.3])
    assert torch.allclose(_hue_matrix(torch.tensor([1.0]))[0] @ gray, gray, atol=1e-6)  # gray has no hue
    rgb = torch.tensor([0.9, 0.2, 0.1])
    luma = 0.299 * 0.9 + 0.587 * 0.2 + 0.114 * 0.1
    assert torch.allclose(_saturation_matrix(torch.tensor([0.0]))[0] @ rgb, torch.full((3,), luma), atol=1e-6)
    assert torch.allclose(_saturation_matrix(torch.tensor([1.0]))[0], eye)


# ----------------------------------------------------------------------------------- DiffAugment


def test_diff_augment_is_differentiable_and_keeps_shape() -> None:
    x = (batch(4) * 2 - 1).requires_grad_(True)
    y = diff_augment(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_moves_content_by_whole_pixels() -> None:
    x = batch(4, 16) * 2 - 1
    y = diff_augment(x, "translation", generator=torch.Generator().manual_seed(1))
    for i in range(4):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(y[i, :, 2:-2, 2:-2], torch.roll(x[i], (dy, dx), dims=(-2, -1))[:, 2:-2, 2:-2])
        ]
        assert len(found) == 1  # exactly one integer shift within 1/8 of the side explains it


def test_cutout_fills_a_square_with_the_mid_value() -> None:
    x = torch.rand(6, 3, 16, 16) * 0.5 + 0.5  # never exactly the mid value 0 of [-1, 1]
    y = diff_augment(x, "cutout", generator=torch.Generator().manual_seed(2))
    holes = (y == 0).all(dim=1)
    assert (y[~holes[:, None].expand_as(y)] == x[~holes[:, None].expand_as(x)]).all()
    for h in holes:
        rows, cols = h.any(dim=1).nonzero(), h.any(dim=0).nonzero()
        assert 0 < h.sum() <= 64  # at most the 8x8 square (half the side), clipped at borders
        assert h.sum() == len(rows) * len(cols)  # a rectangle


def test_tuple_inputs_share_the_draw_and_the_seed_repeats() -> None:
    a = batch(3, 16) * 2 - 1
    out_a, out_b = diff_augment((a, a.clone()), generator=torch.Generator().manual_seed(3))
    assert torch.equal(out_a, out_b)
    again = diff_augment(a, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, out_a)
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'zoom'"):
        diff_augment(a, "zoom")
