"""Fault injection for `img2img upscale` / `img2img translate`: one bad file or model never costs the batch.

Every odd input we know goes through the real command in a child process (so a traceback would
show on its stderr) under an address-space limit (so a decompression bomb fails inside the test's
budget instead of taking the machine's memory). The promise checked: the batch goes on (exit 1,
each bad file named once on stderr, every good output written) or stops before any work with
exit 2 and one line; never a traceback. docs/inference.md "Guarantees" lists what each test covers.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from img2img import image_io
from img2img.checkpoints import save_model
from img2img.cli import cli
from img2img.cli.common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
from img2img.networks import build
from tests.helpers import smooth_rgb

pytestmark = pytest.mark.faults

RRDB_X2 = {"scale": 2, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}
RESNET = {"ngf": 4, "n_blocks": 1}
HEADROOM = 400 << 20  # address space the child may add after its imports: far below a bomb's 675 MB

# The child process: import everything, then cap the address space a little above what it maps now.
LIMITED_CLI = """
import resource, sys
import cv2, numpy, PIL.Image, torch
import img2img.checkpoints, img2img.image_io, img2img.inference
from img2img.cli import cli
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
limit = size + int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.argv[0] = "img2img"
cli()
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.setenv("IMG2IMG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("IMG2IMG_MAX_PIXELS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------- inputs


def sr_model(path: Path, fill: float | None = None) -> Path:
    net = build("rrdbnet", **RRDB_X2)
    if fill is not None:
        with torch.no_grad():
            next(net.parameters()).view(-1)[0] = fill
    return save_model(net, path, arch="rrdbnet", kwargs=RRDB_X2, value_range=(0.0, 1.0))


def cycle_model(path: Path) -> Path:
    return save_model(build("resnet", **RESNET), path, arch="resnet", kwargs=RESNET, value_range=(-1.0, 1.0))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def palette_bomb(path: Path, side: int = 15000) -> None:
    """A 1-bit palette PNG of side x side (225 MP at 15000: under the pixel limit, 675 MB as RGB) in ~30 KB."""
    squeeze = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed pixels, all index 0
    idat = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 3, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"PLTE", bytes([10, 200, 30, 250, 250, 250]))
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def huge_header_png(path: Path) -> None:
    """A valid-looking header for 100000 x 100000 pixels and nothing behind it."""
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b""))


def odd_folder(folder: Path) -> tuple[list[str], list[str]]:
    """Good images and every odd file we know side by side; returns (good names, bad names)."""
    folder.mkdir()
    write = image_io.write_image
    write(folder / "good_rgb.png", image_io.Image(pixels=smooth_rgb(20, 24, seed=1)))
    write(folder / "good_photo.jpg", image_io.Image(pixels=smooth_rgb(16, 12, seed=2)))
    write(folder / "good_gray.png", image_io.Image(pixels=smooth_rgb(12, 16, seed=3)[:, :, :1]))
    deep = smooth_rgb(12, 12, seed=4).astype(np.uint16) * 257
    write(folder / "good_16bit.png", image_io.Image(pixels=deep))
    alpha = np.linspace(0, 255, 16 * 16, dtype=np.uint8).reshape(16, 16)
    write(folder / "good_rgba.png", image_io.Image(pixels=smooth_rgb(16, 16, seed=5), alpha=alpha))
    write(folder / "good_фото ü.png", image_io.Image(pixels=smooth_rgb(12, 12, seed=6)))
    good = ["good_rgb.png", "good_photo.jpg", "good_gray.png", "good_16bit.png", "good_rgba.png", "good_фото ü.png"]

    (folder / "empty.png").write_bytes(b"")
    png = (folder / "good_rgb.png").read_bytes()
    (folder / "cut.png").write_bytes(png[: len(png) // 2])
    jpeg = (folder / "good_photo.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.png").write_text("these are not pixels\n")
    with open(folder / "sparse.png", "wb") as f:
        f.truncate(3 << 30)  # 3 GB of holes: no disk used, but reading it whole would take 3 GB
    huge_header_png(folder / "huge.png")
    palette_bomb(folder / "bomb.png")
    bad = ["empty.png", "cut.png", "cut.jpg", "notes.png", "sparse.png", "huge.png", "bomb.png"]
    if os.geteuid() != 0:  # root reads anything: the case only exists for other users
        (folder / "noaccess.png").write_bytes(png)
        (folder / "noaccess.png").chmod(0)
        bad.append("noaccess.png")
    (folder / "folder.png").mkdir()  # a directory is not an input: neither read nor reported
    return good, bad


def run_limited(*args: str, headroom: int = HEADROOM) -> subprocess.CompletedProcess[str]:
    # Arenas reserve address space; so do ONNX Runtime and OpenVINO (about 0.9 and 0.3 GB of VmSize
    # once loaded, docs/backends.md), more than the budget here, which is for the pipeline's faults:
    # the folder's large image would make --backend auto pick a runtime, so these runs use torch.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "IMG2IMG_BACKEND": "torch"}
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", LIMITED_CLI, str(headroom), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


def assert_batch_went_on(result: subprocess.CompletedProcess[str], out: Path, good: list[str], bad: list[str]):
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_SOME_FAILED, result.stderr
    for name in bad:
        lines = [line for line in result.stderr.splitlines() if name in line]
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
    for name in good:
        image_io.read_image(out / name)  # written whole
    assert f"wrote {len(good)}, failed {len(bad)}" in result.stderr
    assert not (out / "folder.png").exists()


# ------------------------------------------------------------------------------ the odd folder


def test_upscale_an_odd_folder_under_a_memory_limit(tmp_path: Path) -> None:
    good, bad = odd_folder(tmp_path / "in")
    model = sr_model(tmp_path / "sr.safetensors")
    result = run_limited("upscale", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(model), "--tile", "16")
    assert_batch_went_on(result, tmp_path / "out", good, bad)
    assert image_io.read_image(tmp_path / "out" / "good_16bit.png").pixels.dtype == np.uint16
    assert image_io.read_image(tmp_path / "out" / "good_rgba.png").alpha is not None


def test_translate_an_odd_folder_under_a_memory_limit(tmp_path: Path) -> None:
    good, bad = odd_folder(tmp_path / "in")
    model = cycle_model(tmp_path / "g.safetensors")
    result = run_limited("translate", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(model))
    assert_batch_went_on(result, tmp_path / "out", good, bad)
    assert image_io.read_image(tmp_path / "out" / "good_gray.png").pixels.shape == (12, 16, 1)


def test_an_image_that_decodes_but_does_not_fit_the_model_run_fails_alone(tmp_path: Path) -> None:
    """4000 x 4000 decodes in ~100 MB; its x2 output alone is 192 MB, over the 250 MB allowed."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "z.png"):
        image_io.write_image(src / name, image_io.Image(pixels=smooth_rgb(20, 24, seed=1)))
    palette_bomb(src / "big.png", side=4000)
    model = sr_model(tmp_path / "sr.safetensors")
    result = run_limited("upscale", str(src), str(tmp_path / "out"), "-m", str(model), "--tile", "64",
                         headroom=250 << 20)
    assert "Traceback" not in result.stderr and result.returncode == EXIT_SOME_FAILED, result.stderr
    assert "big.png: out of memory running the model" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "z.png"]


# ---------------------------------------------------------------------------- per case, fast


def invoke(*args: str, **env: str):
    return CliRunner().invoke(cli, list(args), env=env or None)


def photos(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    image_io.write_image(folder / "a.png", image_io.Image(pixels=smooth_rgb(20, 24, seed=1)))
    image_io.write_image(folder / "b.jpg", image_io.Image(pixels=smooth_rgb(16, 12, seed=2)))
    return folder


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_a_model_with_non_finite_weights_is_refused_once_before_the_batch(tmp_path: Path, bad_value) -> None:
    model = sr_model(tmp_path / "broken.safetensors", fill=bad_value)
    result = invoke("upscale", str(photos(tmp_path / "in")), str(tmp_path / "out"), "-m", str(model))
    assert result.exit_code == EXIT_USAGE, result.output
    assert isinstance(result.exception, SystemExit)  # not an escaped ValueError
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NaN or infinite" in lines[0], lines
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_suffix_cannot_leave_dst(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    before = sorted(p.name for p in tmp_path.iterdir())
    src = photos(tmp_path / "in")
    result = invoke("upscale", str(src), str(tmp_path / "out"), "-m", str(model), "--suffix", "/../../x")
    assert result.exit_code == EXIT_USAGE and "--suffix" in result.stderr, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "in"])  # nothing made, not even out/


def test_a_name_of_249_bytes_is_written(tmp_path: Path) -> None:
    name = "n" * 245 + ".png"  # a valid name (NAME_MAX is 255); the temporary name must fit too
    src = tmp_path / "in"
    src.mkdir()
    image_io.write_image(src / name, image_io.Image(pixels=smooth_rgb(12, 12)))
    model = sr_model(tmp_path / "sr.safetensors")
    result = invoke("upscale", str(src), str(tmp_path / "out"), "-m", str(model))
    assert result.exit_code == EXIT_OK, result.output
    assert image_io.read_image(tmp_path / "out" / name).pixels.shape == (24, 24, 3)


def test_temporary_names_fit_and_are_recognised() -> None:
    for name in ["a.png", "n" * 251 + ".png", "ü" * 125 + ".png"]:
        tmp = image_io.temporary_name(name)
        assert len(os.fsencode(tmp)) <= 255 and tmp.startswith(".") and tmp.endswith(".tmp")
        assert tmp.encode("utf-8").decode("utf-8") == tmp  # a multi-byte character is not cut in half


def test_running_again_in_place_does_not_take_last_runs_outputs_as_inputs(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    folder = photos(tmp_path / "in")
    for _ in range(2):
        result = invoke("upscale", str(folder), str(folder), "-m", str(model), "--suffix", "_x2")
        assert result.exit_code == EXIT_OK, result.output
    assert "skipped 2" in result.stderr and "wrote 0" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_x2.png", "b.jpg", "b_x2.jpg"]
    (folder / "a.png").unlink()
    (folder / "a_x2.png").unlink()
    for _ in range(2):  # the format changes the name too: b.jpg -> b.png, then b.png is not an input
        result = invoke("upscale", str(folder), str(folder), "-m", str(model), "--format", "png")
        assert result.exit_code == EXIT_OK, result.output
    assert "skipped 2" in result.stderr and "wrote 0" in result.stderr, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["b.jpg", "b.png", "b_x2.jpg", "b_x2.png"]


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    stale, fresh, theirs = out / ".a.png.0123abcd.tmp", out / ".b.jpg.89abcdef.tmp", out / ".notes.tmp"
    for path in (stale, fresh, theirs):
        path.write_bytes(b"half an image")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    os.utime(theirs, (an_hour_ago, an_hour_ago))
    result = invoke("upscale", str(photos(tmp_path / "in")), str(out), "-m", str(model))
    assert result.exit_code == EXIT_OK, result.output
    assert not stale.exists()  # ours, untouched for an hour: a killed run's
    assert fresh.exists()  # ours but recent: maybe a run writing there now
    assert theirs.exists()  # not our pattern


def test_the_pixel_limit_is_a_cli_option_and_an_environment_variable(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    src = photos(tmp_path / "in")
    limited = invoke("upscale", str(src), str(tmp_path / "o1"), "-m", str(model), "--max-pixels", "300")
    assert limited.exit_code == EXIT_SOME_FAILED and "wrote 1" in limited.stderr, limited.output
    assert "--max-pixels" in limited.stderr and "a.png" in limited.stderr  # 480 px, over 300
    by_env = invoke("upscale", str(src), str(tmp_path / "o2"), "-m", str(model), IMG2IMG_MAX_PIXELS="300")
    assert by_env.exit_code == EXIT_SOME_FAILED and "wrote 1" in by_env.stderr, by_env.output
    unlimited = invoke("upscale", str(src), str(tmp_path / "o3"), "-m", str(model), "--max-pixels", "0")
    assert unlimited.exit_code == EXIT_OK, unlimited.output


def test_a_directory_at_an_output_name_is_an_error_not_skipped(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    result = invoke("upscale", str(photos(tmp_path / "in")), str(tmp_path / "out"), "-m", str(model))
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    assert "skipped" not in result.stderr and "a directory is where the output file should go" in result.stderr
    assert (tmp_path / "out" / "b.jpg").is_file()


def test_an_output_folder_below_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    (tmp_path / "file").write_text("x")
    result = invoke("upscale", str(photos(tmp_path / "in")), str(tmp_path / "file" / "out"), "-m", str(model))
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a file" in lines[0] and "wrote" not in result.stderr, lines


WARNING_CLI = """
import sys, warnings
from img2img import image_io
from img2img.cli import cli
read = image_io.read_image
def warning_read(path, **kwargs):
    warnings.warn(f"{path}: unreadable EXIF data (test); orientation not applied", stacklevel=2)
    return read(path, **kwargs)
image_io.read_image = warning_read
sys.argv[0] = "img2img"
cli()
"""


def test_warnings_while_reading_are_one_line(tmp_path: Path) -> None:
    """A Python warning raised while reading a file (image_io's, Pillow's) is one line, no source location."""
    model = sr_model(tmp_path / "sr.safetensors")
    args = ["upscale", str(photos(tmp_path / "in")), str(tmp_path / "out"), "-m", str(model)]
    result = subprocess.run([sys.executable, "-c", WARNING_CLI, *args], capture_output=True, text=True, timeout=240)
    assert result.returncode == EXIT_OK, result.stderr
    lines = [line for line in result.stderr.splitlines() if "EXIF" in line]
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines), result.stderr
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr


def test_disk_full_while_writing_one_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, src = sr_model(tmp_path / "sr.safetensors"), photos(tmp_path / "in")
    real_fsync = os.fsync

    def full_for_a(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".a.png."):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_a)
    out = tmp_path / "out"
    result = invoke("upscale", str(src), str(out), "-m", str(model))
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    lines = [line for line in result.stderr.splitlines() if "a.png" in line]
    assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b.jpg"]  # no a.png, no temporary file


@pytest.mark.parametrize("kind", ["component", "path"])
def test_a_dst_name_too_long_for_the_file_system_is_one_line(tmp_path: Path, kind: str) -> None:
    model = sr_model(tmp_path / "sr.safetensors")
    # One name over NAME_MAX (255 bytes), or a path over PATH_MAX (4096 bytes) in valid names.
    dst = tmp_path / ("n" * 300) if kind == "component" else tmp_path.joinpath(*["d" * 200] * 21)
    result = invoke("upscale", str(photos(tmp_path / "in")), str(dst), "-m", str(model))
    assert result.exit_code in (EXIT_USAGE, EXIT_SOME_FAILED), result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.stderr
    assert "too long" in result.stderr.lower() and "Traceback" not in result.output + result.stderr


def test_written_files_follow_the_umask_like_images(tmp_path: Path) -> None:
    """Models, training checkpoints and images get 0o666 less the umask (mkstemp's 0o600 made models private)."""
    from img2img.training.state import save_checkpoint

    saved = os.umask(0o022)
    try:
        model = sr_model(tmp_path / "sr.safetensors")
        save_checkpoint({"step": 1}, tmp_path / "run" / "last.pt")
        image_io.write_image(tmp_path / "x.png", image_io.Image(pixels=smooth_rgb(4, 4)))
    finally:
        os.umask(saved)
    for path in (model, tmp_path / "run" / "last.pt", tmp_path / "x.png"):
        assert (path.stat().st_mode & 0o777) == 0o644, path
    assert not list(tmp_path.rglob("*.tmp"))


def png_with_a_damaged_text_chunk(path: Path) -> Path:
    """A good 8x8 PNG plus a tEXt chunk with a wrong CRC after the image data: libpng warns, in C."""
    image_io.write_image(path, image_io.Image(pixels=smooth_rgb(8, 8)))
    data = path.read_bytes()
    end = data.rindex(b"IEND") - 4
    path.write_bytes(data[:end] + struct.pack(">I", 5) + b"tEXta\x00bcd" + b"\x00\x00\x00\x00" + data[end:])
    return path


def test_native_codec_warnings_become_one_line_warnings_naming_the_file(tmp_path: Path) -> None:
    bad = png_with_a_damaged_text_chunk(tmp_path / "in" / "c.png")
    with pytest.warns(UserWarning, match=r"c\.png: libpng warning: tEXt: CRC error"):
        assert image_io.read_image(bad).pixels.shape == (8, 8, 3)
    # Through the CLI, in a real process: C code writes to descriptor 2, which CliRunner cannot see.
    model = sr_model(tmp_path / "sr.safetensors")
    photos(tmp_path / "in")
    result = subprocess.run(
        [sys.executable, "-m", "img2img", "upscale", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(model)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.jpg", "c.png"]
    lines = [line for line in result.stderr.splitlines() if "libpng" in line]
    assert lines == [f"warning: {bad}: libpng warning: tEXt: CRC error"], result.stderr
