"""`img2img data combine|split|degrade|edges|sample`: outputs, per-file failures, exit codes."""

from __future__ import annotations

import sys

import numpy as np
from click.testing import CliRunner
from PIL import Image as PILImage

from img2img.cli import cli
from img2img.data import build_dataset
from img2img.image_io import Image, read_image, write_image
from tests.helpers import smooth_rgb


def save(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, Image(pixels=pixels if pixels.ndim == 3 else pixels[..., None]))


def run(*args: str):
    return CliRunner().invoke(cli, ["data", *map(str, args)])


def test_combine_then_split_round_trips(tmp_path) -> None:
    for i in range(3):
        save(tmp_path / "A" / f"{i}.png", smooth_rgb(16, 20, seed=i))
        save(tmp_path / "B" / f"{i}.png", smooth_rgb(16, 20, seed=10 + i))
    result = run("combine", tmp_path / "A", tmp_path / "B", tmp_path / "AB")
    assert result.exit_code == 0, result.output
    ab = read_image(tmp_path / "AB" / "1.png").pixels
    assert ab.shape == (16, 40, 3)
    assert np.array_equal(ab[:, :20], smooth_rgb(16, 20, seed=1)) and np.array_equal(
        ab[:, 20:], smooth_rgb(16, 20, seed=11)
    )
    result = run("split", tmp_path / "AB", tmp_path / "out", "--prefix", "train")
    assert result.exit_code == 0, result.output
    for i in range(3):
        assert np.array_equal(
            read_image(tmp_path / "out" / "trainA" / f"{i}.png").pixels, smooth_rgb(16, 20, seed=i)
        )
        assert np.array_equal(
            read_image(tmp_path / "out" / "trainB" / f"{i}.png").pixels, smooth_rgb(16, 20, seed=10 + i)
        )
    # The split folders are a paired dataset in the A/B layout.
    assert len(build_dataset("paired", tmp_path / "out", image_size=16, preprocess="crop")) == 3


def test_combine_reports_each_bad_pair_and_writes_the_rest(tmp_path) -> None:
    save(tmp_path / "A" / "ok.png", smooth_rgb(8, 8))
    save(tmp_path / "B" / "ok.png", smooth_rgb(8, 8, seed=1)[..., :1])  # gray next to RGB: made RGB
    save(tmp_path / "A" / "lonely.png", smooth_rgb(8, 8))
    save(tmp_path / "A" / "size.png", smooth_rgb(8, 8))
    save(tmp_path / "B" / "size.png", smooth_rgb(10, 8))
    (tmp_path / "B" / "broken.png").write_bytes(b"junk")
    save(tmp_path / "A" / "broken.png", smooth_rgb(8, 8))
    result = run("combine", tmp_path / "A", tmp_path / "B", tmp_path / "AB")
    assert result.exit_code == 1
    err = result.stderr  # one line per failed file, on stderr
    assert len(err.strip().splitlines()) == 3
    assert "lonely.png: no partner with stem 'lonely'" in err
    assert "size.png: 10x8 does not match" in err
    assert "broken.png" in err
    assert read_image(tmp_path / "AB" / "ok.png").pixels.shape == (8, 16, 3)
    assert not (tmp_path / "AB" / "lonely.png").exists()


def test_usage_errors_exit_2(tmp_path) -> None:
    assert run("combine", tmp_path / "nope", tmp_path / "B", tmp_path / "o").exit_code == 2
    save(tmp_path / "hr" / "x.png", smooth_rgb(8, 8))
    result = run("degrade", tmp_path / "hr", tmp_path / "hr", "--scale", "2")
    assert result.exit_code == 2 and "must differ from the input folder" in result.output
    assert run("degrade", tmp_path / "hr", tmp_path / "lr").exit_code == 2  # --scale is required


def test_degrade_writes_bicubic_lr_of_the_mod_cropped_hr(tmp_path) -> None:
    save(tmp_path / "hr" / "a.png", smooth_rgb(34, 41, seed=3))
    save(tmp_path / "hr" / "g.png", smooth_rgb(16, 16, seed=4, dtype=np.uint16)[..., :1])
    result = run("degrade", tmp_path / "hr", tmp_path / "lr", "--scale", "4")
    assert result.exit_code == 0, result.output
    lr = read_image(tmp_path / "lr" / "a.png").pixels
    assert lr.shape == (8, 10, 3)
    pil = np.asarray(
        PILImage.fromarray(smooth_rgb(34, 41, seed=3)[:32, :40]).resize((10, 8), PILImage.BICUBIC)
    )
    assert np.abs(lr.astype(int) - pil).max() <= 2
    gray = read_image(tmp_path / "lr" / "g.png").pixels
    assert gray.shape == (4, 4, 1) and gray.dtype == np.uint16
    again = run("degrade", tmp_path / "hr", tmp_path / "lr2", "--scale", "2", "--degradation", "realesrgan")
    assert again.exit_code == 0 and read_image(tmp_path / "lr2" / "a.png").pixels.shape == (17, 20, 3)


def test_edges_writes_edges_beside_the_photo(tmp_path) -> None:
    photo = np.zeros((32, 32, 3), np.uint8)
    photo[8:24, 8:24] = 220  # a bright square: its outline is the only edge
    save(tmp_path / "photos" / "sq.png", photo)
    result = run("edges", tmp_path / "photos", tmp_path / "set", "--size", "32")
    assert result.exit_code == 0, result.output
    ab = read_image(tmp_path / "set" / "sq.png").pixels
    assert ab.shape == (32, 64, 3) and np.array_equal(ab[:, 32:], photo)
    edges = ab[:, :32, 0]
    assert set(np.unique(edges)) == {0, 255}
    assert edges[16, 16] == 255 and edges[2, 2] == 255  # flat areas are white
    assert (edges[6:11, 16] == 0).any() and (edges[16, 21:26] == 0).any()  # the square's sides are black


def test_sample_builds_all_three_kinds(tmp_path) -> None:
    result = run("sample", tmp_path / "s", "--size", "32")
    assert result.exit_code == 0, result.output
    paired = build_dataset("paired", tmp_path / "s" / "paired", image_size=32, preprocess="crop")
    unpaired = build_dataset("unpaired", tmp_path / "s" / "unpaired", image_size=32, preprocess="crop")
    sr = build_dataset("sr", tmp_path / "s" / "sr", image_size=32, scale=4)
    sr_val = build_dataset("sr", tmp_path / "s" / "sr", split="val", image_size=32, scale=4)
    assert (len(paired), len(unpaired), len(sr), len(sr_val)) == (8, 5, 8, 2)
    assert sr_val.has_lr_files and sr_val[0]["lr"].shape == (3, 8, 8)
    assert set(paired[0]["a"].unique().tolist()) <= {0.0, 1.0}  # A is a black-on-white edge map
    assert "CC0" in (tmp_path / "s" / "LICENSES.md").read_text()


def test_sample_without_scikit_image_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # makes `import skimage.data` fail
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    result = run("sample", tmp_path / "s")
    assert result.exit_code == 2
    assert "pip install scikit-image" in result.output
