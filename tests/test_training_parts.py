"""Training building blocks: config files, schedules, EMA, step context (scaler, clipping), checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from img2img.training.config import ConfigError, TrainConfig, build_config, read_yaml, save_config
from img2img.training.ema import EMA
from img2img.training.method import StepContext
from img2img.training.run import resolve_config
from img2img.training.schedules import Schedule
from img2img.training.state import CheckpointError, capture_rng, load_checkpoint, restore_rng, save_checkpoint


def test_yaml_fills_the_dataclass_and_cli_wins(tmp_path) -> None:
    from img2img.training.methods.pix2pix import Pix2Pix

    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text("data: d\nout: o\nngf: 16\nlr: 1\nchannels_last: null\nsteps: 50\n")
    config = resolve_config(Pix2Pix, options={"steps": 7, "ndf": 8}, config_file=cfg_file)
    assert (config.ngf, config.ndf, config.steps, config.channels_last) == (16, 8, 7, None)
    assert config.lr == 1.0 and isinstance(config.lr, float)  # int widened to the field's float


def test_exponent_floats_without_a_dot_are_floats(tmp_path) -> None:
    """YAML 1.1 (PyYAML) reads `1e-4` as a string; a float field takes it as the number it is."""
    from img2img.training.methods.pix2pix import Pix2Pix

    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text("data: d\nout: o\nlr: 1e-4\nema_decay: 9.99e-1\n")
    config = resolve_config(Pix2Pix, options={}, config_file=cfg_file)
    assert (config.lr, config.ema_decay) == (1e-4, 0.999)
    with pytest.raises(ConfigError, match=r"option 'lr' must be float, got 'fast'"):
        resolve_config(Pix2Pix, options={"lr": "fast"}, config_file=cfg_file)


def test_unknown_keys_and_bad_types_name_the_file(tmp_path) -> None:
    from img2img.training.methods.pix2pix import Pix2Pix

    bad = tmp_path / "bad.yaml"
    bad.write_text("data: d\nout: o\nngf_: 16\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown option 'ngf_' for Pix2PixConfig; known: .*ngf"):
        resolve_config(Pix2Pix, options={}, config_file=bad)
    bad.write_text("steps: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: option 'steps' must be int, got 'many'"):
        resolve_config(Pix2Pix, options={}, config_file=bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: expected a mapping"):
        read_yaml(bad)
    bad.write_text("a: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        read_yaml(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config file"):
        read_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no training data: pass --data"):
        resolve_config(Pix2Pix, options={"out": "o"})


def test_resume_reads_the_saved_config_first(tmp_path) -> None:
    from img2img.training.methods.pix2pix import Pix2Pix, Pix2PixConfig

    run = tmp_path / "run"
    run.mkdir()
    save_config(build_config(Pix2PixConfig, ("x", {"data": "d", "out": str(run), "ngf": 12, "steps": 10})),
                run / "config.yaml")
    config = resolve_config(Pix2Pix, options={"out": str(run), "steps": 20}, resume=True)
    assert (config.ngf, config.steps, config.data) == (12, 20, "d")
    with pytest.raises(ConfigError, match="no saved config"):
        resolve_config(Pix2Pix, options={"out": str(tmp_path)}, resume=True)


def test_validation_errors() -> None:
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, fp16, not 'fp8'"):
        build_config(TrainConfig, ("f.yaml", {"precision": "fp8"}))
    with pytest.raises(ConfigError, match="f.yaml: lr_schedule 'step' needs lr_step_every >= 1"):
        build_config(TrainConfig, ("f.yaml", {"lr_schedule": "step"}))
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        build_config(TrainConfig, ("f.yaml", {"ema_decay": 1.0}))


def test_schedules() -> None:
    lin = Schedule("linear", length=10, decay_start=0.5)
    assert [lin.factor(t) for t in (0, 4, 5, 6, 9, 10, 50)] == pytest.approx([1, 1, 1, 0.8, 0.2, 0, 0])
    step = Schedule("step", length=100, every=30, gamma=0.5)
    assert [step.factor(t) for t in (0, 29, 30, 61)] == [1, 1, 0.5, 0.25]
    cos = Schedule("cosine", length=10, min_factor=0.1)
    assert [cos.factor(t) for t in (0, 5, 10)] == pytest.approx([1.0, 0.55, 0.1])
    later = Schedule("linear", length=10, start=100, decay_start=0.0)  # a second phase
    assert [later.factor(t) for t in (0, 100, 105)] == pytest.approx([1, 1, 0.5])


def test_ema_follows_the_formula() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.5)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(3.0)
    ema.update(net)  # effective decay min(0.5, 2/11) = 2/11
    d = 2 / 11
    torch.testing.assert_close(ema.module[0].weight, d * start + (1 - d) * (start + 1))
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 3.0))  # buffers copied
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    state = ema.state_dict()
    other = EMA(net, decay=0.5)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.module[0].weight, ema.module[0].weight)


@pytest.mark.parametrize("use_scaler", [False, True])
def test_step_context_clips_the_unscaled_gradient(use_scaler: bool) -> None:
    torch.manual_seed(0)
    net = nn.Linear(4, 1, bias=False)
    start = net.weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if use_scaler else None
    ctx = StepContext(step=0, total_steps=1, device=torch.device("cpu"), autocast_dtype=None, scaler=scaler,
                      grad_clip=0.5, optimizers={"g": opt})
    x = torch.ones(1, 4) * 10
    ctx.backward(net(x).sum())  # gradient = x, norm 20
    ctx.step_optimizer("g")
    if scaler is not None:
        scaler.update()
    # SGD with lr 1 on a gradient clipped to norm 0.5 along x: w -= 0.5 * x / |x|.
    torch.testing.assert_close(net.weight.detach(), start - 0.25 * torch.ones(1, 4))
    assert net.weight.grad is None  # zeroed (set to None) after the step


def test_rng_capture_round_trip() -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_checkpoint_is_atomic_and_weights_only(tmp_path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    payload = {"format": "img2img-train/1", "step": 3, "rng": capture_rng(), "x": torch.arange(3)}
    save_checkpoint(payload, path)
    assert not list(path.parent.glob("*.tmp"))
    loaded = torch.load(path, weights_only=True)  # plain types and tensors only
    assert loaded["step"] == 3 and torch.equal(loaded["x"], torch.arange(3))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pt: cannot read training checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not an img2img training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
