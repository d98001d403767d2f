"""Training under faults: a full disk, a folder of unreadable images read by worker processes, a
missing TensorBoard, torchrun ranks. Each ends in one line on stderr and the documented exit code,
never a traceback, and leaves no temporary file and the last good checkpoint in place."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from img2img.cli import cli
from img2img.training.state import checkpoint_path, load_checkpoint
from tests.helpers import write_permuted_pairs

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread

REPO = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "32", "--ngf", "4", "--ndf", "4", "--num-workers", "0", "--set", "load_size=32",
        "--set", "n_layers_d=2", "--set", "sample_every=0", "--set", "val_every=0", "--set", "checkpoint_every=2",
        "--set", "tensorboard=false"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_permuted_pairs(tmp_path_factory.mktemp("pairs"), count=4, size=36)


def train(*args: str, quiet: bool = True):
    return CliRunner().invoke(cli, [*(["-q"] if quiet else []), "train", "pix2pix", *args])


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_writing_a_checkpoint(dataset, tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    assert train("--data", str(dataset), "--out", str(run), "--steps", "2", *TINY).exit_code == 0
    good = checkpoint_path(run).read_bytes()

    def save_part_then_fail(payload, f, *args, **kwargs):
        f.write(b"PK\x03\x04" + bytes(4096))  # some bytes reach the temp file before the disk fills
        full_disk()

    monkeypatch.setattr(torch, "save", save_part_then_fail)
    result = train("--out", str(run), "--resume", "--steps", "4")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert error_lines(result.output) == [
        f"error: {checkpoint_path(run)}: cannot write the training checkpoint (No space left on device); "
        "the previous checkpoint last.pt is kept"
    ]
    assert checkpoint_path(run).read_bytes() == good
    assert sorted(p.name for p in checkpoint_path(run).parent.iterdir()) == ["last.pt"]  # no last.pt.tmp


def test_disk_full_while_exporting_the_model(dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("img2img.checkpoints.format.save_file", full_disk)
    run = tmp_path / "run"
    result = train("--data", str(dataset), "--out", str(run), "--steps", "2", *TINY)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert error_lines(result.output) == [
        f"error: {run / 'model.safetensors'}: cannot write the model (No space left on device)"
    ]
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*")) and not (run / "model.safetensors").exists()


@pytest.mark.slow
def test_every_image_bad_with_worker_processes_is_one_line(tmp_path) -> None:
    """Worker processes raise the DataError; the user sees its one line (and one line per skipped file)."""
    for side in ("A", "B"):
        (tmp_path / "bad" / f"train{side}").mkdir(parents=True)
        for i in range(3):
            (tmp_path / "bad" / f"train{side}" / f"{i}.png").write_bytes(b"not an image at all" * 10)
    command = [sys.executable, "-m", "img2img", "-q", "train", "pix2pix", "--data", str(tmp_path / "bad"),
               "--out", str(tmp_path / "run"), "--steps", "2", "--image-size", "32", "--ngf", "4", "--ndf", "4",
               "--num-workers", "2", "--set", "load_size=32", "--set", "tensorboard=false"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=300)
    assert done.returncode == 2, done.stderr
    lines = error_lines(done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [f"error: {tmp_path / 'bad' / 'trainA'}: none of the 3 images could be read "
                      f"(e.g. {tmp_path / 'bad' / 'trainA' / '0.png'}: not a recognised image file "
                      "(expected JPEG, PNG, WebP, TIFF or BMP data))"]
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), lines
    assert any(line.startswith("warning: ") and "1.png" in line for line in lines)


def test_missing_tensorboard_is_said(dataset, tmp_path, monkeypatch) -> None:
    from img2img.training import monitor

    monkeypatch.setattr(monitor, "tensorboard_installed", lambda: False)
    args = ["--data", str(dataset), "--out", str(tmp_path / "r"), "--steps", "1", *TINY[:-2]]  # tensorboard on
    result = train(*args, quiet=False)
    assert result.exit_code == 0, result.output
    assert monitor.TENSORBOARD_MISSING in result.output
    assert "pip install tensorboard" in monitor.TENSORBOARD_MISSING
    off = train("--data", str(dataset), "--out", str(tmp_path / "r2"), "--steps", "1", *TINY, quiet=False)
    assert off.exit_code == 0 and "TensorBoard" not in off.output


@pytest.mark.parametrize(("rank", "reports"), [("0", True), ("1", False)])
def test_only_rank_0_prints_the_closing_model_line(rank, reports, tmp_path, monkeypatch) -> None:
    from img2img.training import run
    from img2img.training.loop import FitResult

    def fake_train(method, options, **kwargs):
        return FitResult(step=3, total_steps=3, run_dir=tmp_path, checkpoint=tmp_path / "c", losses={"g": 1.0})

    monkeypatch.setattr(run, "train", fake_train)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = train("--data", "d", "--out", str(tmp_path), quiet=False)
    assert result.exit_code == 0, result.output
    assert ("model: " in result.output) is reports
    assert ("trained 3/3 steps" in result.output) is reports


def test_a_failed_write_leaves_the_checkpoint_resumable(dataset, tmp_path, monkeypatch) -> None:
    """After the full disk is fixed, the run resumes from the kept checkpoint."""
    run = tmp_path / "run"
    assert train("--data", str(dataset), "--out", str(run), "--steps", "2", *TINY).exit_code == 0
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        assert train("--out", str(run), "--resume", "--steps", "4").exit_code == 2
    result = train("--out", str(run), "--resume", "--steps", "4")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(checkpoint_path(run))["step"] == 4
