"""CycleGAN (the cycle method): configuration, network wiring, losses, image pool, and that it learns."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from img2img.training.config import ConfigError, build_config
from img2img.training.image_pool import ImagePool
from img2img.training.method import StepContext
from img2img.training.methods import get_method
from img2img.training.methods.cycle import Cycle, CycleConfig, DiscoGAN, DiscoGANConfig
from img2img.training.monitor import grid_image
from tests.helpers import BLUE, CPU, QUIET, RED, check_learned, learn, tinted

TINY = dict(image_size=32, generator="resnet", n_blocks=2, ngf=8, ndf=8, n_layers_d=2, batch_size=2, **QUIET)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


def config(**options) -> CycleConfig:
    return build_config(CycleConfig, ("test", {**TINY, **options}))


def context(method: Cycle, step: int = 0) -> StepContext:
    return StepContext(step=step, total_steps=10, device=CPU, autocast_dtype=None, scaler=None, grad_clip=0.0,
                       optimizers=method.optimizers)


def batch(size: int = 32, n: int = 2) -> dict[str, torch.Tensor]:
    return {"a": tinted(range(n), RED, size), "b": tinted(range(50, 50 + n), BLUE, size)}


def test_defaults_are_the_papers() -> None:
    c = CycleConfig()
    assert (c.generator, c.norm, c.dropout, c.discriminator, c.n_layers_d) == (
        "resnet_9blocks", "instance", False, "patchgan", 3)
    assert (c.gan_loss, c.lambda_cycle, c.lambda_identity, c.cycle_loss, c.pool_size) == ("lsgan", 10.0, 0.5, "l1", 50)
    assert (c.lr, c.beta1, c.beta2, c.lr_schedule, c.lr_decay_start) == (2e-4, 0.5, 0.999, "linear", 0.5)
    d = DiscoGANConfig()
    assert (d.generator, d.discriminator, d.gan_loss, d.cycle_loss) == ("discogan_g", "discogan_d", "vanilla", "l2")
    assert (d.lambda_cycle, d.lambda_identity, d.pool_size, d.image_size) == (1.0, 0.0, 0, 64)


def test_discogan_is_a_preset_not_a_copy() -> None:
    assert get_method("cyclegan") is Cycle and get_method("discogan") is DiscoGAN
    assert issubclass(DiscoGAN, Cycle) and issubclass(DiscoGANConfig, CycleConfig)
    own = {k for k in vars(DiscoGAN) if not k.startswith("_")}
    assert own == {"name", "config_class"}  # no method of its own: the step is Cycle's


def test_reference_network_sizes() -> None:
    m = Cycle(build_config(CycleConfig, ("test", QUIET)))
    count = {k: sum(p.numel() for p in net.parameters()) for k, net in m.nets.items()}
    assert count["g_ab"] == count["g_ba"] == 11_378_179  # reference resnet_9blocks
    # 70x70 PatchGAN on 3 channels, instance norm so every conv has a bias (4x4 kernels).
    widths = [3, 64, 128, 256, 512, 1]
    expected_d = sum(cin * cout * 16 + cout for cin, cout in zip(widths[:-1], widths[1:], strict=True))
    assert count["d_a"] == count["d_b"] == expected_d == 2_764_737
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for net in m.nets.values() for mod in net.modules())


def test_channels_per_domain_and_exports() -> None:
    m = Cycle(config(in_channels=1, out_channels=3, lambda_identity=0.0))
    assert m.nets["g_ab"](torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    assert m.nets["g_ba"](torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert next(m.nets["d_a"].parameters()).shape[1] == 1 and next(m.nets["d_b"].parameters()).shape[1] == 3
    exports = {e.file: e for e in m.exports()}
    assert set(exports) == {"g_ab", "g_ba"}
    assert exports["g_ab"].net == "g_ab" and exports["g_ab"].info == {"direction": "AtoB"}
    assert exports["g_ba"].kwargs["in_channels"] == 3 and exports["g_ba"].info == {"direction": "BtoA"}
    assert exports["g_ab"].arch == "resnet" and exports["g_ab"].kwargs["n_blocks"] == 2


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="lambda_identity > 0 needs as many channels in domain a as in b"):
        config(in_channels=1)
    with pytest.raises(ConfigError, match="image_size 30 must be a multiple of 4 for resnet"):
        config(image_size=30)
    with pytest.raises(ConfigError, match="below the 64 px the discogan_d discriminator needs"):
        config(discriminator="discogan_d")
    with pytest.raises(ConfigError, match="pool_size must be >= 0"):
        config(pool_size=-1)
    with pytest.raises(ConfigError, match="generator must be one of"):
        config(generator="unet")
    with pytest.raises(ConfigError, match="test: unknown option 'lambda_a' for CycleConfig"):
        config(lambda_a=10)


def test_losses_are_wired_to_the_right_networks() -> None:
    """Each returned loss equals the same quantity computed by hand with the networks before the step."""
    m = Cycle(config())
    m.setup(total_steps=10)
    before = copy.deepcopy(m.nets)
    b = batch()
    out = m.train_step(context(m), b)
    a, bb = b["a"] * 2 - 1, b["b"] * 2 - 1
    with torch.no_grad():
        g_ab, g_ba, d_a, d_b = (before[k] for k in ("g_ab", "g_ba", "d_a", "d_b"))
        fake_b, fake_a = g_ab(a), g_ba(bb)
        expected = {
            "gan_ab": (d_b(fake_b) - 1).pow(2).mean(),  # LSGAN: d_b judges the fakes of domain b
            "gan_ba": (d_a(fake_a) - 1).pow(2).mean(),
            "cycle_a": (g_ba(fake_b) - a).abs().mean(),
            "cycle_b": (g_ab(fake_a) - bb).abs().mean(),
            "idt_a": (g_ba(a) - a).abs().mean(),  # g_ba leaves a domain-a image alone
            "idt_b": (g_ab(bb) - bb).abs().mean(),
        }
    assert set(out) == set(expected) | {"d_a", "d_b"}
    for k, v in expected.items():
        torch.testing.assert_close(out[k], v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "hinge", "wgan-gp"])
def test_one_step_updates_all_four_networks(mode: str, monkeypatch) -> None:
    m = Cycle(config(gan_loss=mode, lambda_identity=0.0))
    m.setup(total_steps=10)
    before = {k: [p.clone() for p in net.parameters()] for k, net in m.nets.items()}
    seen: dict[str, bool] = {}
    step_optimizer = StepContext.step_optimizer

    def spy(self, name: str) -> None:
        # The generator update must leave no gradient in the (frozen) discriminators.
        d_grads = [p.grad for k in ("d_a", "d_b") for p in m.nets[k].parameters()]
        seen[name] = all(g is None for g in d_grads) if name == "g" else True
        step_optimizer(self, name)

    monkeypatch.setattr(StepContext, "step_optimizer", spy)
    out = m.train_step(context(m), batch())
    assert seen == {"g": True, "d": True}
    assert set(out) == {"gan_ab", "gan_ba", "cycle_a", "cycle_b", "d_a", "d_b"}  # no identity terms at 0
    assert all(torch.isfinite(v) for v in out.values())
    for k, net in m.nets.items():
        assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), before[k], strict=True)), k
        assert all(p.requires_grad for p in net.parameters()), k


def test_discriminators_get_this_steps_fakes_through_the_pools() -> None:
    m = Cycle(config(pool_size=2, lambda_identity=0.0))
    m.setup(total_steps=10)
    before = copy.deepcopy(m.nets)
    b = batch()
    m.train_step(context(m), b)
    with torch.no_grad():
        fake_b, fake_a = before["g_ab"](b["a"] * 2 - 1), before["g_ba"](b["b"] * 2 - 1)
    # While filling, the pool stores each fake (and passes it on): d_b's pool holds g_ab's fakes.
    torch.testing.assert_close(torch.stack(m.pools["b"].images), fake_b)
    torch.testing.assert_close(torch.stack(m.pools["a"].images), fake_a)


def test_image_pool_follows_the_reference_rule() -> None:
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    assert torch.equal(pool.query(first), first) and len(pool) == 4  # filling: pass through and store
    from_pool = 0
    for i in range(200):
        new = torch.full((1, 3, 2, 2), 100.0 + i)
        kept_before = {float(x[0, 0, 0]) for x in pool.images}
        got = float(pool.query(new)[0, 0, 0, 0])
        if got != 100.0 + i:
            from_pool += 1
            assert got in kept_before and 100.0 + i in {float(x[0, 0, 0]) for x in pool.images}
        assert len(pool) == 4
    assert 70 < from_pool < 130  # probability 1/2
    assert torch.equal(ImagePool(0).query(first), first) and len(ImagePool(0)) == 0

    copy_ = ImagePool(4)
    copy_.load_state_dict(pool.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(copy_.images, pool.images, strict=True))
    with pytest.raises(ValueError, match="holds up to 4 images, this run's pool_size is 5"):
        ImagePool(5).load_state_dict(pool.state_dict())


def test_sample_grid_shows_both_cycles() -> None:
    m = Cycle(config())
    b = batch(n=3)
    pred = m.predict(b, {k: v.eval() for k, v in m.nets.items()})
    assert pred.target is None  # unpaired: no metrics
    assert list(pred.extra) == ["rec_a", "real_b", "fake_a", "rec_b"]
    assert torch.equal(pred.input, b["a"]) and torch.equal(pred.extra["real_b"], b["b"])
    with torch.no_grad():
        fake_a = m.nets["g_ba"](b["b"] * 2 - 1)
    torch.testing.assert_close(pred.extra["fake_a"], (fake_a + 1) / 2)
    grid = grid_image(pred)  # (3, H, W)
    assert grid.shape[-2:] == (3 * 32, 6 * 32)  # real a | fake b | rec a | real b | fake a | rec b
    torch.testing.assert_close(grid[:, 32:64, 96:128], b["b"][1])  # second row, fourth column: real b


@pytest.mark.slow
def test_cyclegan_learns_a_colour_shift(tmp_path) -> None:
    """Tiny ResNet (2 blocks, ngf 8), 32 px, batch 2, 120 steps with the paper's losses and pool."""
    result = learn(Cycle, CycleConfig, size=32, steps=120, tmp_path=tmp_path, generator="resnet", n_blocks=2,
                   n_layers_d=2, batch_size=2)
    check_learned(result)


def test_discogan_gan_loss_is_bce_on_sigmoid() -> None:
    """DiscoGAN's sigmoid + BCE, computed on logits: the same value as the reference formula."""
    m = DiscoGAN(build_config(DiscoGANConfig, ("test", {**QUIET, "ngf": 4, "ndf": 4, "batch_size": 2})))
    m.setup(total_steps=10)
    before = copy.deepcopy(m.nets)
    b = batch(size=64)
    out = m.train_step(context(m), b)
    assert "idt_a" not in out and len(m.pools["a"]) == 0  # no identity loss, no pool
    with torch.no_grad():
        a = b["a"] * 2 - 1
        fake_b = before["g_ab"](a)
        p = torch.sigmoid(before["d_b"](fake_b))
        torch.testing.assert_close(out["gan_ab"], F.binary_cross_entropy(p, torch.ones_like(p)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["cycle_a"], (before["g_ba"](fake_b) - a).pow(2).mean(), rtol=1e-5, atol=1e-6)
