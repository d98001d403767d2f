"""`img2img train pix2pix` end to end on a tiny folder dataset: train, resume, errors, the run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from img2img.checkpoints import load_model
from img2img.cli import cli
from tests.helpers import smooth_rgb

TINY = ["--image-size", "32", "--ngf", "8", "--ndf", "8", "--num-workers", "0",
        "--set", "log_every=1", "--set", "sample_every=2", "--set", "checkpoint_every=2", "--set", "val_every=2",
        "--set", "load_size=32"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """root/{train,val}/{A,B}/*.png with B = A's channels permuted."""
    root = tmp_path_factory.mktemp("pairs")
    for split, n, first in (("train", 6, 0), ("val", 2, 100)):
        for i in range(n):
            a = smooth_rgb(40, 40, seed=first + i)
            for side, img in (("A", a), ("B", a[..., [2, 0, 1]])):
                (root / f"{split}{side}").mkdir(exist_ok=True)
                Image.fromarray(np.ascontiguousarray(img)).save(root / f"{split}{side}" / f"{i:03d}.png")
    return root


def train(*args: str):
    return CliRunner().invoke(cli, ["-q", "train", "pix2pix", *args])


def test_train_resume_and_export(dataset, tmp_path) -> None:
    run = tmp_path / "run"
    result = train("--data", str(dataset), "--out", str(run), "--steps", "4", *TINY)
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "config.yaml", "checkpoints/last.pt", "log.jsonl", "samples/step_0000004.png"):
        assert (run / name).is_file(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["ngf"], config["steps"], config["augment"], config["data"]) == (8, 4, ["hflip"], str(dataset))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in log if r["kind"] == "val"] == [2, 4]

    # Resume: the saved config is the base; only the longer run length is given.
    result = train("--out", str(run), "--resume", "--steps", "6")
    assert result.exit_code == 0, result.output
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 6

    desc = load_model(run)
    assert desc.arch == "unet" and desc.provenance["step"] == 6 and desc.provenance["method"] == "pix2pix"
    with torch.no_grad():
        out = desc(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()

    # The run directory works directly as a model for `img2img translate`.
    translated = CliRunner().invoke(cli, ["-q", "translate", str(dataset / "valA"), str(tmp_path / "out"),
                                          "--model", str(run), "--tile", "0"])
    assert translated.exit_code == 0, translated.output
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == ["000.png", "001.png"]
    assert Image.open(tmp_path / "out" / "000.png").size == (40, 40)


def test_config_file_and_flags(dataset, tmp_path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"data: {dataset}\nngf: 4\nndf: 4\nsteps: 9\nimage_size: 32\nnum_workers: 0\nload_size: 32\n")
    result = train("--config", str(cfg), "--out", str(tmp_path / "r"), "--ngf", "8", "--set", "augment=hflip,vflip",
                   "--set", "steps=0", "--epochs", "1", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert (saved["ngf"], saved["ndf"], saved["augment"], saved["epochs"]) == (8, 4, ["hflip", "vflip"], 1)
    # One epoch of 6 training pairs in batches of 2 is 3 steps.
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "ngff=3"], "command line: unknown option 'ngff' for Pix2PixConfig"),
        (["--set", "augment=spin"], "spin"),
        (["--image-size", "48"], "use a multiple of 32"),
        (["--set", "nokey"], "--set expects KEY=VALUE"),
    ],
)
def test_usage_errors_exit_2(dataset, tmp_path, args, message) -> None:
    result = train("--data", str(dataset), "--out", str(tmp_path / "r"), "--steps", "1", "--num-workers", "0", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_missing_data_and_existing_run(dataset, tmp_path) -> None:
    result = train("--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r"), "--steps", "1")
    assert result.exit_code == 2 and "nothing" in result.output
    run = tmp_path / "run"
    assert train("--data", str(dataset), "--out", str(run), "--steps", "1", *TINY).exit_code == 0
    again = train("--data", str(dataset), "--out", str(run), "--steps", "2", *TINY)
    assert again.exit_code == 2 and "pass --resume" in again.output


def test_progress_in_a_pipe_is_plain_lines(dataset, tmp_path, monkeypatch) -> None:
    """Not a terminal (CliRunner's stderr, like a log file): no bar's carriage returns, but a
    plain line per PLAIN_EVERY_S seconds and one at the end."""
    from img2img.training.monitor import RunMonitor

    monkeypatch.setattr(RunMonitor, "PLAIN_EVERY_S", 0.0)
    result = CliRunner().invoke(cli, ["train", "pix2pix", "--data", str(dataset), "--out", str(tmp_path / "r"),
                                      "--steps", "3", *TINY])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("step ") and "step/s" in line]
    assert [line.split(":")[0] for line in lines] == ["step 1/3", "step 2/3", "step 3/3"]
    assert "g_l1" in lines[-1] and "img2img translate SRC DST --model" in result.output
