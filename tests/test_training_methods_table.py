"""A method is one file + one line in ``METHODS``: its ``img2img train`` subcommand is generated from
its config dataclass (flags, types, choices, help, defaults) and its data needs come from the method."""

from __future__ import annotations

import json
from dataclasses import dataclass

import click
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from img2img.cli import cli
from img2img.cli.train import method_command
from img2img.training.config import ConfigError, TrainConfig, build_config, option
from img2img.training.method import Method, Prediction, StepContext
from img2img.training.methods import METHODS
from img2img.training.methods.cycle import CycleConfig
from img2img.training.methods.srgan import SRGAN, SRGANConfig
from tests.helpers import write_permuted_pairs

# --- the toy method: everything a new method writes, in one place ------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread

@dataclass
class ShiftConfig(TrainConfig):
    width: int = option(4, help="Hidden channels.", choices=(2, 4, 8))
    lr: float = option(1e-2, help="Adam learning rate.")
    target: str = option("b", help="Which side the net learns to produce.", choices=("a", "b"))
    momentum: float = 0.5  # no help: reached with --set only


class Shift(Method):
    """Shift: a 1x1-conv net that learns b from a (a test's toy method).

    More text for its --help. Example:
      img2img train shift --data pairs --out runs/shift --steps 2
    """

    name = "shift"
    config_class = ShiftConfig
    dataset_kind = "paired"

    def __init__(self, config: ShiftConfig) -> None:
        super().__init__(config)
        self.nets = {"g": nn.Sequential(nn.Conv2d(3, config.width, 1), nn.Conv2d(config.width, 3, 1))}
        self.optimizers = {"g": torch.optim.Adam(self.nets["g"].parameters(), lr=config.lr)}

    def train_step(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with ctx.autocast():
            loss = (self.nets["g"](batch["a"]) - batch[self.config.target]).abs().mean()
        ctx.backward(loss)
        ctx.step_optimizer("g")
        return {"l1": loss.detach()}

    @torch.no_grad()
    def predict(self, batch, nets) -> Prediction:
        return Prediction(input=batch["a"], output=nets["g"](batch["a"]).clamp(0, 1), target=batch["b"])

    def exports(self):
        return []


@pytest.fixture
def shift_registered(monkeypatch):
    monkeypatch.setitem(METHODS, "shift", Shift)  # the one line a new method adds to the table


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_permuted_pairs(tmp_path_factory.mktemp("pairs"), count=3, size=16, order=(2, 1, 0))


def test_a_table_entry_is_a_subcommand_with_generated_flags(shift_registered) -> None:
    listing = CliRunner().invoke(cli, ["train", "--help"])
    assert listing.exit_code == 0, listing.output
    assert "shift" in listing.output and "Shift: a 1x1-conv net that learns b from a" in listing.output

    result = CliRunner().invoke(cli, ["train", "shift", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--width [2|4|8] Hidden channels. [default: 4]" in text
    assert "--lr FLOAT Adam learning rate. [default: 0.01]" in text
    assert "--target [a|b]" in text
    assert "--momentum" not in text  # no help text: not a flag
    for shared in ("--data DIRECTORY", "--out DIRECTORY", "--steps INTEGER", "--config FILE", "--resume", "--set"):
        assert shared in text, shared
    assert "img2img train shift --data pairs --out runs/shift --steps 2" in result.output  # example kept as written

    bad = CliRunner().invoke(cli, ["train", "shift", "--width", "3"])
    assert bad.exit_code == 2 and "'3' is not one of '2', '4', '8'" in bad.output


def test_the_generated_subcommand_trains(shift_registered, pairs, tmp_path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "shift", "--data", str(pairs), "--out", str(run), "--steps", "3",
                                      "--width", "2", "--image-size", "16", "--num-workers", "0",
                                      "--set", "load_size=16", "--set", "momentum=0.25", "--set", "log_every=1"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["width"], saved["momentum"], saved["target"], saved["steps"]) == (2, 0.25, "b", 3)
    assert type(saved["width"]) is int  # the choice came back as the field's type
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3]
    assert "img2img translate SRC DST" in result.output  # not an SR method: its model translates


def test_config_choices_are_checked_for_every_source() -> None:
    with pytest.raises(ConfigError, match="f.yaml: target must be one of a, b, not 'c'"):
        build_config(ShiftConfig, ("f.yaml", {"target": "c"}))
    with pytest.raises(ConfigError, match="width must be one of 2, 4, 8, not 3"):
        build_config(ShiftConfig, ("command line", {"width": 3}))


# --- the real methods keep their flags ---------------------------------------------------------

# Every flag the hand-written `img2img train` subcommands had, per method.
SHARED_FLAGS = {"--data", "--out", "--config", "--steps", "--epochs", "--batch-size", "--image-size", "--seed",
                "--device", "--precision", "--ema-decay", "--num-workers", "--resume", "--set"}
CYCLE_FLAGS = {"--generator", "--ngf", "--ndf", "--lr", "--gan-loss", "--lambda-cycle", "--lambda-identity",
               "--pool-size"}
OLD_FLAGS = {
    "pix2pix": {"--direction", "--ngf", "--ndf", "--num-downs", "--lr", "--gan-loss", "--l1-weight"},
    "srgan": {"--scale", "--arch", "--num-feat", "--num-block", "--pretrain-steps", "--pixel-loss", "--pixel-weight",
              "--perceptual", "--perceptual-layer", "--perceptual-weight", "--vgg-weights", "--gan-mode",
              "--adv-weight", "--lr-g", "--lr-d", "--init-from", "--val-data", "--val-every"},
    "cyclegan": CYCLE_FLAGS,
    "discogan": CYCLE_FLAGS,
}
OLD_CHOICES = {
    ("pix2pix", "--direction"): {"AtoB", "BtoA"},
    ("pix2pix", "--gan-loss"): {"vanilla", "lsgan", "hinge", "wgan-gp"},
    ("srgan", "--scale"): {"2", "3", "4"},
    ("srgan", "--arch"): {"srresnet", "msrresnet", "rrdbnet"},
    ("srgan", "--pixel-loss"): {"l2", "l1", "charbonnier"},
    ("srgan", "--perceptual"): {"vgg", "none"},
    ("srgan", "--gan-mode"): {"vanilla", "ragan"},
    ("srgan", "--precision"): {"auto", "fp32", "bf16", "fp16"},
    ("cyclegan", "--generator"): {"resnet_9blocks", "resnet_6blocks", "resnet", "unet_128", "unet_256", "discogan_g"},
    ("discogan", "--gan-loss"): {"lsgan", "vanilla", "hinge", "wgan-gp"},
}


@pytest.mark.parametrize("name", sorted(OLD_FLAGS))
def test_every_method_keeps_its_flags_and_choices(name: str) -> None:
    command = method_command(name, METHODS[name])
    flags = {opt: param for param in command.params for opt in param.opts}
    assert SHARED_FLAGS | OLD_FLAGS[name] <= set(flags)
    for (method, flag), choices in OLD_CHOICES.items():
        if method == name:
            assert isinstance(flags[flag].type, click.Choice)
            assert set(flags[flag].type.choices) == choices, flag


def test_defaults_shown_are_each_methods_own() -> None:
    """DiscoGAN shares CycleGAN's flags, but its --help shows its own defaults."""
    def shown(name: str, flag: str) -> str:
        param = next(p for p in method_command(name, METHODS[name]).params if flag in p.opts)
        return param.help.rsplit("[default: ", 1)[1].rstrip("]")

    assert (shown("cyclegan", "--gan-loss"), shown("discogan", "--gan-loss")) == ("lsgan", "vanilla")
    assert (shown("cyclegan", "--image-size"), shown("discogan", "--image-size")) == ("256", "64")
    assert shown("srgan", "--lr-g") == "0.0001"


def test_sr_data_needs_come_from_the_method(tmp_path) -> None:
    """The scale reaches the dataset and the validation crop through the method, not a special case."""
    config = build_config(SRGANConfig, ("test", {"scale": 2, "arch": "msrresnet", "num_feat": 4, "num_block": 1,
                                                 "steps": 2, "pretrain_steps": 2, "image_size": 32}))
    method = SRGAN(config)
    assert method.dataset_kind == "sr" and method.dataset_options() == {"scale": 2, "degradation": "bicubic"}
    assert method.val_crop == 2


def test_size_rules_come_from_the_networks() -> None:
    """The cycle config has no table of sizes: unet_128 asks for sides that are multiples of 128."""
    with pytest.raises(ConfigError, match="image_size 64 must be a multiple of 128 for unet_128"):
        build_config(CycleConfig, ("test", {"generator": "unet_128", "image_size": 64}))
    with pytest.raises(ConfigError, match="below the 48 px the patchgan discriminator needs"):
        build_config(CycleConfig, ("test", {"image_size": 32, "n_layers_d": 4}))
    build_config(CycleConfig, ("test", {"generator": "unet_128", "image_size": 128}))
