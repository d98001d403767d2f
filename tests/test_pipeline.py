"""Pixels through the engine (gray, RGBA, 16-bit, value ranges) and the folder pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from img2img import image_io
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.inference import Engine, PipelineUsageError, plan_jobs, run_folder, run_jobs
from tests.helpers import smooth_rgb

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


class Nearest(nn.Module):
    """Nearest-neighbour x scale: the exact expected output is np.repeat of the input."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x.clone()


def nearest_model(scale: int, *, channels: int = 3, value_range=(0.0, 1.0)) -> ModelDescriptor:
    return ModelDescriptor(
        net=Nearest(scale),
        arch="nearest",
        scale=scale,
        in_channels=channels,
        out_channels=channels,
        value_range=value_range,
    )


def repeat(pixels: np.ndarray, scale: int) -> np.ndarray:
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)


# ------------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_value_range_and_bit_depth_round_trip_exactly(dtype, value_range) -> None:
    pixels = smooth_rgb(37, 41, dtype=dtype)
    out = Engine(nearest_model(2, value_range=value_range), tile=18, overlap=8)(pixels)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, repeat(pixels, 2))


def test_gray_into_an_rgb_model_comes_back_gray() -> None:
    gray = smooth_rgb(30, 20)[:, :, :1]
    out = Engine(nearest_model(2), tile=18, overlap=8)(gray)
    assert out.shape == (60, 40, 1)
    np.testing.assert_array_equal(out, repeat(gray, 2))
    flat = Engine(nearest_model(2), tile=0)(gray[:, :, 0])  # (H, W) in, (H, W) out
    np.testing.assert_array_equal(flat, repeat(gray[:, :, 0], 2))


def test_rgb_into_a_gray_model_uses_luma() -> None:
    rgb = smooth_rgb(24, 28)
    out = Engine(nearest_model(1, channels=1), tile=0)(rgb)
    luma = np.round(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    assert out.shape == (24, 28, 1)
    assert np.abs(out[:, :, 0].astype(int) - luma.astype(int)).max() <= 1


def test_rgba_alpha_is_resized_beside_the_colour() -> None:
    rgb = smooth_rgb(20, 32)
    ramp = np.tile(np.linspace(0, 255, 32), (20, 1)).round().astype(np.uint8)
    out = Engine(nearest_model(2), tile=0)(np.dstack([rgb, ramp]))
    assert out.shape == (40, 64, 4)
    np.testing.assert_array_equal(out[:, :, :3], repeat(rgb, 2))
    # Bicubic keeps a ramp a ramp: monotone and within a few levels of the linear interpolation.
    alpha = out[:, :, 3].astype(int)
    centres = (np.arange(64) + 0.5) / 2 - 0.5
    linear = np.interp(centres, np.arange(32), ramp[0].astype(float))
    assert np.all(np.diff(alpha[10]) >= 0)
    assert np.abs(alpha[10, 4:-4] - linear[4:-4]).max() <= 2
    through_model = Engine(nearest_model(2), tile=0, alpha="model")(np.dstack([rgb, ramp]))
    np.testing.assert_array_equal(through_model[:, :, 3], repeat(ramp, 2))


def test_image_record_keeps_alpha_icc_exif_dpi_and_16_bits() -> None:
    pixels = smooth_rgb(16, 18, dtype=np.uint16)
    alpha = np.full((16, 18), 40000, np.uint16)
    image = image_io.Image(
        pixels=pixels, alpha=alpha, path=Path("x.png"), icc_profile=b"profile", exif=b"II*\x00exif", dpi=(300.0, 300.0)
    )
    out = Engine(nearest_model(2), tile=0).run_image(image)
    np.testing.assert_array_equal(out.pixels, repeat(pixels, 2))
    np.testing.assert_array_equal(out.alpha, np.full((32, 36), 40000, np.uint16))
    assert out.icc_profile == b"profile" and out.path is None
    assert out.exif == b"II*\x00exif" and out.dpi == (300.0, 300.0)  # the DPI value is kept, not scaled


def test_integer_pixels_other_than_8_or_16_bit_are_refused_with_a_clear_message() -> None:
    # float32/float64 in [0, 1] are accepted (tests/test_inference_api.py); int32 is not.
    with pytest.raises(TypeError, match="uint8 or uint16"):
        Engine(nearest_model(2))(np.zeros((4, 4, 3), np.int32))


# ------------------------------------------------------------------------------- folders


def write_png(path: Path, pixels: np.ndarray) -> None:
    image_io.write_image(path, image_io.Image(pixels=pixels))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    write_png(src / "a.png", smooth_rgb(12, 14, seed=1))
    write_png(src / "b.png", smooth_rgb(10, 9, seed=2))
    write_png(src / "sub" / "c.png", smooth_rgb(8, 8, seed=3))
    (src / "notes.txt").write_text("not an image")
    return src


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_plan_maps_folders_globs_and_single_files(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    flat = plan_jobs(folder, out, suffix="_x2", fmt="jpg")
    assert [(j.src.name, j.dst) for j in flat] == [("a.png", out / "a_x2.jpg"), ("b.png", out / "b_x2.jpg")]
    deep = plan_jobs(folder, out, recursive=True)
    assert out / "sub" / "c.png" in [j.dst for j in deep]
    globbed = plan_jobs(f"{folder}/**/*.png", out, recursive=True)
    assert sorted(j.dst for j in globbed) == sorted(j.dst for j in deep)
    single = plan_jobs(folder / "a.png", tmp_path / "result.webp")
    assert single[0].dst == tmp_path / "result.webp"
    into_dir = plan_jobs(folder / "a.png", f"{out}/")
    assert into_dir[0].dst == out / "a.png"


def test_plan_refuses_an_output_onto_an_input(folder: Path) -> None:
    with pytest.raises(PipelineUsageError, match="overwrite the input"):
        plan_jobs(folder, folder)
    with pytest.raises(PipelineUsageError, match="overwrite the input"):
        plan_jobs(folder / "a.png", folder / "a.png")
    assert plan_jobs(folder, folder, suffix="_out")  # a suffix makes it safe


def test_plan_refuses_two_inputs_onto_one_output(folder: Path, tmp_path: Path) -> None:
    write_png(folder / "a.bmp", smooth_rgb(4, 4))
    with pytest.raises(PipelineUsageError, match="both"):
        plan_jobs(folder, tmp_path / "out", fmt="png")


def test_plan_reports_a_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineUsageError, match="no image files"):
        plan_jobs(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(PipelineUsageError, match="no such file"):
        plan_jobs(tmp_path / "missing", tmp_path / "out")


def test_outputs_inside_the_source_are_not_read_again(folder: Path) -> None:
    jobs = plan_jobs(folder, folder / "out", recursive=True)
    run_jobs(Engine(nearest_model(2), tile=0), jobs)
    again = plan_jobs(folder, folder / "out", recursive=True)
    assert [j.src for j in again] == [j.src for j in jobs]


def test_a_corrupt_file_is_reported_and_the_rest_written(folder: Path, tmp_path: Path) -> None:
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    errors: list[tuple[Path, str]] = []
    report = run_jobs(
        Engine(nearest_model(2), tile=0), plan_jobs(folder, out), on_error=lambda p, r: errors.append((p, r))
    )
    assert sorted(p.name for p in report.written) == ["a.png", "b.png"]
    assert sorted(p.name for p, _ in report.failed) == ["broken.png", "cut.jpg"] and errors == report.failed
    assert all(reason for _, reason in report.failed) and not report.ok
    assert image_io.read_image(out / "a.png").pixels.shape == (24, 28, 3)
    assert not (out / "broken.png").exists() and not leftovers(out)
    assert before == {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}  # inputs untouched


class StopAfter(nn.Module):
    """Nearest x2 that raises KeyboardInterrupt on call ``n`` (an interrupted run)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return F.interpolate(x, scale_factor=2, mode="nearest")


def test_an_interrupted_run_leaves_no_partial_files_and_resumes(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    jobs = plan_jobs(folder, out, recursive=True)
    interrupted = ModelDescriptor(net=StopAfter(2), arch="t", scale=2)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(Engine(interrupted, tile=0), jobs)
    assert [p.name for p in out.rglob("*.png")] == ["a.png"] and not leftovers(out)
    first = (out / "a.png").stat().st_mtime_ns
    report = run_jobs(Engine(nearest_model(2), tile=0), jobs)
    assert report.skipped == [out / "a.png"] and len(report.written) == 2 and report.ok
    assert (out / "a.png").stat().st_mtime_ns == first
    redone = run_jobs(Engine(nearest_model(2), tile=0), jobs, overwrite=True)
    assert len(redone.written) == 3 and not redone.skipped


def test_16_bit_gray_with_alpha_file_round_trip(tmp_path: Path) -> None:
    gray = smooth_rgb(9, 11, dtype=np.uint16)[:, :, :1]
    alpha = np.full((9, 11), 65535, np.uint16)
    image_io.write_image(tmp_path / "g.png", image_io.Image(pixels=gray, alpha=alpha))
    report = run_jobs(Engine(nearest_model(2), tile=0), plan_jobs(tmp_path / "g.png", tmp_path / "out"))
    back = image_io.read_image(report.written[0])
    assert back.pixels.dtype == np.uint16 and back.pixels.shape == (18, 22, 1)
    np.testing.assert_array_equal(back.pixels, repeat(gray, 2))
    np.testing.assert_array_equal(back.alpha, np.full((18, 22), 65535, np.uint16))


# ------------------------------------------------------------------------------- errors through futures


def test_a_decoder_error_fails_its_file_and_an_encoding_bug_comes_out_of_run_jobs(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = plan_jobs(folder, tmp_path / "out")
    real_read, real_write = image_io.read_image, image_io.write_image

    def read_fails_on_b(path, **kwargs):
        if path.name == "b.png":
            raise RuntimeError("decoder bug")
        return real_read(path, **kwargs)

    # Decoding: a hostile file may make a decoder raise anything, so any error there fails that
    # file alone (tests/test_faults.py), named with the error's type; the rest are written.
    monkeypatch.setattr(image_io, "read_image", read_fails_on_b)
    report = run_jobs(Engine(nearest_model(2), tile=0), jobs)
    assert [(Path(p).name, reason) for p, reason in report.failed] == [
        ("b.png", "cannot decode (RuntimeError: decoder bug)")
    ]
    monkeypatch.setattr(image_io, "read_image", real_read)

    def write_fails(path, image, **kwargs):
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(image_io, "write_image", write_fails)
    with pytest.raises(RuntimeError, match="encoder bug"):
        run_jobs(Engine(nearest_model(2), tile=0), jobs, overwrite=True)
    monkeypatch.setattr(image_io, "write_image", real_write)
    assert not leftovers(tmp_path / "out")


def test_an_output_that_cannot_be_written_is_reported_and_the_rest_written(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = image_io.write_image

    def refuse_a(path, image, **kwargs):
        if path.name == "a.png":
            raise image_io.ImageIOError(path, "disk full")
        return real_write(path, image, **kwargs)

    monkeypatch.setattr(image_io, "write_image", refuse_a)
    out = tmp_path / "out"
    report = run_jobs(Engine(nearest_model(2), tile=0), plan_jobs(folder, out, recursive=True))
    assert report.failed == [(out / "a.png", "disk full")]
    assert sorted(p.name for p in report.written) == ["b.png", "c.png"]


def test_run_folder_passes_tile_progress_per_job(folder: Path, tmp_path: Path) -> None:
    seen: dict[str, list[tuple[int, int]]] = {}
    engine = Engine(nearest_model(2), tile=8, overlap=2)

    def tile_progress(job, done: int, total: int) -> None:
        seen.setdefault(job.src.name, []).append((done, total))

    report = run_folder(engine, folder, tmp_path / "out", tile_progress=tile_progress)
    assert report.ok and sorted(seen) == ["a.png", "b.png"]
    for name, calls in seen.items():
        height, width = image_io.read_image(folder / name).pixels.shape[:2]
        assert calls[-1] == (engine.plan_for(height, width).count,) * 2 and len(calls) > 1
