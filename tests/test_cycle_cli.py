"""`img2img train cyclegan|discogan` end to end on tiny folders, and `img2img translate` with both
generators of our run directories and of reference CycleGAN checkpoints (latest_net_G_A/G_B.pth)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from img2img.checkpoints import load_model
from img2img.checkpoints.format import read_tensors
from img2img.cli import cli
from img2img.networks import registry
from tests.helpers import smooth_rgb

TINY = ["--image-size", "32", "--ngf", "4", "--ndf", "4", "--num-workers", "0", "--batch-size", "2",
        "--set", "log_every=1", "--set", "sample_every=2", "--set", "checkpoint_every=2", "--set", "load_size=32"]
CYCLE_TINY = [*TINY, "--generator", "resnet", "--set", "n_blocks=2", "--set", "n_layers_d=2"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """root/trainA (reddish) and root/trainB (bluish) from different source images, 5 and 4 of them."""
    root = tmp_path_factory.mktemp("unpaired")
    for side, n, first, channel in (("A", 5, 0, 0), ("B", 4, 50, 2)):
        (root / f"train{side}").mkdir()
        for i in range(n):
            img = smooth_rgb(40, 40, seed=first + i).astype(np.float64) * 0.6
            img[..., channel] += 100
            Image.fromarray(img.round().astype(np.uint8)).save(root / f"train{side}" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "in.png"
    Image.fromarray(smooth_rgb(40, 48, seed=7)).save(path)
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["-q", *args])


def translate(photo, out, *args: str):
    """`img2img translate` on the CPU, whole image at once (no tiles), as the reference runs it."""
    return invoke("--device", "cpu", "translate", str(photo), str(out), "--tile", "0", *args)


def expected_output(net: torch.nn.Module, path) -> np.ndarray:
    """What the reference test script computes: (u8 / 255 - 0.5) / 0.5 -> net -> (x + 1) / 2 * 255."""
    u8 = np.array(Image.open(path).convert("RGB"))
    x = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        y = net.eval()(x)
    return ((y[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).clip(0, 255)


def translated(out_dir) -> np.ndarray:
    return np.asarray(Image.open(out_dir / "in.png").convert("RGB")).astype(np.float64)


@pytest.fixture(scope="module")
def cycle_run(dataset, tmp_path_factory):
    """A 4-step CycleGAN run, resumed to 6 steps."""
    run = tmp_path_factory.mktemp("cycle") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = invoke("train", "cyclegan", "--data", str(dataset), "--out", str(run), "--steps", "4", *CYCLE_TINY,
                        "--lambda-identity", "0.25", "--pool-size", "3")
        assert result.exit_code == 0, result.output
        for name in ("g_ab.safetensors", "g_ba.safetensors", "config.yaml", "checkpoints/last.pt", "log.jsonl",
                     "samples/step_0000004.png"):
            assert (run / name).is_file(), name
        assert not (run / "model.safetensors").exists()
        result = invoke("train", "cyclegan", "--out", str(run), "--resume", "--steps", "6")
        assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(before)
    return run


def test_train_cyclegan_writes_the_run(cycle_run) -> None:
    config = yaml.safe_load((cycle_run / "config.yaml").read_text())
    assert (config["lambda_identity"], config["pool_size"], config["lambda_cycle"], config["gan_loss"]) == (
        0.25, 3, 10.0, "lsgan")
    assert (config["generator"], config["n_blocks"], config["steps"]) == ("resnet", 2, 6)
    log = [json.loads(line) for line in (cycle_run / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert {"gan_ab", "gan_ba", "cycle_a", "cycle_b", "idt_a", "idt_b", "d_a", "d_b", "lr_g", "lr_d"} <= set(train[0])
    # Sample grid: one row of six 32-px images (real a | fake b | rec a | real b | fake a | rec b) per image.
    grid = Image.open(cycle_run / "samples" / "step_0000004.png")
    assert grid.size == (6 * 32, 2 * 32)

    ab, ba = load_model(cycle_run, direction="AtoB"), load_model(cycle_run, direction="BtoA")
    assert ab.arch == ba.arch == "resnet" and ab.kwargs["n_blocks"] == 2
    assert ab.provenance["direction"] == "AtoB" and ba.provenance["direction"] == "BtoA"
    assert ab.provenance["step"] == 6 and ab.provenance["method"] == "cyclegan"
    assert any(not torch.equal(p, q) for p, q in zip(ab.net.parameters(), ba.net.parameters(), strict=True))


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_translate_picks_the_generator_of_a_run(cycle_run, photo, tmp_path, direction: str) -> None:
    out = tmp_path / "out"
    result = translate(photo, out, "--model", str(cycle_run), "--direction", direction)
    assert result.exit_code == 0, result.output
    net = {"AtoB": "g_ab", "BtoA": "g_ba"}[direction]
    kwargs = yaml.safe_load((cycle_run / "config.yaml").read_text())
    g = registry.build("resnet", ngf=kwargs["ngf"], n_blocks=kwargs["n_blocks"])
    g.load_state_dict(read_tensors(cycle_run / f"{net}.safetensors"))
    other = registry.build("resnet", ngf=kwargs["ngf"], n_blocks=kwargs["n_blocks"])
    other.load_state_dict(read_tensors(cycle_run / f"{'g_ba' if net == 'g_ab' else 'g_ab'}.safetensors"))
    got, want = translated(out), expected_output(g, photo)
    assert np.abs(got - want).max() <= 1.0  # rounding vs the reference's truncation
    assert np.abs(got - expected_output(other, photo)).max() > 2.0  # the other generator would differ


def test_reference_checkpoints_translate_both_ways(cycle_run, photo, tmp_path) -> None:
    """Our trained generators saved as the reference saves them (bare state dicts, G_A: a -> b)."""
    ref = tmp_path / "reference"
    ref.mkdir()
    nets = {}
    for direction, ours, theirs in (("AtoB", "g_ab", "G_A"), ("BtoA", "g_ba", "G_B")):
        g = registry.build("resnet", ngf=4, n_blocks=2)  # the junyanz module tree and keys
        g.load_state_dict(read_tensors(cycle_run / f"{ours}.safetensors"))
        torch.save(g.state_dict(), ref / f"latest_net_{theirs}.pth")
        nets[direction] = g

    for direction in ("AtoB", "BtoA"):
        want = expected_output(nets[direction], photo)
        # The checkpoint folder with --direction ...
        out = tmp_path / f"folder_{direction}"
        result = translate(photo, out, "--model", str(ref), "--direction", direction)
        assert result.exit_code == 0, result.output
        assert np.abs(translated(out) - want).max() <= 1.0, direction
        # ... equals our run directory with the same --direction, and the single file on its own.
        out_run = tmp_path / f"run_{direction}"
        assert translate(photo, out_run, "--model", str(cycle_run), "--direction", direction).exit_code == 0
        assert np.array_equal(translated(out), translated(out_run))
        single = ref / f"latest_net_{'G_A' if direction == 'AtoB' else 'G_B'}.pth"
        out_file = tmp_path / f"file_{direction}"
        assert translate(photo, out_file, "--model", str(single)).exit_code == 0
        assert np.array_equal(translated(out), translated(out_file))

    # Only G_A present: BtoA is a clear usage error naming the folder.
    (ref / "latest_net_G_B.pth").unlink()
    result = translate(photo, tmp_path / "x", "--model", str(ref), "--direction", "BtoA")
    assert result.exit_code == 2 and "G_B" in result.output and str(ref) in result.output


def test_train_discogan_preset(dataset, tmp_path) -> None:
    run = tmp_path / "disco"
    # DiscoGAN's discriminator scores 64-px images: the 40-px photos are enlarged to 64 first.
    args = [a.replace("32", "64") for a in TINY]
    result = invoke("train", "discogan", "--data", str(dataset), "--out", str(run), "--steps", "2", *args)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["generator"], config["discriminator"], config["gan_loss"], config["cycle_loss"]) == (
        "discogan_g", "discogan_d", "vanilla", "l2")
    assert (config["lambda_identity"], config["pool_size"], config["batch_size"]) == (0.0, 0, 2)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert "idt_a" not in log[0] and {"gan_ab", "cycle_b", "d_a"} <= set(log[0])
    desc = load_model(run, direction="BtoA")
    assert desc.arch == "discogan_g" and desc.provenance["method"] == "discogan"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-size", "30"], "image_size 30 must be a multiple of 4"),
        (["--set", "lambda_a=3"], "unknown option 'lambda_a' for CycleConfig"),
        (["--set", "in_channels=1"], "lambda_identity > 0 needs as many channels"),
    ],
)
def test_bad_options_are_usage_errors(dataset, tmp_path, args, message) -> None:
    result = invoke("train", "cyclegan", "--data", str(dataset), "--out", str(tmp_path / "r"), "--steps", "1",
                    *CYCLE_TINY, *args)
    assert result.exit_code == 2 and message in result.output, result.output
