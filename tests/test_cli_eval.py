"""`img2img eval PRED_DIR TARGET_DIR` on images with known differences."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from img2img.cli import cli
from tests.helpers import smooth_rgb


def write(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def run(*args: str):
    return CliRunner().invoke(cli, ["eval", *args])


@pytest.fixture
def folders(tmp_path):
    target, pred = tmp_path / "target", tmp_path / "pred"
    for i in range(2):
        write(target / f"img{i}.png", smooth_rgb(32, 40, seed=i))
    return pred, target


def test_identical_images(folders) -> None:
    pred, target = folders
    for p in target.iterdir():
        write(pred / p.name, np.asarray(Image.open(p)))
    result = run(str(pred), str(target), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["images"] == 2 and out["identical"] == 2
    assert out["mean"]["psnr"] is None  # infinite PSNR is null in strict JSON
    assert out["mean"]["ssim"] == pytest.approx(1.0, abs=1e-6) and out["mean"]["l1"] == 0.0
    table = run(str(pred), str(target))
    assert "inf" in table.output and "2 identical image(s)" in table.output


def test_known_noise_level_matches_the_formula(folders) -> None:
    pred, target = folders
    errors = []
    for p in sorted(target.iterdir()):
        t = np.asarray(Image.open(p)).astype(np.int64)
        noise = np.random.default_rng(len(errors)).integers(-10, 11, t.shape)
        q = np.clip(t + noise, 0, 255)
        write(pred / p.with_suffix(".bmp").name, q.astype(np.uint8))  # other extension, same stem
        errors.append(10 * math.log10(255.0**2 / ((q - t) ** 2).mean()))
    result = run(str(pred), str(target), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [r["psnr"] for r in out["per_image"]] == pytest.approx(errors, abs=1e-3)
    assert out["mean"]["psnr"] == pytest.approx(sum(errors) / 2, abs=1e-3)
    assert 0 < out["mean"]["ssim"] < 1


def test_sr_convention_crops_and_uses_y(folders) -> None:
    pred, target = folders
    for p in target.iterdir():
        t = np.asarray(Image.open(p)).copy()
        t[:3] = 0  # a broken 3-px border, cropped away by --scale 3
        write(pred / p.name, t)
    result = run(str(pred), str(target), "--scale", "3", "--json")
    out = json.loads(result.output)
    assert out["convention"] == {"y_channel": True, "crop": 3}
    assert out["identical"] == 2
    assert json.loads(run(str(pred), str(target), "--scale", "2", "--json").output)["identical"] == 0


def test_missing_and_mismatched_predictions_fail_with_names(folders) -> None:
    pred, target = folders
    write(pred / "img0.png", smooth_rgb(16, 16))
    result = CliRunner().invoke(cli, ["eval", str(pred), str(target)])
    assert result.exit_code == 1
    assert "img0.png: size" in result.output and "no prediction named img1" in result.output


def test_usage_errors(tmp_path) -> None:
    assert run().exit_code == 2
    (tmp_path / "e").mkdir()
    result = run(str(tmp_path / "e"), str(tmp_path / "e"))
    assert result.exit_code == 2 and "no images found" in result.output


def test_model_mode_translates_then_measures(tmp_path) -> None:
    """--model M --data DIR: the model's outputs on testA against testB, same as measuring by hand."""
    import torch

    from img2img.checkpoints import save_model
    from img2img.networks import registry

    torch.manual_seed(0)
    kwargs = registry.resolve_kwargs("unet", num_downs=5, ngf=4)
    net = registry.build("unet", **kwargs).eval()
    model = save_model(net, tmp_path / "m.safetensors", arch="unet", kwargs=kwargs, value_range=(-1.0, 1.0))
    data = tmp_path / "data"
    want = []
    for i in range(2):
        a, b = smooth_rgb(32, 32, seed=i), smooth_rgb(32, 32, seed=10 + i)
        write(data / "testA" / f"{i}.png", a)
        write(data / "testB" / f"{i}.png", b)
        x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 * 2 - 1
        with torch.no_grad():
            y = ((net(x)[0] + 1) / 2).clamp(0, 1)
        pred = (y.permute(1, 2, 0).numpy() * 255).round()
        want.append(10 * math.log10(255.0**2 / ((pred - b.astype(np.float64)) ** 2).mean()))
    result = run("--model", str(model), "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [r["psnr"] for r in out["per_image"]] == pytest.approx(want, abs=0.01)
    missing = run("--model", str(model), "--data", str(data), "--split", "val")
    assert missing.exit_code == 2 and "valA: no such folder" in missing.output


def test_model_mode_on_side_by_side_ab_images(tmp_path) -> None:
    """The reference layout (test/*.png holding A|B): split in memory of a scratch folder, the same
    numbers as with testA/testB folders, the dataset untouched, an unreadable AB file named."""
    import torch

    from img2img.checkpoints import save_model
    from img2img.networks import registry

    torch.manual_seed(0)
    kwargs = registry.resolve_kwargs("unet", num_downs=5, ngf=4)
    net = registry.build("unet", **kwargs).eval()
    model = save_model(net, tmp_path / "m.safetensors", arch="unet", kwargs=kwargs, value_range=(-1.0, 1.0))
    folders, ab = tmp_path / "folders", tmp_path / "ab"
    for i in range(2):
        a, b = smooth_rgb(32, 32, seed=i), smooth_rgb(32, 32, seed=10 + i)
        write(folders / "testA" / f"{i}.png", a)
        write(folders / "testB" / f"{i}.png", b)
        write(ab / "test" / f"{i}.png", np.concatenate([a, b], axis=1))
    before = sorted(p.name for p in ab.rglob("*"))
    want = json.loads(run("--model", str(model), "--data", str(folders), "--json").output)
    got = run("--model", str(model), "--data", str(ab), "--json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.output)["per_image"] == want["per_image"]
    assert sorted(p.name for p in ab.rglob("*")) == before
    (ab / "test" / "2.png").write_bytes(b"not an image")
    bad = run("--model", str(model), "--data", str(ab))
    assert bad.exit_code == 1 and "2.png: not a recognised image" in bad.output
    assert "2 image(s)" in bad.output  # the readable ones are still measured


def test_no_table_when_nothing_was_measured_and_no_unasked_notes(folders) -> None:
    pred, target = folders
    write(pred / "img0.png", smooth_rgb(16, 16))  # wrong size; img1 has no prediction
    failed = run(str(pred), str(target))
    assert failed.exit_code == 1
    assert "image(s)" not in failed.output and "mean" not in failed.output
    for p in target.iterdir():
        write(pred / p.name, np.asarray(Image.open(p)))
    ok = run(str(pred), str(target))
    assert ok.exit_code == 0 and "2 image(s)" in ok.output
    assert "note:" not in ok.output  # LPIPS was not asked for; FID is explained in --help
    assert "FID is not computed" in run("--help").output
