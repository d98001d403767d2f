"""SRGAN method: both phases on the shared loop, the VGG perceptual path, the offline message, export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models import VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from img2img.checkpoints import load_model
from img2img.networks import build
from img2img.training.config import ConfigError, build_config
from img2img.training.loop import fit
from img2img.training.method import StepContext
from img2img.training.methods import get_method
from img2img.training.methods.srgan import (
    SRGAN,
    SRGANConfig,
    VGGWeightsUnavailableError,
    _discriminator_adv,
    _generator_adv,
)

SCALE = 2
HR = 32


def _batches(n: int, *, batch: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Fixed smooth HR crops and their area-downscaled LR (the loop only needs an iterable of dicts)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        hr = F.interpolate(torch.rand(batch, 3, HR // 4, HR // 4, generator=g), size=(HR, HR), mode="bilinear")
        out.append({"lr": F.avg_pool2d(hr, SCALE), "hr": hr})
    return out


def _config(tmp_path, **overrides) -> SRGANConfig:
    values = dict(
        data="unused", out=str(tmp_path / "run"), steps=4, pretrain_steps=2, scale=SCALE, image_size=HR,
        batch_size=2, arch="msrresnet", num_feat=8, num_block=1, ndf=4, device="cpu", log_every=1,
        sample_every=0, val_every=2, checkpoint_every=0, tensorboard=False,
    )
    values.update(overrides)
    return build_config(SRGANConfig, ("test", values))

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> str:
    """A torchvision-layout VGG19 feature state dict with random weights (the loader is real)."""
    torch.manual_seed(1)
    features = make_layers(cfgs["E"], batch_norm=False)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return str(path)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No cached weights and no network: torchvision's weights API fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(VGG19_Weights, "get_state_dict", refuse)


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_srgan_is_registered():
    assert get_method("srgan") is SRGAN


def test_both_phases_with_local_vgg_then_tiled_upscale(tmp_path, vgg_file):
    from img2img.checkpoints import load_model
    from img2img.inference.engine import Engine

    cfg = _config(tmp_path, vgg_weights=vgg_file, ema_decay=0.0)
    torch.manual_seed(0)
    method = SRGAN(cfg)
    assert method.perceptual is not None
    d_before = {k: v.clone() for k, v in method.nets["d"].state_dict().items()}
    run_dir = tmp_path / "run"
    fit(method, train_loader=_batches(4), val_loader=_batches(1, seed=5), run_dir=run_dir,
        device=torch.device("cpu"), progress=False, stop_at=2)
    # Phase 1 leaves the discriminator untouched.
    for k, v in method.nets["d"].state_dict().items():
        assert torch.equal(v, d_before[k]), k

    torch.manual_seed(0)
    method = SRGAN(cfg)
    fit(method, train_loader=_batches(4), val_loader=_batches(1, seed=5), run_dir=run_dir,
        device=torch.device("cpu"), progress=False, resume=True)
    records = [r for r in _log(run_dir) if r["kind"] == "train"]
    assert [sorted(k for k in r if k.startswith(("g_", "d"))) for r in records] == [
        ["g_pix"], ["g_pix"], ["d", "g_gan", "g_vgg"], ["d", "g_gan", "g_vgg"]]
    assert all(r["g_vgg"] > 0 for r in records[2:])
    assert any(not torch.equal(v, d_before[k]) for k, v in method.nets["d"].state_dict().items())
    val = [r for r in _log(run_dir) if r["kind"] == "val"]
    assert len(val) == 2 and all(math.isfinite(r["psnr"]) for r in val)

    model = load_model(run_dir / "model.safetensors")
    assert (model.arch, model.scale, tuple(model.value_range)) == ("msrresnet", SCALE, (0.0, 1.0))
    lr = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        expected = method.nets["g"].eval()(lr)
    out = Engine(model, tile=20, overlap=8, device="cpu").run_tensor(lr)
    assert out.shape == (1, 3, 80, 72)
    assert torch.allclose(out, expected, atol=1e-4)


def test_phase1_only_run_needs_no_vgg_and_lowers_the_pixel_loss(tmp_path, offline):
    cfg = _config(tmp_path, steps=20, pretrain_steps=20, lr_g=2e-3, val_every=0)
    method = SRGAN(cfg)  # offline, but phase 1 never builds the VGG
    assert method.perceptual is None
    batch = _batches(1)[0]
    ctx = lambda step: StepContext(step=step, total_steps=20, device=torch.device("cpu"), autocast_dtype=None,  # noqa: E731
                                   scaler=None, grad_clip=0.0, optimizers=method.optimizers)
    method.setup(total_steps=20)
    first = float(method.train_step(ctx(0), batch)["g_pix"])
    for step in range(1, 20):
        last = float(method.train_step(ctx(step), batch)["g_pix"])
    assert last < 0.9 * first
    info = method.exports()[0].info
    assert info["phase"] == "srresnet"


def test_offline_message_names_both_ways_and_the_opt_out(tmp_path, offline):
    with pytest.raises(VGGWeightsUnavailableError) as e:
        SRGAN(_config(tmp_path))
    message = str(e.value)
    assert "--vgg-weights" in message and "--perceptual none" in message
    assert str(tmp_path / "torch_home") in message  # where torchvision's cache is looked for
    assert "\n" not in message
    assert isinstance(e.value, ConfigError)  # the CLI prints it in one line with exit code 2


def test_cli_offline_exit_code_and_message(tmp_path, offline):
    from click.testing import CliRunner

    from img2img.cli.train import train

    result = CliRunner().invoke(train, ["srgan", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                                        "--scale", "2", "--steps", "4", "--pretrain-steps", "2"])
    assert result.exit_code == 2
    assert "--vgg-weights" in result.output and "--perceptual none" in result.output


def test_bad_vgg_file_names_the_file(tmp_path):
    bad = tmp_path / "not_vgg.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(VGGWeightsUnavailableError, match="not_vgg.pth"):
        SRGAN(_config(tmp_path, vgg_weights=str(bad)))


def test_perceptual_none_phase2_is_adversarial_only(tmp_path, offline):
    cfg = _config(tmp_path, perceptual="none", pretrain_steps=0, steps=2, gan_mode="ragan", val_every=0)
    method = SRGAN(cfg)
    assert method.perceptual is None
    fit(method, train_loader=_batches(2), run_dir=tmp_path / "run", device=torch.device("cpu"), progress=False)
    records = [r for r in _log(tmp_path / "run") if r["kind"] == "train"]
    assert sorted(k for k in records[0] if k.startswith(("g_", "d"))) == ["d", "g_gan"]


def test_adversarial_losses_match_the_formulas():
    real = torch.tensor([[2.0], [0.5]])
    fake = torch.tensor([[-1.0], [1.0]])

    def softplus(x):  # -log(sigmoid(x)) = softplus(-x); BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
        return math.log1p(math.exp(x))

    vanilla_d = (softplus(-2.0) + softplus(-0.5)) / 2 + (softplus(-1.0) + softplus(1.0)) / 2
    assert _discriminator_adv(real, fake, mode="vanilla").item() == pytest.approx(vanilla_d, rel=1e-6)
    assert _generator_adv(fake, None, mode="vanilla").item() == pytest.approx(
        (softplus(1.0) + softplus(-1.0)) / 2, rel=1e-6)
    # Relativistic average: D(x_r, x_f) = C(x_r) - mean C(x_f); mean(fake) = 0, mean(real) = 1.25.
    rel_real = [2.0 - 0.0, 0.5 - 0.0]
    rel_fake = [-1.0 - 1.25, 1.0 - 1.25]
    ragan_d = 0.5 * (sum(softplus(-x) for x in rel_real) / 2 + sum(softplus(x) for x in rel_fake) / 2)
    ragan_g = 0.5 * (sum(softplus(x) for x in rel_real) / 2 + sum(softplus(-x) for x in rel_fake) / 2)
    assert _discriminator_adv(real, fake, mode="ragan").item() == pytest.approx(ragan_d, rel=1e-6)
    assert _generator_adv(fake, real, mode="ragan").item() == pytest.approx(ragan_g, rel=1e-6)


def test_phase_schedules(tmp_path, offline):
    cfg = _config(tmp_path, steps=10, pretrain_steps=4, lr_schedule="linear", lr_decay_start=0.5,
                  perceptual="none")
    method = SRGAN(cfg)
    method.setup(total_steps=10)
    g, d = method.schedules["g"], method.schedules["d"]
    # Phase 1 (4 steps): 1, 1, then decay to 0; phase 2 (6 steps) restarts at 1 and decays after 3.
    assert [g.factor(s) for s in range(4)] == pytest.approx([1, 1, 1, 0.5])
    assert [g.factor(s) for s in range(4, 10)] == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3])
    assert [d.factor(s) for s in range(4, 10)] == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3])


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"arch": "rrdbnet", "scale": 3}, "scale"),
    ({"image_size": 40, "scale": 2}, "multiple of 16"),
    ({"image_size": 30, "scale": 4, "pretrain_steps": 4}, "multiple of scale"),
    ({"perceptual_layer": "relu9_9"}, "relu9_9"),
    ({"gan_mode": "wgan"}, "gan_mode"),
    ({"degradation": "jpegish"}, "degradation"),
])
def test_config_errors(tmp_path, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        _config(tmp_path, **overrides)


def test_degradation_reaches_the_sr_dataset(tmp_path, offline):
    from img2img.training.run import build_loaders

    hr = tmp_path / "data" / "train"
    hr.mkdir(parents=True)
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((64, 64, 3)) * 255).astype(np.uint8)).save(hr / f"{i}.png")
    for kind in ("bicubic", "photo"):
        cfg = _config(tmp_path, data=str(tmp_path / "data"), degradation=kind, num_workers=0, pretrain_steps=4)
        loader, _, _ = build_loaders(SRGAN(cfg), cfg)
        assert loader.dataset.degradation == kind


def test_zero_last_init_starts_at_the_bilinear_skip(tmp_path, offline):
    method = SRGAN(_config(tmp_path, init="zero_last", perceptual="none"))
    lr = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        out = method.nets["g"](lr)
    expected = F.interpolate(lr, scale_factor=SCALE, mode="bilinear", align_corners=False)
    assert torch.allclose(out, expected, atol=1e-6)
    first = next(m for m in method.nets["g"].modules() if isinstance(m, torch.nn.Conv2d))
    # PyTorch's default init: U(+-1/sqrt(27)), std 0.111; BasicSR's Kaiming x 0.1 has std 0.027.
    assert 0.08 < float(first.weight.detach().std()) < 0.14


def test_init_from_starts_the_generator_from_a_model(tmp_path, offline):
    """A finished phase-1 run starts a fresh run's generator (the paper's SRGAN-from-SRResNet);
    other sizes are refused naming both; --resume takes the checkpoint, not the file."""
    first = _config(tmp_path, steps=3, pretrain_steps=3, val_every=0, lr_g=1e-2)
    fit(SRGAN(first), train_loader=_batches(3), run_dir=tmp_path / "run", device=torch.device("cpu"), progress=False)
    trained = load_model(tmp_path / "run")

    second = _config(tmp_path, steps=2, pretrain_steps=0, perceptual="none", val_every=0,
                     init_from=str(tmp_path / "run"), out=str(tmp_path / "gan"))
    method = SRGAN(second)
    method.initialise()
    for k, v in trained.net.state_dict().items():
        assert torch.equal(method.nets["g"].state_dict()[k], v), k
    fit(SRGAN(second), train_loader=_batches(2), run_dir=tmp_path / "gan", device=torch.device("cpu"),
        progress=False)
    assert load_model(tmp_path / "gan").provenance["init_from"] == str(tmp_path / "run")

    wider = _config(tmp_path, num_feat=16, pretrain_steps=4, init_from=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"holds msrresnet\(.*num_feat=8.*but this run trains msrresnet\(.*num_feat=16"):
        SRGAN(wider).initialise()
    with pytest.raises(ConfigError, match="init_from: .*missing"):
        SRGAN(_config(tmp_path, pretrain_steps=4, init_from=str(tmp_path / "missing"))).initialise()

    # Resuming never reads init_from (the file may be gone by then).
    (tmp_path / "run" / "model.safetensors").unlink()
    resumed = _config(tmp_path, steps=3, pretrain_steps=0, perceptual="none", val_every=0,
                      init_from=str(tmp_path / "run"), out=str(tmp_path / "gan"))
    result = fit(SRGAN(resumed), train_loader=_batches(3), run_dir=tmp_path / "gan", device=torch.device("cpu"),
                 progress=False, resume=True)
    assert result.step == 3


def test_init_from_a_basicsr_reference_file(tmp_path, offline):
    """A BasicSR-layout file (``{'params_ema': state_dict}``, e.g. a released MSRResNet) starts the
    generator: its architecture and sizes are detected from the keys, then the weights are copied."""
    torch.manual_seed(3)
    reference = build("msrresnet", scale=SCALE, num_feat=8, num_block=1)
    path = tmp_path / "MSRResNet_x2_basicsr.pth"
    torch.save({"params_ema": reference.state_dict()}, path)
    method = SRGAN(_config(tmp_path, pretrain_steps=4, init_from=str(path)))
    method.initialise()
    for k, v in reference.state_dict().items():
        assert torch.equal(method.nets["g"].state_dict()[k], v), k
