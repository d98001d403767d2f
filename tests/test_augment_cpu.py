"""The CPU stage (albumentations): one parameter draw per pair, seeded, shape/dtype kept."""

from __future__ import annotations

import numpy as np
import pytest

from img2img.data import AugmentParams, CpuStage, CropSpec, DataError
from tests.helpers import smooth_rgb


def pair(h: int = 40, w: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    a = np.clip(smooth_rgb(h, w, seed=seed).astype(int) + g.integers(-40, 41, (h, w, 3)), 0, 255).astype(
        np.uint8
    )
    return a, (255 - a)


@pytest.mark.parametrize("ops", [["hflip", "vflip"], ["rot90"], ["affine"]])
def test_geometric_ops_keep_b_equal_to_inverted_a(ops) -> None:
    stage = CpuStage(
        CropSpec(image_size=32, preprocess="crop"), n_images=2, ops=ops, params=AugmentParams(affine_p=1)
    )
    changed = 0
    for seed in range(6):
        a, b = pair(seed=seed)
        out_a, out_b = stage([a, b], np.random.default_rng(seed), train=True)
        assert out_a.shape == out_b.shape == (32, 32, 3) and out_a.dtype == np.uint8
        # Interpolation of 255 - A is 255 - interpolation of A, up to one rounding level.
        assert np.abs(out_a.astype(int) + out_b.astype(int) - 255).max() <= 1
        changed += not any(
            np.array_equal(out_a, a[y : y + 32, x : x + 32]) for y in range(9) for x in range(9)
        )
    assert changed > 0  # the ops did something beyond cropping


def test_colour_ops_apply_the_same_draw_to_both_images() -> None:
    stage = CpuStage(CropSpec(image_size=32, preprocess="crop"), n_images=2, ops=["color_jitter"])
    a, _ = pair()
    out_a, out_b = stage([a, a.copy()], np.random.default_rng(1), train=True)
    assert np.array_equal(out_a, out_b)


def test_same_rng_seed_same_result_and_eval_is_a_centre_crop() -> None:
    stage = CpuStage(CropSpec(image_size=24, preprocess="crop"), n_images=1, ops=["hflip", "color_jitter"])
    a, _ = pair()
    first = stage([a], np.random.default_rng(5), train=True)[0]
    assert np.array_equal(first, stage([a], np.random.default_rng(5), train=True)[0])
    centre = stage([a], None, train=False)[0]
    assert np.array_equal(centre, a[8:32, 8:32])


def test_gray_images_go_through_every_op() -> None:
    stage = CpuStage(
        CropSpec(image_size=16, preprocess="crop"), ops=["hflip", "rot90", "color_jitter", "affine"]
    )
    gray = pair(24, 24)[0][..., :1].copy()
    (out,) = stage([gray], np.random.default_rng(0), train=True)
    assert out.shape == (16, 16, 1)


def test_sixteen_bit_colour_ops_return_sixteen_bit() -> None:
    stage = CpuStage(None, ops=["color_jitter"], params=AugmentParams(color_p=1))
    px = smooth_rgb(16, 16, dtype=np.uint16)
    (out,) = stage([px], np.random.default_rng(0), train=True)
    assert out.dtype == np.uint16 and out.shape == px.shape
    assert not np.array_equal(out, px)
    assert len(np.unique(out)) > 256  # still more levels than 8 bits hold


def test_unknown_op_and_affine_on_lr_hr_pairs_are_refused() -> None:
    with pytest.raises(DataError, match="unknown augmentation 'blur'"):
        CpuStage(None, ops=["blur"])
    with pytest.raises(DataError, match="affine in the CPU stage needs images of one size"):
        CpuStage(None, n_images=2, ops=["affine"], same_size=False)
