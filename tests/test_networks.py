"""Networks: reference parameter counts, reference state-dict keys, shapes, size checks, gradients.

Reference figures are not taken from our own code: the pix2pix/CycleGAN counts are those of the
reference repository, junyanz/pytorch-CycleGAN-and-pix2pix (the networks of its models/networks.py
built at default sizes, parameters counted); the others are summed by hand from the papers' /
BasicSR's layer lists in the tests below, and expected key lists are written out from the reference
module order.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from img2img.networks import build, get_spec, has_instance_norm, init_weights, known_names
from img2img.networks.patchgan import patchgan_receptive_field
from img2img.networks.registry import ARCHITECTURES, UnknownArchitectureError


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    """Parameters of a k x k convolution (also of a transposed one)."""
    return cin * cout * k * k + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def run(net: nn.Module, b: int, c: int, h: int, w: int) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(torch.randn(b, c, h, w))


def assert_gradients_flow(net: nn.Module, x: torch.Tensor) -> None:
    """Every parameter gets a finite, not-all-zero gradient from a scalar loss on the output."""
    net.train()
    net.zero_grad()
    out = net(x)
    (out.float() ** 2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}"


# --- reference parameter counts ------------------------------------------------------------------

# From REFERENCE_FACTS.md (junyanz/pytorch-CycleGAN-and-pix2pix at ngf = ndf = 64, RGB).
JUNYANZ_COUNTS = [
    ("resnet_9blocks", {}, 11_378_179),
    ("resnet_6blocks", {}, 7_837_699),
    ("unet_256", {}, 54_413_955),
    ("unet_128", {}, 41_828_995),
    ("patchgan", {"in_channels": 6}, 2_768_705),  # pix2pix 'basic' D sees input and output: 6 channels
    ("pixel", {"in_channels": 6}, 9_024),
]


@pytest.mark.parametrize(("name", "kwargs", "expected"), JUNYANZ_COUNTS, ids=[c[0] for c in JUNYANZ_COUNTS])
def test_parameter_count_matches_junyanz_reference(name: str, kwargs: dict, expected: int) -> None:
    assert n_params(build(name, **kwargs)) == expected


# --- reference state-dict keys -------------------------------------------------------------------

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{k}" for k in BN_KEYS]


def test_resnet_9blocks_keys_match_reference_layout() -> None:
    # Reference ResnetGenerator (instance norm: convs with bias, no norm tensors):
    # model.1 stem conv, model.4 / model.7 down convs, model.10..18 blocks (conv_block.1 and .5),
    # model.19 / model.22 transposed convs, model.26 output conv.
    expected = []
    for i in (1, 4, 7):
        expected += [f"model.{i}.weight", f"model.{i}.bias"]
    for i in range(10, 19):
        for j in (1, 5):
            expected += [f"model.{i}.conv_block.{j}.weight", f"model.{i}.conv_block.{j}.bias"]
    for i in (19, 22, 26):
        expected += [f"model.{i}.weight", f"model.{i}.bias"]
    sd = build("resnet_9blocks").state_dict()
    assert list(sd) == expected
    assert sd["model.1.weight"].shape == (64, 3, 7, 7)
    assert sd["model.10.conv_block.5.weight"].shape == (256, 256, 3, 3)
    assert sd["model.19.weight"].shape == (256, 128, 3, 3)  # ConvTranspose: (in, out, k, k)
    assert sd["model.26.weight"].shape == (3, 64, 7, 7)


def test_resnet_batch_norm_and_dropout_keys() -> None:
    # Batch norm: convs before a norm lose their bias, norms at model.2 / model.5 ...; dropout sits
    # after the block's first ReLU, pushing its second conv from index 5 to 6.
    keys = list(build("resnet", n_blocks=1, norm="batch", dropout=True, ngf=8).state_dict())
    expected = ["model.1.weight", *_bn_keys("model.2"), "model.4.weight", *_bn_keys("model.5")]
    expected += ["model.7.weight", *_bn_keys("model.8")]
    expected += ["model.10.conv_block.1.weight", *_bn_keys("model.10.conv_block.2")]
    expected += ["model.10.conv_block.6.weight", *_bn_keys("model.10.conv_block.7")]
    expected += ["model.11.weight", *_bn_keys("model.12"), "model.14.weight", *_bn_keys("model.15")]
    expected += ["model.18.weight", "model.18.bias"]
    assert keys == expected


def test_unet_keys_match_reference_nesting() -> None:
    # num_downs=5: outermost(down conv 0, submodule 1, up conv 3) > three middle blocks
    # (down conv 1, norm 2, submodule 3, up conv 5, norm 6) > innermost (down conv 1, up conv 3, norm 4).
    expected = ["model.model.0.weight"]
    prefix = "model.model.1.model"
    tail: list[str] = []
    for _ in range(3):
        expected += [f"{prefix}.1.weight", *_bn_keys(f"{prefix}.2")]
        tail = [f"{prefix}.5.weight", *_bn_keys(f"{prefix}.6"), *tail]
        prefix = f"{prefix}.3.model"
    expected += [f"{prefix}.1.weight", f"{prefix}.3.weight", *_bn_keys(f"{prefix}.4")]
    expected += tail
    expected += ["model.model.3.weight", "model.model.3.bias"]
    assert sorted(build("unet", num_downs=5, ngf=4).state_dict()) == sorted(expected)


def test_unet_256_known_reference_keys_and_shapes() -> None:
    sd = build("unet_256").state_dict()
    # 8 down + 8 up convs; batch norms after 6 down convs (not outermost/innermost) and 7 up convs
    # (not outermost); the outermost up-conv has a bias.
    assert len(sd) == 8 * 2 + (6 + 7) * 5 + 1
    assert sd["model.model.0.weight"].shape == (64, 3, 4, 4)
    assert sd["model.model.1.model.2.running_mean"].shape == (128,)
    assert sd["model.model.3.weight"].shape == (128, 3, 4, 4)  # ConvTranspose: (in, out, k, k)
    assert sd["model.model.3.bias"].shape == (3,)


def test_patchgan_and_pixel_keys() -> None:
    keys = list(build("patchgan", ndf=4).state_dict())
    expected = ["model.0.weight", "model.0.bias"]
    for conv_i, norm_i in ((2, 3), (5, 6), (8, 9)):
        expected += [f"model.{conv_i}.weight", *_bn_keys(f"model.{norm_i}")]
    expected += ["model.11.weight", "model.11.bias"]
    assert keys == expected

    keys = list(build("patchgan", ndf=4, norm="instance").state_dict())
    expected = [f"model.{i}.{k}" for i in (0, 2, 5, 8, 11) for k in ("weight", "bias")]
    assert keys == expected

    keys = list(build("pixel", ndf=4).state_dict())
    assert keys == ["net.0.weight", "net.0.bias", "net.2.weight", *_bn_keys("net.3"), "net.5.weight"]


# --- shapes, size rules, gradients ---------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("h", "w"), [(16, 16), (24, 40)])
def test_resnet_shapes(channels: int, h: int, w: int) -> None:
    g = build("resnet", n_blocks=2, ngf=8, in_channels=channels, out_channels=channels)
    y = run(g, 2, channels, h, w)
    assert y.shape == (2, channels, h, w)
    assert y.abs().max() <= 1.0  # tanh


def test_resnet_rejects_sizes_it_cannot_restore() -> None:
    g = build("resnet", n_blocks=1, ngf=4)
    with pytest.raises(ValueError, match="multiple of 4"):
        run(g, 1, 3, 18, 16)
    with pytest.raises(ValueError, match="minimum side 8"):
        run(g, 1, 3, 4, 4)
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        run(g, 1, 1, 16, 16)


@pytest.mark.parametrize(("num_downs", "h", "w"), [(5, 32, 32), (5, 64, 32), (6, 64, 64), (7, 128, 128)])
@pytest.mark.parametrize("channels", [1, 3])
def test_unet_shapes_for_each_depth(num_downs: int, h: int, w: int, channels: int) -> None:
    g = build("unet", num_downs=num_downs, ngf=4, in_channels=channels, out_channels=channels)
    assert g.size_multiple == 2**num_downs == g.min_size
    y = run(g, 1, channels, h, w)
    assert y.shape == (1, channels, h, w)


def test_unet_256_forward_at_256() -> None:
    g = build("unet_256", ngf=16)
    assert run(g, 1, 3, 256, 256).shape == (1, 3, 256, 256)


def test_unet_rejects_unsupported_depth_for_input() -> None:
    g = build("unet", num_downs=6, ngf=4)
    with pytest.raises(ValueError, match=r"32x32 is smaller than the minimum side 64"):
        run(g, 1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"96x64 is not a multiple of 64"):
        run(g, 1, 3, 96, 64)
    with pytest.raises(ValueError, match="num_downs >= 5"):
        build("unet", num_downs=4)


def test_unet_dropout_only_changes_training_mode_output() -> None:
    g = build("unet", num_downs=6, ngf=4, dropout=True)
    assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == 1  # num_downs - 5 levels
    x = torch.randn(2, 3, 64, 64)
    g.eval()
    with torch.no_grad():
        assert torch.equal(g(x), g(x))
        g.train()
        assert not torch.equal(g(x), g(x))


def test_patchgan_output_grid_and_receptive_field() -> None:
    d = build("patchgan", ndf=4, norm="none")
    assert run(d, 2, 3, 256, 256).shape == (2, 1, 30, 30)
    assert run(d, 1, 3, 24, 24).shape == (1, 1, 1, 1)  # the documented minimum side
    assert patchgan_receptive_field(3) == 70
    # Measured: the input pixels that influence one central score span 70 x 70.
    for m in d.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 0.01)
            nn.init.zeros_(m.bias) if m.bias is not None else None
    x = torch.ones(1, 3, 128, 128, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = (x.grad[0].abs().sum(0).sum(1) > 0).nonzero()
    cols = (x.grad[0].abs().sum(0).sum(0) > 0).nonzero()
    assert int(rows.max() - rows.min() + 1) == 70
    assert int(cols.max() - cols.min() + 1) == 70


@pytest.mark.parametrize("n_layers", [1, 2, 4])
def test_patchgan_other_depths(n_layers: int) -> None:
    d = build("patchgan", ndf=4, n_layers=n_layers, in_channels=1)
    side = 3 * 2**n_layers
    assert d.min_size == side
    assert run(d, 1, 1, side * 2, side * 2).shape == (1, 1, 4, 4)


def test_pixel_discriminator_keeps_resolution() -> None:
    assert run(build("pixel", ndf=4, in_channels=1), 2, 1, 7, 5).shape == (2, 1, 7, 5)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("resnet", {"n_blocks": 1, "ngf": 4}, (2, 3, 16, 16)),
        ("unet", {"num_downs": 5, "ngf": 4}, (2, 3, 32, 32)),
        ("patchgan", {"ndf": 4}, (2, 3, 32, 32)),
        ("pixel", {"ndf": 4}, (2, 3, 8, 8)),
    ],
)
def test_gradients_flow(name: str, kwargs: dict, shape: tuple) -> None:
    assert_gradients_flow(build(name, **kwargs), torch.randn(*shape))


# --- registry, norms, init -----------------------------------------------------------------------


def test_registry_names_roles_and_ranges() -> None:
    assert {
        "unet",
        "unet_128",
        "unet_256",
        "resnet",
        "resnet_6blocks",
        "resnet_9blocks",
        "patchgan",
        "pixel",
    } <= set(known_names())
    for name in ("patchgan", "pixel"):
        assert get_spec(name).role == "discriminator"
    for name in ("unet", "unet_128", "unet_256", "resnet", "resnet_6blocks", "resnet_9blocks"):
        spec = get_spec(name)
        assert spec.role == "generator"
        assert spec.value_range == (-1.0, 1.0)
    assert get_spec("unet_128").defaults["num_downs"] == 7
    assert get_spec("unet_256").defaults["num_downs"] == 8
    assert get_spec("resnet_6blocks").defaults["n_blocks"] == 6
    assert get_spec("resnet").defaults["norm"] == "instance"
    assert get_spec("unet").defaults["norm"] == "batch"


def test_unknown_architecture_lists_known_names() -> None:
    with pytest.raises(UnknownArchitectureError) as err:
        build("unet_512")
    assert "unknown architecture 'unet_512'" in str(err.value)
    assert "resnet_9blocks" in str(err.value) and "unet_256" in str(err.value)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_builders_are_keyword_only_and_accept_their_defaults(name: str) -> None:
    spec = get_spec(name)
    params = inspect.signature(spec.builder).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), name
    assert set(spec.defaults) <= {p.name for p in params}
    assert spec.summary


def test_generators_expose_size_attributes() -> None:
    for name, kwargs in [("resnet", {"n_blocks": 1, "ngf": 4}), ("unet", {"num_downs": 6, "ngf": 4})]:
        g = build(name, **kwargs, in_channels=1, out_channels=3)
        for attr in ("in_channels", "out_channels", "scale", "size_multiple", "min_size"):
            assert type(getattr(g, attr)) is int, (name, attr)
        assert (g.in_channels, g.out_channels, g.scale) == (1, 3, 1)
    assert build("resnet", n_blocks=1, ngf=4).size_multiple == 4


def test_norm_by_name() -> None:
    assert has_instance_norm(build("resnet", n_blocks=1, ngf=4))
    assert not has_instance_norm(build("resnet", n_blocks=1, ngf=4, norm="batch"))
    assert not has_instance_norm(build("unet", num_downs=5, ngf=4))
    g = build("unet", num_downs=5, ngf=4, norm="instance")
    assert has_instance_norm(g)
    inorms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert inorms and all(not m.affine and not m.track_running_stats for m in inorms)
    assert not any(
        isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))
        for m in build("resnet", norm="none", ngf=4, n_blocks=1).modules()
    )
    with pytest.raises(ValueError, match="unknown norm 'group'; known: batch, instance, none"):
        build("resnet", norm="group")


def test_init_weights_normal_follows_reference_convention() -> None:
    g = build("unet", num_downs=5, ngf=16)
    assert init_weights(g, "normal", gain=0.02) is g
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.mean().abs() < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert all(m.bias is None or not m.bias.any() for m in convs)
    bn_w = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn_w.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn_w.std().item() == pytest.approx(0.02, rel=0.2)


@pytest.mark.parametrize("scheme", ["xavier", "kaiming", "orthogonal"])
def test_init_weights_other_schemes(scheme: str) -> None:
    torch.manual_seed(0)
    layer = nn.Conv2d(64, 32, 3)
    init_weights(nn.Sequential(layer), scheme, gain=0.5)
    w = layer.weight.detach().flatten(1)  # (32, 576)
    fan_in, fan_out = 64 * 9, 32 * 9
    if scheme == "xavier":
        assert w.std().item() == pytest.approx(0.5 * (2 / (fan_in + fan_out)) ** 0.5, rel=0.05)
    elif scheme == "kaiming":
        assert w.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    else:
        assert torch.allclose(w @ w.T, 0.25 * torch.eye(32), atol=1e-5)
    with pytest.raises(ValueError, match="unknown init scheme 'uniform'"):
        init_weights(layer, "uniform")


# --- super-resolution: RRDBNet (ESRGAN / Real-ESRGAN) and MSRResNet (BasicSR) ---------------------


def rrdbnet_reference_count(*, in_ch: int, out_ch: int, scale: int, nf: int, nb: int, gc: int) -> int:
    """BasicSR rrdbnet_arch.py layer list, summed by hand: every conv is 3x3 with bias."""
    rdb = sum(conv(nf + k * gc, gc, 3) for k in range(4)) + conv(nf + 4 * gc, nf, 3)
    first_in = in_ch * {4: 1, 2: 4, 1: 16}[scale]  # pixel-unshuffle folds x2 / x4 into channels
    return conv(first_in, nf, 3) + nb * 3 * rdb + 4 * conv(nf, nf, 3) + conv(nf, out_ch, 3)


def msrresnet_reference_count(*, ch: int, scale: int, nf: int, nb: int) -> int:
    """BasicSR srresnet_arch.py layer list, summed by hand: 3x3 convs with bias."""
    up = conv(nf, nf * scale * scale, 3) if scale in (2, 3) else 2 * conv(nf, nf * 4, 3)
    return conv(ch, nf, 3) + nb * 2 * conv(nf, nf, 3) + up + conv(nf, nf, 3) + conv(nf, ch, 3)


def test_rrdbnet_count_matches_reference_facts_and_hand_count() -> None:
    # REFERENCE_FACTS.md: RRDBNet(num_feat=64, num_block=23, num_grow_ch=32, scale=4) has 16,697,987.
    assert rrdbnet_reference_count(in_ch=3, out_ch=3, scale=4, nf=64, nb=23, gc=32) == 16_697_987
    assert n_params(build("rrdbnet")) == 16_697_987


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_count_other_scales(scale: int) -> None:
    net = build(
        "rrdbnet", scale=scale, num_feat=16, num_block=2, num_grow_ch=8, in_channels=1, out_channels=1
    )
    assert n_params(net) == rrdbnet_reference_count(in_ch=1, out_ch=1, scale=scale, nf=16, nb=2, gc=8)


def test_msrresnet_count_matches_hand_count() -> None:
    # Defaults (64 features, 16 blocks, x4): 1,517,571, BasicSR's "1.52M" MSRResNet.
    assert msrresnet_reference_count(ch=3, scale=4, nf=64, nb=16) == 1_517_571
    for scale in (2, 3, 4):
        assert n_params(build("msrresnet", scale=scale)) == msrresnet_reference_count(
            ch=3, scale=scale, nf=64, nb=16
        )


def test_rrdbnet_keys_match_basicsr() -> None:
    expected = ["conv_first.weight", "conv_first.bias"]
    for i in range(2):
        for j in (1, 2, 3):
            for k in range(1, 6):
                expected += [f"body.{i}.rdb{j}.conv{k}.weight", f"body.{i}.rdb{j}.conv{k}.bias"]
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
        expected += [f"{name}.weight", f"{name}.bias"]
    sd = build("rrdbnet", num_block=2, num_feat=16, num_grow_ch=8).state_dict()
    assert list(sd) == expected
    assert sd["body.1.rdb3.conv5.weight"].shape == (16, 16 + 4 * 8, 3, 3)
    # x2 / x1 fold 2x2 / 4x4 pixels into channels before conv_first (Real-ESRGAN x2 files: 12 channels).
    assert build("rrdbnet", scale=2, num_block=1).state_dict()["conv_first.weight"].shape == (64, 12, 3, 3)
    assert build("rrdbnet", scale=1, num_block=1).state_dict()["conv_first.weight"].shape == (64, 48, 3, 3)


def test_msrresnet_keys_match_basicsr() -> None:
    def keys(names: list[str]) -> list[str]:
        return [f"{n}.{p}" for n in names for p in ("weight", "bias")]

    body = ["body.0.conv1", "body.0.conv2", "body.1.conv1", "body.1.conv2"]
    x4 = build("msrresnet", num_block=2, num_feat=8)
    assert list(x4.state_dict()) == keys(["conv_first", *body, "upconv1", "upconv2", "conv_hr", "conv_last"])
    x3 = build("msrresnet", num_block=2, num_feat=8, scale=3)
    assert list(x3.state_dict()) == keys(["conv_first", *body, "upconv1", "conv_hr", "conv_last"])
    assert x3.state_dict()["upconv1.weight"].shape == (8 * 9, 8, 3, 3)


def test_pixel_unshuffle_channel_order_is_basicsr() -> None:
    # BasicSR's pixel_unshuffle: view (b, c, h, s, w, s), permute to (b, c, s, s, h, w).
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    ref = x.view(2, 3, 4, 2, 6, 2).permute(0, 1, 3, 5, 2, 4).reshape(2, 12, 4, 6)
    assert torch.equal(torch.nn.functional.pixel_unshuffle(x, 2), ref)


@pytest.mark.parametrize(("scale", "h", "w"), [(4, 5, 7), (4, 8, 8), (2, 6, 10), (1, 8, 12)])
@pytest.mark.parametrize("channels", [1, 3])
def test_rrdbnet_shapes(scale: int, h: int, w: int, channels: int) -> None:
    net = build(
        "rrdbnet",
        scale=scale,
        num_feat=8,
        num_block=1,
        num_grow_ch=4,
        in_channels=channels,
        out_channels=channels,
    )
    assert (net.scale, net.size_multiple, net.min_size) == (scale, 4 // scale, 4 // scale)
    assert run(net, 2, channels, h, w).shape == (2, channels, h * scale, w * scale)


def test_rrdbnet_rejects_bad_scale_and_sizes() -> None:
    with pytest.raises(ValueError, match="RRDBNet supports scale 1, 2, 4, got 3"):
        build("rrdbnet", scale=3)
    net = build("rrdbnet", scale=2, num_feat=8, num_block=1, num_grow_ch=4)
    with pytest.raises(ValueError, match="not a multiple of 2"):
        run(net, 1, 3, 7, 8)


@pytest.mark.parametrize(("scale", "h", "w"), [(2, 5, 7), (3, 6, 4), (4, 3, 9)])
@pytest.mark.parametrize("channels", [1, 3])
def test_msrresnet_shapes(scale: int, h: int, w: int, channels: int) -> None:
    net = build(
        "msrresnet", scale=scale, num_feat=8, num_block=1, in_channels=channels, out_channels=channels
    )
    assert run(net, 2, channels, h, w).shape == (2, channels, h * scale, w * scale)


def test_msrresnet_with_zero_residual_is_bilinear_upsampling() -> None:
    net = build("msrresnet", scale=4, num_feat=8, num_block=1)
    for p in net.parameters():
        nn.init.zeros_(p)
    net.eval()
    with torch.no_grad():
        flat = net(torch.full((1, 3, 6, 5), 0.3))
        # A horizontal ramp stays a ramp inside the image (bilinear, half-pixel centres).
        y = net(torch.arange(8, dtype=torch.float32).repeat(1, 3, 8, 1))  # (1, 3, 8, 8) in
    assert torch.allclose(flat, torch.full((1, 3, 24, 20), 0.3))
    assert torch.allclose(y[0, 0, 0, 2:30].diff(), torch.full((27,), 0.25), atol=1e-5)
    with pytest.raises(ValueError, match="in_channels .* must equal out_channels"):
        build("msrresnet", in_channels=1, out_channels=3)
    with pytest.raises(ValueError, match="MSRResNet supports scale 2, 3, 4, got 8"):
        build("msrresnet", scale=8)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("rrdbnet", {"scale": 2, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}, (2, 3, 8, 8)),
        ("msrresnet", {"scale": 3, "num_feat": 8, "num_block": 1}, (2, 3, 6, 6)),
    ],
)
def test_sr_gradients_flow(name: str, kwargs: dict, shape: tuple) -> None:
    assert_gradients_flow(build(name, **kwargs), torch.randn(*shape))


def test_sr_registry_entries() -> None:
    for name in ("rrdbnet", "msrresnet"):
        spec = get_spec(name)
        assert (spec.role, spec.value_range, spec.defaults["scale"]) == ("generator", (0.0, 1.0), 4)
    assert get_spec("rrdbnet").defaults == {
        "in_channels": 3,
        "out_channels": 3,
        "scale": 4,
        "num_feat": 64,
        "num_block": 23,
        "num_grow_ch": 32,
    }


# --- SRGAN: SRResNet generator and VGG-style discriminator (Ledig et al. 2017) ----------------------


def srresnet_paper_count(*, ch: int, scale: int, nf: int, nb: int) -> int:
    """Ledig et al. Fig. 4, summed by hand: k9n64 + PReLU; B x (k3n64, BN, PReLU, k3n64, BN);
    k3n64 + BN; per x2 stage k3n256 + shuffle + PReLU (x3: k3n576); k9n3. Convs followed by BN
    have no bias; each PReLU has one slope."""
    head = conv(ch, nf, 9) + 1
    block = 2 * conv(nf, nf, 3, bias=False) + 2 * bn(nf) + 1
    trunk_end = conv(nf, nf, 3, bias=False) + bn(nf)
    stages = [2, 2] if scale == 4 else [scale]
    up = sum(conv(nf, nf * f * f, 3) + 1 for f in stages)
    return head + nb * block + trunk_end + up + conv(nf, ch, 9)


def srgan_d_paper_count(*, ch: int, ndf: int, input_size: int) -> int:
    """Ledig et al. Fig. 4: k3n64s1 + LReLU; conv-BN-LReLU stages n64s2, n128s1, n128s2, n256s1,
    n256s2, n512s1, n512s2; dense 1024; dense 1."""
    widths = [ndf, ndf, 2 * ndf, 2 * ndf, 4 * ndf, 4 * ndf, 8 * ndf, 8 * ndf]
    total = conv(ch, ndf, 3)
    for cin, cout in zip(widths[:-1], widths[1:], strict=True):
        total += conv(cin, cout, 3, bias=False) + bn(cout)
    flat = 8 * ndf * (input_size // 16) ** 2  # four stride-2 stages
    return total + flat * 1024 + 1024 + 1024 + 1


def test_srresnet_and_srgan_d_counts_match_paper_layer_lists() -> None:
    assert srresnet_paper_count(ch=3, scale=4, nf=64, nb=16) == 1_547_350
    for scale in (2, 3, 4):
        assert n_params(build("srresnet", scale=scale)) == srresnet_paper_count(
            ch=3, scale=scale, nf=64, nb=16
        )
    assert srgan_d_paper_count(ch=3, ndf=64, input_size=96) == 23_563_649
    assert n_params(build("srgan_d")) == 23_563_649
    assert n_params(build("srgan_d", input_size=128, ndf=16)) == srgan_d_paper_count(
        ch=3, ndf=16, input_size=128
    )


def test_srresnet_and_srgan_d_keys() -> None:
    keys = list(build("srresnet", num_block=1, num_feat=8, scale=3).state_dict())
    expected = ["conv_first.weight", "conv_first.bias", "act_first.weight", "body.0.conv1.weight"]
    expected += [*_bn_keys("body.0.bn1"), "body.0.act.weight", "body.0.conv2.weight", *_bn_keys("body.0.bn2")]
    expected += ["conv_body.weight", *_bn_keys("bn_body"), "upsample.0.conv.weight", "upsample.0.conv.bias"]
    expected += ["upsample.0.act.weight", "conv_last.weight", "conv_last.bias"]
    assert keys == expected
    keys = list(build("srgan_d", ndf=4, input_size=16).state_dict())
    expected = ["conv_first.weight", "conv_first.bias"]
    for i in range(7):
        expected += [f"blocks.{i}.conv.weight", *_bn_keys(f"blocks.{i}.bn")]
    expected += ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert keys == expected


@pytest.mark.parametrize(("scale", "h", "w"), [(2, 5, 7), (3, 6, 4), (4, 3, 9)])
@pytest.mark.parametrize("channels", [1, 3])
def test_srresnet_shapes(scale: int, h: int, w: int, channels: int) -> None:
    net = build("srresnet", scale=scale, num_feat=8, num_block=2, in_channels=channels, out_channels=channels)
    assert (net.scale, net.size_multiple, net.min_size) == (scale, 1, 1)
    assert run(net, 2, channels, h, w).shape == (2, channels, h * scale, w * scale)


@pytest.mark.parametrize("channels", [1, 3])
def test_srgan_d_shapes_and_size_check(channels: int) -> None:
    d = build("srgan_d", ndf=4, input_size=32, in_channels=channels)
    assert run(d, 3, channels, 32, 32).shape == (3, 1)
    with pytest.raises(ValueError, match="built for 32x32 crops"):
        run(d, 1, channels, 48, 48)
    with pytest.raises(ValueError, match="multiple of 16, got 40"):
        build("srgan_d", input_size=40)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("srresnet", {"scale": 4, "num_feat": 8, "num_block": 2}, (2, 3, 6, 6)),
        ("srgan_d", {"ndf": 4, "input_size": 32}, (2, 3, 32, 32)),
    ],
)
def test_srgan_gradients_flow(name: str, kwargs: dict, shape: tuple) -> None:
    assert_gradients_flow(build(name, **kwargs), torch.randn(*shape))


def test_srgan_registry_entries() -> None:
    assert get_spec("srresnet").role == "generator"
    assert get_spec("srresnet").value_range == (0.0, 1.0)
    assert get_spec("srgan_d").role == "discriminator"
    assert get_spec("srgan_d").defaults["input_size"] == 96


# --- DiscoGAN (Kim et al. 2017; layer list of SKTBrain/DiscoGAN discogan/model.py) ------------------


def test_discogan_counts_match_reference_layer_list() -> None:
    # Generator: 4x4 bias-free convs 3-64-128-256-512 (BN after all but the first), transposed
    # 512-256-128-64-3 (BN after all but the last). Discriminator: convs 3-64-128-256-512 with BN
    # after 2..4, then a 4x4 512-1 conv.
    g = conv(3, 64, 4, False) + conv(64, 128, 4, False) + conv(128, 256, 4, False) + conv(256, 512, 4, False)
    g += conv(512, 256, 4, False) + conv(256, 128, 4, False) + conv(128, 64, 4, False) + conv(64, 3, 4, False)
    g += bn(128) + bn(256) + bn(512) + bn(256) + bn(128) + bn(64)
    assert g == 5_513_856
    assert n_params(build("discogan_g")) == g
    d = conv(3, 64, 4, False) + conv(64, 128, 4, False) + conv(128, 256, 4, False) + conv(256, 512, 4, False)
    d += conv(512, 1, 4, False) + bn(128) + bn(256) + bn(512)
    assert d == 2_765_568
    assert n_params(build("discogan_d")) == d


def test_discogan_keys_follow_reference_names() -> None:
    keys = list(build("discogan_g", ngf=4).state_dict())
    # main.N: convs at 0, 2, 5, 8; transposed convs at 11, 14, 17, 20; BN right after 2..17.
    expected = ["main.0.weight"]
    for i in (2, 5, 8, 11, 14, 17):
        expected += [f"main.{i}.weight", *_bn_keys(f"main.{i + 1}")]
    expected += ["main.20.weight"]
    assert keys == expected
    keys = list(build("discogan_d", ndf=4).state_dict())
    expected = ["conv1.weight"]
    for i in (2, 3, 4):
        expected += [f"conv{i}.weight", *_bn_keys(f"bn{i}")]
    assert keys == [*expected, "conv5.weight"]


@pytest.mark.parametrize(("h", "w"), [(16, 16), (64, 48)])
@pytest.mark.parametrize("channels", [1, 3])
def test_discogan_g_shapes(h: int, w: int, channels: int) -> None:
    g = build("discogan_g", ngf=4, in_channels=channels, out_channels=channels)
    assert (g.scale, g.size_multiple, g.min_size) == (1, 16, 16)
    y = run(g, 2, channels, h, w)
    assert y.shape == (2, channels, h, w)
    assert y.abs().max() <= 1.0
    with pytest.raises(ValueError, match="not a multiple of 16"):
        run(g, 1, channels, 24, 32)


@pytest.mark.parametrize("channels", [1, 3])
def test_discogan_d_scores_and_features(channels: int) -> None:
    d = build("discogan_d", ndf=4, in_channels=channels).eval()
    assert run(d, 2, channels, 64, 64).shape == (2, 1, 1, 1)  # one score per 64x64 image
    with torch.no_grad():
        logits, feats = d.forward_features(torch.randn(2, channels, 64, 64))
    assert logits.shape == (2, 1, 1, 1)
    assert [f.shape for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [("discogan_g", {"ngf": 4}, (2, 3, 32, 32)), ("discogan_d", {"ndf": 4}, (2, 3, 64, 64))],
)
def test_discogan_gradients_flow(name: str, kwargs: dict, shape: tuple) -> None:
    assert_gradients_flow(build(name, **kwargs), torch.randn(*shape))


# --- the whole table -----------------------------------------------------------------------------

EXPECTED_NAMES = {
    "unet",
    "unet_128",
    "unet_256",
    "resnet",
    "resnet_6blocks",
    "resnet_9blocks",
    "patchgan",
    "pixel",
    "discogan_g",
    "discogan_d",
    "srresnet",
    "srgan_d",
    "msrresnet",
    "rrdbnet",
    "srvgg_compact",
}


def test_registry_holds_exactly_the_documented_names() -> None:
    assert set(known_names()) == EXPECTED_NAMES
    discriminators = {name for name in EXPECTED_NAMES if get_spec(name).role == "discriminator"}
    assert discriminators == {"patchgan", "pixel", "discogan_d", "srgan_d"}
    for name in EXPECTED_NAMES:
        expected_range = (
            (0.0, 1.0) if name in {"srresnet", "srgan_d", "msrresnet", "rrdbnet", "srvgg_compact"} else (-1.0, 1.0)
        )
        assert get_spec(name).value_range == expected_range, name


# Small versions of every generator: the attributes callers (descriptor, tiled engine) rely on.
SMALL_GENERATORS = {
    "unet": {"num_downs": 5, "ngf": 4},
    "unet_128": {"ngf": 4},
    "unet_256": {"ngf": 4},
    "resnet": {"n_blocks": 1, "ngf": 4},
    "resnet_6blocks": {"ngf": 4},
    "resnet_9blocks": {"ngf": 4},
    "discogan_g": {"ngf": 4},
    "srresnet": {"num_feat": 4, "num_block": 1},
    "msrresnet": {"num_feat": 4, "num_block": 1},
    "rrdbnet": {"num_feat": 4, "num_block": 1, "num_grow_ch": 2},
    "srvgg_compact": {"num_feat": 4, "num_conv": 1},
}


def test_every_generator_is_covered() -> None:
    assert set(SMALL_GENERATORS) == {n for n in EXPECTED_NAMES if get_spec(n).role == "generator"}


@pytest.mark.parametrize("name", sorted(SMALL_GENERATORS))
def test_generator_attributes_agree_with_a_forward_pass(name: str) -> None:
    net = build(name, **SMALL_GENERATORS[name], in_channels=1, out_channels=1)
    for attr in ("in_channels", "out_channels", "scale", "size_multiple", "min_size"):
        assert type(getattr(net, attr)) is int, attr
    assert net.in_channels == net.out_channels == 1
    assert net.scale == get_spec(name).defaults.get("scale", 1)
    # The smallest input the attributes promise must run and scale by exactly `scale`.
    side = max(net.min_size, net.size_multiple)
    assert run(net, 1, 1, side, 2 * side).shape == (1, 1, side * net.scale, 2 * side * net.scale)


# --- one place per fact: defaults in the registry, the rest asked of the network -------------------


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_registry_defaults_are_the_only_defaults(name: str) -> None:
    """Each entry names every keyword its class takes, and the class itself has no defaults that
    could disagree (the U-Net's dropout once was False in the class and True in the registry)."""
    spec = get_spec(name)
    params = inspect.signature(spec.builder).parameters.values()
    assert set(spec.defaults) == {p.name for p in params}
    assert all(p.default is inspect.Parameter.empty for p in params), name


def test_accepts_reads_the_class_signature() -> None:
    from img2img.networks.registry import accepts, resolve_accepted

    assert {"norm", "dropout"} <= accepts("unet_256") and {"norm", "dropout"} <= accepts("resnet_6blocks")
    assert "norm" not in accepts("discogan_g") and "dropout" not in accepts("patchgan")
    # The DiscoGAN generator has batch norm built in: the norm candidate is dropped, defaults filled.
    assert resolve_accepted("discogan_g", ngf=8, norm="instance", dropout=True) == {
        "in_channels": 3, "out_channels": 3, "ngf": 8}


@pytest.mark.parametrize("name", ["unet_128", "resnet", "discogan_g", "rrdbnet", "patchgan", "srgan_d"])
def test_probe_reports_the_built_networks_sizes_without_weights(name: str) -> None:
    from img2img.networks.registry import probe

    small = {**SMALL_GENERATORS.get(name, {"ndf": 4}), **({"scale": 2} if name == "rrdbnet" else {})}
    real, meta = build(name, **small), probe(name, **small)
    assert all(p.is_meta for p in meta.parameters())
    for attr in ("size_multiple", "min_size", "scale"):
        assert getattr(meta, attr, None) == getattr(real, attr, None), attr
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in real.parameters())
