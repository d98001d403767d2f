"""Pix2Pix: configuration, network wiring, one step, and that a tiny model actually learns."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from img2img.checkpoints import load_model
from img2img.training.config import ConfigError, build_config
from img2img.training.loop import fit
from img2img.training.methods.pix2pix import Pix2Pix, Pix2PixConfig
from tests.helpers import smooth_rgb

TINY = dict(image_size=32, ngf=8, ndf=8, tensorboard=False, sample_every=0, val_every=0, checkpoint_every=0)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


def config(**options) -> Pix2PixConfig:
    return build_config(Pix2PixConfig, ("test", {**TINY, **options}))


class PermutedChannels(Dataset):
    """Smooth photo-like images ``a`` and ``b`` = ``a`` with its channels permuted (R,G,B -> B,R,G)."""

    def __init__(self, n: int, first_seed: int, size: int = 32) -> None:
        self.a = [
            torch.from_numpy(smooth_rgb(size, size, seed=first_seed + i)).permute(2, 0, 1).float() / 255
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"a": self.a[i], "b": self.a[i][[2, 0, 1]]}


@pytest.mark.parametrize(("size", "depth"), [(256, 8), (512, 8), (128, 7), (64, 6), (32, 5), (96, 5)])
def test_unet_depth_follows_the_image_size(size: int, depth: int) -> None:
    assert config(image_size=size).unet_depth() == depth


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="use a multiple of 32"):
        config(image_size=48)
    with pytest.raises(ConfigError, match="not a multiple of 2\\*\\*num_downs = 128"):
        config(image_size=64, num_downs=7)
    with pytest.raises(ConfigError, match="gan_loss must be one of vanilla, lsgan, hinge, wgan-gp"):
        config(gan_loss="nsgan")
    with pytest.raises(ConfigError, match="test: unknown option 'l1' for Pix2PixConfig"):
        config(l1=10)
    with pytest.raises(ConfigError, match="option 'ngf' must be int, got '8'"):
        config(ngf="8")
    with pytest.raises(ConfigError, match="diff_augment: unknown op\\(s\\) blur"):
        config(diff_augment="color,blur")


def test_diff_augment_shares_one_draw_between_input_and_output() -> None:
    m = Pix2Pix(config(diff_augment="translation"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    stacked = m._d_input(x, x)
    assert torch.equal(stacked[:, :3], stacked[:, 3:])  # same shift for both halves
    assert not torch.equal(stacked[:, :3], x)  # but shifted


def test_networks_follow_the_config() -> None:
    m = Pix2Pix(config(image_size=64, ngf=4, ndf=6, in_channels=1, out_channels=3))
    g, d = m.nets["g"], m.nets["d"]
    assert m.g_kwargs["num_downs"] == 6 and m.g_kwargs["dropout"] is True
    assert g(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    first_d = next(p for p in d.parameters() if p.dim() == 4)
    assert first_d.shape == (6, 4, 4, 4)  # conditioned on the input: 1 + 3 channels in, ndf out
    assert m.exports()[0].kwargs == m.g_kwargs and m.exports()[0].file == "model"


def test_direction_swaps_input_and_target() -> None:
    batch = {"a": torch.zeros(1, 3, 32, 32), "b": torch.ones(1, 3, 32, 32)}
    for direction, source in (("AtoB", 0.0), ("BtoA", 1.0)):
        m = Pix2Pix(config(direction=direction))
        pred = m.predict(batch, {"g": m.nets["g"].eval()})
        assert float(pred.input.mean()) == source and float(pred.target.mean()) == 1 - source


@pytest.mark.parametrize(("mode", "policy"), [("vanilla", ""), ("lsgan", ""), ("hinge", ""), ("wgan-gp", ""),
                                              ("vanilla", "color,translation,cutout")])
def test_one_step_updates_both_networks(mode: str, policy: str) -> None:
    from img2img.training.method import StepContext

    m = Pix2Pix(config(gan_loss=mode, diff_augment=policy))
    m.setup(total_steps=10)
    before = {k: [p.clone() for p in net.parameters()] for k, net in m.nets.items()}
    ctx = StepContext(step=0, total_steps=10, device=torch.device("cpu"), autocast_dtype=None, scaler=None,
                      grad_clip=0.0, optimizers=m.optimizers)
    batch = PermutedChannels(2, 0)[0]
    out = m.train_step(ctx, {k: v[None] for k, v in batch.items()})
    assert set(out) == {"g_gan", "g_l1", "d_real", "d_fake"}
    assert all(torch.isfinite(v) for v in out.values())
    for k, net in m.nets.items():
        assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), before[k], strict=True)), k
        assert all(p.requires_grad for p in net.parameters())  # D unfrozen again after the G update


@pytest.mark.slow
def test_pix2pix_learns_a_channel_permutation(tmp_path, monkeypatch) -> None:
    """300 steps of a tiny pix2pix on CPU: held-out L1 falls well below the identity baseline."""
    torch.manual_seed(0)
    method = Pix2Pix(config(steps=300, batch_size=1, lr_schedule="constant", log_every=50))
    train = DataLoader(PermutedChannels(32, first_seed=0), batch_size=1, shuffle=True)
    fit(method, train_loader=train, run_dir=tmp_path, device=torch.device("cpu"), progress=False)

    held_out = PermutedChannels(8, first_seed=1000)
    a = torch.stack([held_out[i]["a"] for i in range(8)])
    b = torch.stack([held_out[i]["b"] for i in range(8)])
    with torch.no_grad():
        out = (method.nets["g"].eval()(a * 2 - 1) + 1) / 2
    identity_l1 = float((a - b).abs().mean())
    model_l1 = float((out - b).abs().mean())
    assert identity_l1 > 0.1
    assert model_l1 < 0.4 * identity_l1, (model_l1, identity_l1)


def test_export_round_trip(tmp_path) -> None:
    """The run directory's model.safetensors loads as the trained (EMA) generator, output for output."""
    torch.manual_seed(0)
    method = Pix2Pix(config(steps=6, ema_decay=0.9, direction="BtoA", checkpoint_every=3))
    train = DataLoader(PermutedChannels(4, first_seed=0), batch_size=2, shuffle=True)
    fit(method, train_loader=train, run_dir=tmp_path, device=torch.device("cpu"), progress=False,
        provenance={"command": "pytest"})

    desc = load_model(tmp_path)
    assert (desc.arch, desc.value_range, desc.scale, desc.size_multiple) == ("unet", (-1.0, 1.0), 1, 32)
    assert desc.kwargs["num_downs"] == 5 and desc.kwargs["ngf"] == 8
    prov = desc.provenance
    assert (prov["method"], prov["step"], prov["direction"], prov["ema"], prov["command"]) == (
        "pix2pix", 6, "BtoA", True, "pytest")
    x = torch.rand(2, 3, 64, 32) * 2 - 1
    payload = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    reference = Pix2Pix(config(direction="BtoA")).nets["g"]
    reference.load_state_dict(payload["ema"]["g"]["module"])
    with torch.no_grad():
        exported = desc(x)
        torch.testing.assert_close(exported, reference.eval()(x), rtol=0, atol=0)
        live = method.nets["g"].eval()(x)
    assert float((live - exported).abs().max()) > 1e-6  # EMA really differs from the live weights
