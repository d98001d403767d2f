"""`img2img upscale` and `img2img translate` end to end through click, with tiny saved models."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

from img2img import image_io
from img2img.checkpoints import bundled, load_model, save_model
from img2img.cli import cli
from img2img.cli.common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
from img2img.inference import Engine
from img2img.networks import build
from tests.helpers import smooth_rgb

SHIPPED_REPO_WEIGHTS_DIR = bundled.repo_weights_dir  # kept before the fixture below hides it

RRDB_X2 = {"scale": 2, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}
RESNET = {"ngf": 4, "n_blocks": 1}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.setenv("IMG2IMG_WEIGHTS_DIR", str(tmp_path / "weights"))
    # Hide the repo's shipped weights/ so "no bundled model" paths can be tested.
    monkeypatch.setattr(bundled, "repo_weights_dir", lambda: tmp_path / "repo_weights")


def sr_model(path: Path) -> Path:
    net = build("rrdbnet", **RRDB_X2)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()  # outputs that depend on the input
    return save_model(net, path, arch="rrdbnet", kwargs=RRDB_X2, value_range=(0.0, 1.0))


def cycle_run_dir(run_dir: Path) -> Path:
    for name in ("g_ab", "g_ba"):
        save_model(
            build("resnet", **RESNET),
            run_dir / f"{name}.safetensors",
            arch="resnet",
            kwargs=RESNET,
            value_range=(-1.0, 1.0),
        )
    return run_dir


def photos(folder: Path) -> Path:
    image_io.write_image(folder / "a.png", image_io.Image(pixels=smooth_rgb(20, 24, seed=1)))
    image_io.write_image(folder / "b.jpg", image_io.Image(pixels=smooth_rgb(16, 12, seed=2)))
    return folder


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_upscale_a_folder_then_resume(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    src, out = photos(tmp_path / "in"), tmp_path / "out"
    result = invoke("upscale", str(src), str(out), "--model", str(model), "--tile", "16", "--suffix", "_x2")
    assert result.exit_code == EXIT_OK, result.output
    assert image_io.read_image(out / "a_x2.png").pixels.shape == (40, 48, 3)
    assert image_io.read_image(out / "b_x2.jpg").pixels.shape == (32, 24, 3)
    assert "wrote 2" in result.stderr
    # The CLI's output is the engine's output (PNG is lossless).
    expected = Engine(load_model(model), tile=16)(image_io.read_image(src / "a.png").pixels)
    np.testing.assert_array_equal(image_io.read_image(out / "a_x2.png").pixels, expected)
    again = invoke("upscale", str(src), str(out), "--model", str(model), "--suffix", "_x2")
    assert again.exit_code == EXIT_OK and "skipped 2" in again.stderr


def test_a_bad_file_gives_exit_1_and_names_it(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    src = photos(tmp_path / "in")
    (src / "broken.png").write_bytes(b"not a png at all")
    result = invoke("upscale", str(src), str(tmp_path / "out"), "--model", str(model), "--format", "png")
    assert result.exit_code == EXIT_SOME_FAILED
    assert f"{src / 'broken.png'}:" in result.stderr and "not a recognised image" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_upscale_without_model_uses_the_bundled_default(tmp_path: Path) -> None:
    missing = invoke("upscale", str(photos(tmp_path / "in")), str(tmp_path / "out"))
    assert missing.exit_code == EXIT_USAGE and "img2img-sr-x4" in missing.stderr
    sr_model(tmp_path / "weights" / "img2img-sr-x2.safetensors")
    result = invoke("upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--scale", "2")
    assert result.exit_code == EXIT_OK, result.output
    assert image_io.read_image(tmp_path / "out" / "a.png").pixels.shape == (40, 48, 3)
    assert (
        invoke("upscale", str(tmp_path / "in"), str(tmp_path / "o3"), "--scale", "3").exit_code == EXIT_USAGE
    )


def test_translate_one_file_to_a_file_both_directions(tmp_path: Path) -> None:
    run_dir = cycle_run_dir(tmp_path / "run")
    photos(tmp_path / "in")
    for direction in ("AtoB", "BtoA"):
        out = tmp_path / f"{direction}.png"
        result = invoke(
            "translate",
            str(tmp_path / "in" / "a.png"),
            str(out),
            "--model",
            str(run_dir),
            "--direction",
            direction,
        )
        assert result.exit_code == EXIT_OK, result.output
        assert image_io.read_image(out).pixels.shape == (20, 24, 3)
    assert not np.array_equal(
        image_io.read_image(tmp_path / "AtoB.png").pixels, image_io.read_image(tmp_path / "BtoA.png").pixels
    )


def test_gray_16_bit_stays_gray_16_bit(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    gray = smooth_rgb(14, 10, dtype=np.uint16)[:, :, :1]
    image_io.write_image(tmp_path / "g.png", image_io.Image(pixels=gray))
    result = invoke(
        "-q", "upscale", str(tmp_path / "g.png"), str(tmp_path / "out.png"), "--model", str(model), "--half"
    )
    assert result.exit_code == EXIT_OK, result.output
    assert result.stderr == ""  # quiet: not even the --half note on a CPU
    back = image_io.read_image(tmp_path / "out.png")
    assert back.pixels.dtype == np.uint16 and back.pixels.shape == (28, 20, 1)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tile", "big"], "not a number of pixels"),
        (["--tile", "-3"], "negative"),
        (["--direction", "BtoA"], "no B->A generator"),
        (["--format", "gif"], "gif"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    src = photos(tmp_path / "in")
    result = invoke("translate", str(src), str(tmp_path / "out"), "--model", str(model), *args)
    assert result.exit_code == EXIT_USAGE and message in result.output + result.stderr
    assert not (tmp_path / "out").exists()


def test_output_onto_input_is_refused(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    src = photos(tmp_path / "in")
    before = (src / "a.png").read_bytes()
    result = invoke("upscale", str(src / "a.png"), str(src / "a.png"), "--model", str(model))
    assert result.exit_code == EXIT_USAGE and "overwrite the input" in result.stderr
    assert (src / "a.png").read_bytes() == before
    assert (
        invoke("upscale", str(src), str(tmp_path / "out"), "--model", str(tmp_path / "nope.pth")).exit_code
        == EXIT_USAGE
    )


def test_half_on_cpu_notes_and_runs_float32(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    result = invoke(
        "--device",
        "cpu",
        "upscale",
        str(photos(tmp_path / "in") / "a.png"),
        str(tmp_path / "o"),
        "--model",
        str(model),
        "--half",
    )
    assert result.exit_code == EXIT_OK and "float32" in result.stderr


def test_upscale_without_model_uses_the_shipped_x4_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real repo weights/ (the _isolated fixture hid it): `img2img upscale photo out/` works out of the box.
    monkeypatch.setattr(bundled, "repo_weights_dir", SHIPPED_REPO_WEIGHTS_DIR)
    src = photos(tmp_path / "in")
    result = invoke("upscale", str(src / "a.png"), str(tmp_path / "out"))
    assert result.exit_code == EXIT_OK, result.output
    assert image_io.read_image(tmp_path / "out" / "a.png").pixels.shape == (80, 96, 3)


def test_verbose_names_the_tile_plan(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    src = photos(tmp_path / "in")
    result = invoke("-v", "upscale", str(src / "a.png"), str(tmp_path / "out"), "--model", str(model),
                    "--tile", "16", "--overlap", "4", "--batch", "3")
    assert result.exit_code == EXIT_OK, result.output
    plan = Engine(load_model(model), tile=16, overlap=4).plan_for(20, 24)
    # a.png is 24 x 20: the plan the engine chose, its overlap and the batch.
    assert f"24 x 20 px: {plan.rows.count} x {plan.cols.count} tiles of {plan.rows.tile} x {plan.cols.tile} px" in result.stderr
    assert f"overlap {plan.overlap} px" in result.stderr and "batch 3" in result.stderr
    quiet = invoke("upscale", str(src / "a.png"), str(tmp_path / "o2"), "--model", str(model), "--tile", "16")
    assert "tiles of" not in quiet.stderr


# ------------------------------------------------------------- odd requests refused or done right


def test_upscale_refuses_an_x1_model_and_points_at_translate(tmp_path: Path) -> None:
    model = save_model(build("resnet", **RESNET), tmp_path / "g.safetensors", arch="resnet", kwargs=RESNET,
                       value_range=(-1.0, 1.0))
    result = invoke("upscale", str(photos(tmp_path / "in")), str(tmp_path / "out"), "--model", str(model))
    assert result.exit_code == EXIT_USAGE and "img2img translate" in result.stderr
    assert not (tmp_path / "out").exists()
    assert invoke("translate", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model)).exit_code == EXIT_OK


@pytest.mark.parametrize(("dst", "fmt"), [("out.jpg", "png"), ("out.png", "webp"), ("out.webp", "jpg")])
def test_format_contradicting_the_dst_file_name_is_refused(tmp_path: Path, dst: str, fmt: str) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    src = photos(tmp_path / "in") / "a.png"
    result = invoke("upscale", str(src), str(tmp_path / dst), "--model", str(model), "--format", fmt)
    assert result.exit_code == EXIT_USAGE and "--format" in result.stderr and dst in result.stderr
    assert not (tmp_path / dst).exists()


def test_format_agreeing_with_the_dst_file_name_runs(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    src = photos(tmp_path / "in") / "a.png"
    result = invoke("upscale", str(src), str(tmp_path / "o.jpeg"), "--model", str(model), "--format", "jpg")
    assert result.exit_code == EXIT_OK, result.stderr
    assert (tmp_path / "o.jpeg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG data under the name asked for


@pytest.mark.parametrize(("tile", "overlap"), [("16", "8"), ("16", "16"), ("16", "40")])
def test_overlap_of_half_the_tile_or_more_is_refused(tmp_path: Path, tile: str, overlap: str) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    result = invoke("upscale", str(photos(tmp_path / "in")), str(tmp_path / "out"), "--model", str(model),
                    "--tile", tile, "--overlap", overlap)
    # x2 RRDBNet works on multiples of 2: under half of 16 is 6 at most.
    assert result.exit_code == EXIT_USAGE and "half the tile" in result.stderr and "--overlap 6" in result.stderr
    ok = invoke("upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model), "--tile", tile,
                "--overlap", "6")
    assert ok.exit_code == EXIT_OK, ok.stderr


@pytest.mark.parametrize("outscale", [3.5, 1.5, 2.0])
def test_outscale_resizes_the_models_output(tmp_path: Path, outscale: float) -> None:
    model = sr_model(tmp_path / "sr.safetensors")  # x2
    src = photos(tmp_path / "in")
    result = invoke("-v", "upscale", str(src / "a.png"), str(tmp_path / "out"), "--model", str(model),
                    "--outscale", str(outscale))
    assert result.exit_code == EXIT_OK, result.stderr
    out = image_io.read_image(tmp_path / "out" / "a.png").pixels
    assert out.shape == (round(20 * outscale), round(24 * outscale), 3)  # a.png is 24 x 20
    # The model's x2 output, resized by OpenCV with the filter the note names (an independent resize).
    x2 = Engine(load_model(model), tile=0)(image_io.read_image(src / "a.png").pixels)
    filter_ = cv2.INTER_AREA if outscale < 2 else cv2.INTER_CUBIC
    expected = x2 if outscale == 2 else cv2.resize(x2, (out.shape[1], out.shape[0]), interpolation=filter_)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert f"x{outscale:g}" in result.stderr


def test_outscale_must_be_positive(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    result = invoke("upscale", str(photos(tmp_path / "in")), str(tmp_path / "out"), "--model", str(model),
                    "--outscale", "0")
    assert result.exit_code == EXIT_USAGE and "--outscale" in result.output + result.stderr


def test_exif_and_dpi_reach_the_output_file(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    (tmp_path / "in").mkdir()
    exif = PIL.Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "TestMake"
    PIL.Image.fromarray(smooth_rgb(20, 24)).save(tmp_path / "in" / "p.jpg", exif=exif.tobytes(), dpi=(240, 240))
    result = invoke("upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model))
    assert result.exit_code == EXIT_OK, result.stderr
    with PIL.Image.open(tmp_path / "out" / "p.jpg") as im:  # read by Pillow, not by us
        assert im.size == (40, 48)  # turned upright (orientation 6), then x2
        assert im.getexif()[0x010F] == "TestMake" and im.getexif()[0x0112] == 1
        assert tuple(im.info["dpi"]) == (240, 240)


# ------------------------------------------------------------------------ progress inside one image


def test_plain_progress_lines_in_a_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from img2img.cli import progress

    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)  # a line per batch instead of every 10 s
    model = sr_model(tmp_path / "sr.safetensors")
    result = invoke("upscale", str(photos(tmp_path / "in")), str(tmp_path / "out"), "--model", str(model),
                    "--tile", "8", "--overlap", "2", "--batch", "1")
    assert result.exit_code == EXIT_OK, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress:")]
    plan = Engine(load_model(model), tile=8, overlap=2).plan_for(20, 24)
    assert f"a.png (file 1 of 2): 1/{plan.count} tiles" in lines[0]
    assert any(line.endswith(f"{plan.count}/{plan.count} tiles, 100%") for line in lines)
    assert "b.jpg (file 2 of 2)" in lines[-1]
    quiet = invoke("-q", "upscale", str(tmp_path / "in"), str(tmp_path / "o2"), "--model", str(model),
                   "--tile", "8", "--overlap", "2")
    assert "progress:" not in quiet.stderr


def test_plain_progress_waits_for_the_interval(tmp_path: Path) -> None:
    from img2img.cli.progress import TileProgress
    from img2img.inference import Job

    job, stream = Job(Path("big.png"), Path("out/big.png")), io.StringIO()
    report = TileProgress([job], stream=stream, terminal=False, interval=3600.0)
    for done in range(1, 11):
        report(job, done, 10)
    assert stream.getvalue() == ""  # a quick image prints nothing extra


def test_terminal_progress_draws_a_tile_bar(tmp_path: Path) -> None:
    from img2img.cli.progress import TileProgress
    from img2img.inference import Job

    job, stream = Job(Path("big.png"), Path("out/big.png")), io.StringIO()
    report = TileProgress([job], stream=stream, terminal=True)
    for done in range(1, 7):
        report(job, done, 6)
    assert "big.png" in stream.getvalue() and "/6 " in stream.getvalue()  # the image's tiles, counted
    assert report._bar is None  # removed once the image is done (leave=False: the file bar stays)
