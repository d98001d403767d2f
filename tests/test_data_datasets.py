"""Datasets: layouts, pair consistency of the CPU stage, determinism, bad files, SR alignment."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

from img2img.data import (
    BadImageWarning,
    DataError,
    ResumableSampler,
    SampleKey,
    build_dataset,
    has_split,
    make_loader,
)
from img2img.data.augment import CropSpec, resize_target
from img2img.image_io import Image, write_image
from tests.helpers import smooth_rgb

LEVEL = 1 / 255 + 1e-6  # one 8-bit level


def save(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    write_image(path, Image(pixels=pixels))


def noisy(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth image plus strong noise: neighbouring pixels differ, so misalignment shows."""
    g = np.random.default_rng(seed)
    base = smooth_rgb(h, w, seed=seed).astype(np.int16)
    return np.clip(base + g.integers(-60, 61, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def ab_root(tmp_path):
    """DIR/train/*.png with A | B side by side, B = 255 - A (a known function of A)."""
    for i in range(4):
        a = noisy(40, 48, seed=i)
        save(tmp_path / "train" / f"{i}.png", np.concatenate([a, 255 - a], axis=1))
    return tmp_path


def test_side_by_side_pair_keeps_its_relation_through_random_crops(ab_root) -> None:
    ds = build_dataset("paired", ab_root, image_size=32, preprocess="crop")
    for epoch in range(3):
        s = ds[SampleKey(1, epoch, 0)]
        assert s["a"].shape == s["b"].shape == (3, 32, 32)
        assert s["a"].dtype == torch.float32
        assert torch.allclose(s["a"] + s["b"], torch.ones_like(s["a"]), atol=1e-6)
        assert s["path_a"].endswith("1.png") and s["path_b"] == s["path_a"]


def test_resize_and_crop_and_cpu_ops_keep_the_pair_relation(ab_root) -> None:
    ops = ["hflip", "vflip", "rot90", "affine"]
    ds = build_dataset("paired", ab_root, image_size=32, load_size=36, cpu_augment=ops)
    for i in range(4):
        s = ds[SampleKey(i, 0, 5)]
        # Linear resampling of 255 - A equals 255 - resampled A, up to one rounding level.
        assert (s["a"] + s["b"] - 1).abs().max() <= LEVEL
        assert s["a"].min() >= 0 and s["a"].max() <= 1


def test_same_key_same_sample_other_epoch_other_crop(ab_root) -> None:
    ds = build_dataset("paired", ab_root, image_size=24, preprocess="crop")
    first = ds[SampleKey(2, 0, 7)]["a"]
    assert torch.equal(first, ds[SampleKey(2, 0, 7)]["a"])
    others = [ds[SampleKey(2, e, 7)]["a"] for e in range(1, 6)]
    assert any(not torch.equal(first, o) for o in others)


def test_eval_split_is_a_deterministic_centre_crop(tmp_path) -> None:
    a = noisy(40, 40, seed=3)
    save(tmp_path / "val" / "x.png", np.concatenate([a, a], axis=1))
    ds = build_dataset("paired", tmp_path, split="val", image_size=32, preprocess="crop")
    assert not ds.train
    s = ds[SampleKey(0, 4, 9)]
    expected = torch.from_numpy(a[4:36, 4:36].astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(s["a"], expected)


def test_a_b_folders_matched_by_stem(tmp_path) -> None:
    for i, stem in enumerate(["cat", "dog"]):
        a = noisy(32, 32, seed=i)
        save(tmp_path / "trainA" / f"{stem}.png", a)
        save(
            tmp_path / "trainB" / f"{stem}.jpg" if i else tmp_path / "trainB" / f"{stem}.png",
            a[:, :, ::-1].copy(),
        )
    ds = build_dataset("paired", tmp_path, image_size=32, preprocess="crop")
    s = ds[SampleKey(0, 0, 0)]
    assert s["path_a"].endswith("trainA/cat.png") and s["path_b"].endswith("trainB/cat.png")
    assert torch.allclose(s["b"], s["a"].flip(0))  # B is A with channels reversed


def test_missing_partner_is_an_error_naming_it(tmp_path) -> None:
    save(tmp_path / "trainA" / "one.png", smooth_rgb(16, 16))
    save(tmp_path / "trainA" / "two.png", smooth_rgb(16, 16))
    save(tmp_path / "trainB" / "one.png", smooth_rgb(16, 16))
    with pytest.raises(DataError, match=r"two\.png: no partner with stem 'two'"):
        build_dataset("paired", tmp_path, image_size=16)


def test_missing_layout_names_what_was_looked_for(tmp_path) -> None:
    with pytest.raises(DataError, match="expected .*train"):
        build_dataset("paired", tmp_path, image_size=16)
    assert not has_split(tmp_path, "val")
    (tmp_path / "valA").mkdir()
    assert has_split(tmp_path, "val")


def test_gray_and_rgb_files_meet_the_configured_channels(tmp_path) -> None:
    gray = noisy(24, 24, seed=1)[..., :1]
    rgb = noisy(24, 24, seed=2)
    save(tmp_path / "trainA" / "x.png", gray)
    save(tmp_path / "trainB" / "x.png", rgb)
    s = build_dataset("paired", tmp_path, image_size=24, preprocess="crop")[0]
    assert s["a"].shape == (3, 24, 24) and s["b"].shape == (3, 24, 24)
    assert torch.equal(s["a"][0], s["a"][1]) and torch.equal(s["a"][1], s["a"][2])
    s1 = build_dataset("paired", tmp_path, image_size=24, preprocess="crop", channels=1)[0]
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255  # independent BT.601 luma
    assert s1["b"].shape == (1, 24, 24)
    assert torch.allclose(s1["b"][0], torch.from_numpy(luma), atol=LEVEL)


def test_sixteen_bit_images_keep_their_precision(tmp_path) -> None:
    px = smooth_rgb(20, 20, seed=4, dtype=np.uint16)
    save(tmp_path / "trainA" / "x.png", px)
    save(tmp_path / "trainB" / "x.png", px)
    s = build_dataset("paired", tmp_path, image_size=20, preprocess="crop", cpu_augment=["color_jitter"])[0]
    assert torch.equal(s["a"], s["b"])
    plain = build_dataset("paired", tmp_path, image_size=20, preprocess="crop")[0]["a"]
    assert torch.allclose(plain, torch.from_numpy(px.astype(np.float64) / 65535).permute(2, 0, 1).float())


@pytest.mark.parametrize(
    "preprocess,size,expected",
    [
        ("resize_and_crop", (300, 500), (286, 286)),  # load 286 for a 256 crop, like the reference
        ("crop", (300, 500), (300, 500)),
        ("scale_width", (600, 500), (343, 286)),  # 286 * 600 / 500 = 343.2 -> 343
        ("scale_width_and_crop", (100, 500), (256, 286)),  # height never below the crop
        ("none", (301, 499), (300, 500)),  # nearest multiples of 4
    ],
)
def test_resize_policies_follow_the_reference_formulas(preprocess, size, expected) -> None:
    assert resize_target(*size, CropSpec(image_size=256, preprocess=preprocess)) == expected


def test_small_images_are_padded_or_upscaled(tmp_path) -> None:
    save(tmp_path / "trainA" / "s.png", noisy(10, 12, seed=1))
    save(tmp_path / "trainB" / "s.png", noisy(10, 12, seed=1))
    for small in ("pad", "upscale"):
        s = build_dataset("paired", tmp_path, image_size=16, preprocess="crop", small=small)[
            SampleKey(0, 0, 0)
        ]
        assert s["a"].shape == (3, 16, 16)
        assert torch.equal(s["a"], s["b"])
    with pytest.raises(DataError, match="small-image policy"):
        build_dataset("paired", tmp_path, image_size=16, small="stretch")


def test_unreadable_files_are_skipped_named_and_counted(ab_root) -> None:
    (ab_root / "train" / "9_broken.png").write_bytes(b"not an image")
    ds = build_dataset("paired", ab_root, image_size=16, preprocess="crop")
    assert len(ds) == 5
    with pytest.warns(BadImageWarning, match=r"9_broken\.png"):
        s = ds[SampleKey(4, 0, 0)]  # the broken file: the next readable entry stands in
    assert s["path_a"].endswith("0.png")
    assert ds.bad_entries() == [str(ab_root / "train" / "9_broken.png")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known bad entry is skipped silently
        ds[SampleKey(4, 1, 0)]


def test_no_readable_file_stops_with_one_error(tmp_path) -> None:
    for i in range(2):
        (tmp_path / "train").mkdir(exist_ok=True)
        (tmp_path / "train" / f"{i}.png").write_bytes(b"junk")
    ds = build_dataset("paired", tmp_path, image_size=16)
    with pytest.warns(BadImageWarning), pytest.raises(DataError, match="none of the 2 images could be read"):
        ds[0]


def test_unpaired_domains_of_different_lengths(tmp_path) -> None:
    for i in range(5):
        save(tmp_path / "trainA" / f"a{i}.png", noisy(20, 20, seed=i))
    for i in range(2):
        save(tmp_path / "trainB" / f"b{i}.png", noisy(20, 20, seed=10 + i))
    ds = build_dataset("unpaired", tmp_path, image_size=16, preprocess="crop")
    assert len(ds) == 5
    samples = [ds[SampleKey(i, e, 3)] for e in range(4) for i in range(5)]
    assert {s["path_a"].rsplit("/", 1)[1] for s in samples} == {f"a{i}.png" for i in range(5)}
    assert {s["path_b"].rsplit("/", 1)[1] for s in samples} == {"b0.png", "b1.png"}  # B drawn at random
    again = ds[SampleKey(3, 2, 3)]
    assert again["path_b"] == samples[2 * 5 + 3]["path_b"] and torch.equal(again["b"], samples[13]["b"])


def _hr_files(root, n=3, size=(40, 44)):
    for i in range(n):
        save(root / f"{i:04d}.png", noisy(*size, seed=i))


def test_sr_from_hr_folder_makes_lr_on_the_fly(tmp_path) -> None:
    _hr_files(tmp_path / "train")
    ds = build_dataset("sr", tmp_path, image_size=32, scale=4)
    s = ds[SampleKey(0, 0, 0)]
    assert s["hr"].shape == (3, 32, 32) and s["lr"].shape == (3, 8, 8)
    # Independent check: antialiased bicubic (PIL) of the HR crop, 8-bit rounding.
    from PIL import Image as PILImage

    hr8 = (s["hr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    pil = np.asarray(PILImage.fromarray(hr8).resize((8, 8), PILImage.BICUBIC)).astype(np.float32) / 255
    assert np.abs(s["lr"].permute(1, 2, 0).numpy() - pil).max() <= 3 / 255
    with pytest.raises(DataError, match="multiple of scale"):
        build_dataset("sr", tmp_path, image_size=30, scale=4)


def test_sr_lr_files_are_cropped_in_register(tmp_path) -> None:
    """LR files are exact 4x4 block means of HR: every LR crop must be the block mean of its HR crop."""
    s = 4
    for i in range(3):
        hr = noisy(44, 52, seed=i)
        lr = cv2.resize(
            hr, (52 // s, 44 // s), interpolation=cv2.INTER_AREA
        )  # block mean for an integer factor
        save(tmp_path / "train" / "hr" / f"{i:04d}.png", hr)
        save(tmp_path / "train" / "lr_x4" / f"{i:04d}x4.png", lr)  # DIV2K-style stem suffix
    ds = build_dataset("sr", tmp_path, image_size=24, scale=s, cpu_augment=["hflip", "vflip", "rot90"])
    for epoch in range(4):
        sample = ds[SampleKey(epoch % 3, epoch, 0)]
        hr, lr = sample["hr"], sample["lr"]
        assert hr.shape == (3, 24, 24) and lr.shape == (3, 6, 6)
        block_mean = torch.nn.functional.avg_pool2d(hr[None], s)[0]
        assert (block_mean - lr).abs().max() <= LEVEL
        assert sample["path_lr"].endswith("x4.png")


def test_sr_lr_files_smaller_than_the_crop_are_padded_in_register(tmp_path) -> None:
    hr = noisy(16, 20, seed=1)
    lr = cv2.resize(hr, (5, 4), interpolation=cv2.INTER_AREA)
    save(tmp_path / "train" / "hr" / "a.png", hr)
    save(tmp_path / "train" / "lr_x4" / "a.png", lr)
    sample = build_dataset("sr", tmp_path, image_size=32, scale=4)[SampleKey(0, 0, 0)]
    block_mean = torch.nn.functional.avg_pool2d(sample["hr"][None], 4)[0]
    assert (block_mean - sample["lr"]).abs().max() <= LEVEL


def test_sr_size_mismatch_names_the_file(tmp_path) -> None:
    save(tmp_path / "train" / "hr" / "a.png", noisy(40, 40, seed=1))
    save(tmp_path / "train" / "lr_x4" / "a.png", noisy(12, 10, seed=1))
    ds = build_dataset("sr", tmp_path, image_size=16, scale=4)
    with (
        pytest.warns(BadImageWarning, match=r"lr_x4/a\.png: LR 12x10 times scale 4 does not match HR"),
        pytest.raises(DataError, match="none of the 1 images could be read"),
    ):
        ds[0]


def test_sr_hr_one_pixel_over_is_mod_cropped(tmp_path) -> None:
    hr = noisy(42, 43, seed=2)  # LR 10x10 * 4 = 40x40: HR is 2 and 3 pixels over
    save(tmp_path / "train" / "hr" / "a.png", hr)
    save(
        tmp_path / "train" / "lr_x4" / "a.png",
        cv2.resize(hr[:40, :40], (10, 10), interpolation=cv2.INTER_AREA),
    )
    sample = build_dataset("sr", tmp_path, image_size=40, scale=4)[SampleKey(0, 0, 0)]
    assert (torch.nn.functional.avg_pool2d(sample["hr"][None], 4)[0] - sample["lr"]).abs().max() <= LEVEL


def test_loader_batches_do_not_depend_on_worker_count(ab_root) -> None:
    """Two worker processes give the same batches as the main process; bad files found there are counted."""
    (ab_root / "train" / "7_bad.png").write_bytes(b"junk")
    batches = {}
    counts = {}
    for workers in (0, 2):
        ds = build_dataset("paired", ab_root, image_size=16, preprocess="crop")
        loader = make_loader(ds, batch_size=2, num_workers=workers, seed=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadImageWarning)
            batches[workers] = [b["a"] for _ in range(2) for b in loader]
        counts[workers] = len(ds.bad_entries())
    assert len(batches[0]) == 4
    assert all(torch.equal(x, y) for x, y in zip(batches[0], batches[2], strict=True))
    assert counts == {0: 1, 2: 1}


def test_resumed_sampler_gives_the_same_samples(ab_root) -> None:
    ds = build_dataset("paired", ab_root, image_size=16, preprocess="crop")
    full = [b["a"] for b in make_loader(ds, batch_size=1, seed=4)]
    sampler = ResumableSampler(len(ds), seed=4)
    sampler.load_state_dict({"epoch": 0, "start": 2, "seed": 4, "length": len(ds)})
    resumed = [b["a"] for b in make_loader(ds, batch_size=1, seed=4, sampler=sampler)]
    assert len(resumed) == 2 and all(torch.equal(x, y) for x, y in zip(full[2:], resumed, strict=True))
