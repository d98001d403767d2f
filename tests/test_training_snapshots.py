"""Training runs as models: numbered snapshots (`--save-every`), the training checkpoint itself as
`--model RUN/checkpoints/last.pt`, and a sample grid even in runs shorter than `sample_every`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from img2img.checkpoints import CheckpointError, load_model
from img2img.cli import cli
from img2img.training.run import train as train_api
from img2img.training.state import checkpoint_path, load_checkpoint
from tests.helpers import write_permuted_pairs

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread

TINY = ["--image-size", "32", "--ngf", "4", "--ndf", "4", "--num-workers", "0", "--set", "load_size=32",
        "--set", "n_layers_d=2", "--set", "val_every=0", "--set", "tensorboard=false"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_permuted_pairs(tmp_path_factory.mktemp("pairs"), count=4, size=36)


@pytest.fixture(scope="module")
def pix2pix_run(dataset, tmp_path_factory):
    """4 steps, snapshots every 2, EMA on, sample_every left at its default (500 > 4)."""
    run = tmp_path_factory.mktemp("p2p") / "run"
    result = CliRunner().invoke(cli, ["-q", "train", "pix2pix", "--data", str(dataset), "--out", str(run),
                                      "--steps", "4", "--save-every", "2", "--ema-decay", "0.5", *TINY])
    assert result.exit_code == 0, result.output
    return run


def same_weights(a, b) -> None:
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_snapshots_are_numbered_models(pix2pix_run, dataset, tmp_path) -> None:
    snapshots = sorted(p.name for p in (pix2pix_run / "snapshots").iterdir())
    assert snapshots == ["step_000002.safetensors", "step_000004.safetensors"]
    early, last = (load_model(pix2pix_run / "snapshots" / name) for name in snapshots)
    assert (early.provenance["step"], last.provenance["step"]) == (2, 4)
    assert early.arch == "unet" and early.provenance["ema"] is True
    same_weights(last, load_model(pix2pix_run))  # the last snapshot is the final model
    assert not torch.equal(early.net.state_dict()["model.model.0.weight"], last.net.state_dict()["model.model.0.weight"])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["-q", "translate", str(dataset / "trainA"), str(out), "--model",
                                      str(pix2pix_run / "snapshots" / snapshots[0]), "--tile", "0"])
    assert result.exit_code == 0, result.output
    assert len(list(out.iterdir())) == 4


def test_a_short_run_still_writes_a_sample(pix2pix_run) -> None:
    assert sorted(p.name for p in (pix2pix_run / "samples").iterdir()) == ["step_0000004.png"]


def test_training_checkpoint_as_model(pix2pix_run, dataset, tmp_path) -> None:
    """`--model RUN/checkpoints/last.pt`: the generator (its EMA copy, as exported) with its metadata."""
    from_ckpt = load_model(checkpoint_path(pix2pix_run))
    exported = load_model(pix2pix_run)
    same_weights(from_ckpt, exported)
    assert (from_ckpt.arch, from_ckpt.kwargs, from_ckpt.value_range) == (exported.arch, exported.kwargs,
                                                                         exported.value_range)
    assert from_ckpt.provenance["step"] == 4 and from_ckpt.provenance["ema"] is True
    with pytest.raises(CheckpointError, match="holds one generator.*BtoA"):
        load_model(checkpoint_path(pix2pix_run), direction="BtoA")
    outs = {}
    for name, model in (("ckpt", checkpoint_path(pix2pix_run)), ("run", pix2pix_run)):
        result = CliRunner().invoke(cli, ["-q", "translate", str(dataset / "trainA" / "0.png"),
                                          str(tmp_path / f"{name}.png"), "--model", str(model), "--tile", "0"])
        assert result.exit_code == 0, result.output
        outs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    np.testing.assert_array_equal(outs["ckpt"], outs["run"])


def test_old_training_checkpoint_without_export_records(pix2pix_run, tmp_path) -> None:
    payload = load_checkpoint(checkpoint_path(pix2pix_run))
    del payload["exports"]
    old = tmp_path / "last.pt"
    torch.save(payload, old)
    with pytest.raises(CheckpointError, match="older img2img.*model.safetensors"):
        load_model(old)


def test_cycle_checkpoint_and_snapshots_both_directions(dataset, tmp_path) -> None:
    run = tmp_path / "cyc"
    train_api("cyclegan", {"data": str(dataset), "out": str(run), "steps": 2, "save_every": 2, "image_size": 32,
                           "load_size": 32, "generator": "resnet", "n_blocks": 1, "ngf": 4, "ndf": 4, "n_layers_d": 2,
                           "num_workers": 0, "val_every": 0, "tensorboard": False}, progress=False)
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step_000002_g_ab.safetensors",
                                                                     "step_000002_g_ba.safetensors"]
    for direction, file in (("AtoB", "g_ab"), ("BtoA", "g_ba")):
        from_ckpt = load_model(checkpoint_path(run), direction=direction)
        same_weights(from_ckpt, load_model(run, direction=direction))
        same_weights(from_ckpt, load_model(run / "snapshots" / f"step_000002_{file}.safetensors"))
        assert from_ckpt.provenance["net"] == file
