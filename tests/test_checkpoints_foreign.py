"""Reference checkpoints: key layouts, detection of architecture and kwargs, key remapping, safety.

Files are written the way the reference projects write them (``torch.save`` of a bare state dict,
or of ``{"params_ema": ...}``); the expected key names come from reading the reference sources
(junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py``, BasicSR ``rrdbnet_arch.py`` /
``srresnet_arch.py``, xinntao/ESRGAN ``RRDBNet_arch.py`` and ``transer_RRDB_models.py``), written
out below independently of our networks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from img2img.checkpoints import CheckpointError, load_model, recognise
from img2img.checkpoints.foreign import remap_esrgan_old, remap_esrgan_trunk
from img2img.networks import build

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


# ------------------------------------------------------------------ reference layouts, written out


def reference_resnet_keys(n_blocks: int, norm: str, dropout: bool = False) -> set[str]:
    """ResnetGenerator: pad, conv(1), norm(2), relu, 2 x [conv, norm, relu] (4-9), blocks from 10,
    2 x [convT, norm, relu], pad, conv (17 + n), tanh. Convs have a bias only before InstanceNorm."""
    keys: set[str] = set()

    def conv(prefix: str, bias: bool) -> None:
        keys.add(f"{prefix}.weight")
        if bias:
            keys.add(f"{prefix}.bias")

    def norm_at(prefix: str) -> None:
        if norm == "batch":
            keys.update(f"{prefix}.{k}" for k in BN)

    bias = norm == "instance"
    for c in (1, 4, 7):
        conv(f"model.{c}", bias)
        norm_at(f"model.{c + 1}")
    second = 6 if dropout else 5
    for b in range(10, 10 + n_blocks):
        conv(f"model.{b}.conv_block.1", bias)
        norm_at(f"model.{b}.conv_block.2")
        conv(f"model.{b}.conv_block.{second}", bias)
        norm_at(f"model.{b}.conv_block.{second + 1}")
    for c in (10 + n_blocks, 13 + n_blocks):
        conv(f"model.{c}", bias)
        norm_at(f"model.{c + 1}")
    conv(f"model.{17 + n_blocks}", True)
    return keys


def reference_unet_keys(num_downs: int, norm: str) -> set[str]:
    """UnetGenerator: outermost [down(0), sub(1), relu, up(3), tanh]; middle [lrelu, down(1), norm(2),
    sub(3), relu, up(5), norm(6)]; innermost [lrelu, down(1), relu, up(3), norm(4)]."""
    bias = norm == "instance"
    keys = {"model.model.0.weight", "model.model.3.weight", "model.model.3.bias"}
    if bias:
        keys.add("model.model.0.bias")
    for level in range(2, num_downs + 1):
        p = "model.model.1." + "model.3." * (level - 2)
        innermost = level == num_downs
        up, norms = (3, (4,)) if innermost else (5, (2, 6))
        for c in (1, up):
            keys.add(f"{p}model.{c}.weight")
            if bias:
                keys.add(f"{p}model.{c}.bias")
        if norm == "batch":
            keys.update(f"{p}model.{n}.{k}" for n in norms for k in BN)
    return keys


def reference_rrdbnet_keys(num_block: int) -> set[str]:
    names = ["conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    names += [f"body.{i}.rdb{j}.conv{k}" for i in range(num_block) for j in (1, 2, 3) for k in range(1, 6)]
    return {f"{n}.{w}" for n in names for w in ("weight", "bias")}


def reference_msrresnet_keys(num_block: int, scale: int) -> set[str]:
    names = ["conv_first", "upconv1", "conv_hr", "conv_last"] + (["upconv2"] if scale == 4 else [])
    names += [f"body.{i}.conv{k}" for i in range(num_block) for k in (1, 2)]
    return {f"{n}.{w}" for n in names for w in ("weight", "bias")}


_META_NETS: dict[tuple, torch.nn.Module] = {}


def _meta(arch: str, **kwargs) -> torch.nn.Module:
    """Default-size net without memory (meta tensors), built once per module (deep nets build slowly)."""
    key = (arch, tuple(sorted(kwargs.items())))
    if key not in _META_NETS:
        with torch.device("meta"):
            _META_NETS[key] = build(arch, **kwargs)
    return _META_NETS[key]


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("arch", "kwargs", "expected", "params"),
    [
        ("resnet_9blocks", {"norm": "instance"}, reference_resnet_keys(9, "instance"), 11_378_179),
        ("resnet_6blocks", {"norm": "instance"}, reference_resnet_keys(6, "instance"), 7_837_699),
        ("resnet_9blocks", {"norm": "batch", "dropout": True}, reference_resnet_keys(9, "batch", True), None),
        ("unet_256", {"norm": "batch"}, reference_unet_keys(8, "batch"), 54_413_955),
        ("unet_128", {"norm": "batch"}, reference_unet_keys(7, "batch"), 41_828_995),
        ("unet_256", {"norm": "instance"}, reference_unet_keys(8, "instance"), None),
        ("rrdbnet", {}, reference_rrdbnet_keys(23), 16_697_987),
        ("msrresnet", {"scale": 4}, reference_msrresnet_keys(16, 4), None),
        ("msrresnet", {"scale": 2}, reference_msrresnet_keys(16, 2), None),
    ],
)
def test_default_size_nets_have_the_reference_key_sets(arch, kwargs, expected, params) -> None:
    net = _meta(arch, **kwargs)
    assert set(net.state_dict()) == expected
    if params is not None:
        assert _n_params(net) == params  # figures from REFERENCE_FACTS.md


def test_a_few_reference_key_names_verbatim() -> None:
    # Copied from the reference sources / released files, as documented in docs/checkpoints.md.
    resnet = set(_meta("resnet_9blocks").state_dict())
    assert {
        "model.1.weight",
        "model.10.conv_block.1.weight",
        "model.18.conv_block.5.bias",
        "model.26.weight",
    } <= resnet
    unet = set(_meta("unet_256").state_dict())
    assert {
        "model.model.0.weight",
        "model.model.1.model.2.running_mean",
        "model.model.1.model.1.weight",
    } <= unet
    innermost = "model.model.1." + "model.3." * 6
    assert {
        f"{innermost}model.1.weight",
        f"{innermost}model.3.weight",
        f"{innermost}model.4.running_var",
    } <= unet
    rrdb = set(_meta("rrdbnet").state_dict())
    assert {
        "conv_first.weight",
        "body.22.rdb3.conv5.bias",
        "conv_body.weight",
        "conv_up2.weight",
        "conv_hr.bias",
    } <= rrdb


# ------------------------------------------------------------------ detection on full-size shapes


@pytest.mark.parametrize(
    ("what", "arch", "kwargs", "expected_arch", "expected"),
    [
        (
            "RealESRGAN_x4plus",
            "rrdbnet",
            {},
            "rrdbnet",
            {"scale": 4, "num_block": 23, "num_grow_ch": 32, "num_feat": 64},
        ),
        ("RealESRGAN_x2plus", "rrdbnet", {"scale": 2}, "rrdbnet", {"scale": 2, "in_channels": 3}),
        ("RealESRGAN_x4plus_anime_6B", "rrdbnet", {"num_block": 6}, "rrdbnet", {"num_block": 6}),
        (
            "horse2zebra",
            "resnet_9blocks",
            {},
            "resnet_9blocks",
            {"ngf": 64, "n_blocks": 9, "norm": "instance"},
        ),
        ("facades_label2photo", "unet_256", {}, "unet_256", {"ngf": 64, "num_downs": 8, "norm": "batch"}),
        ("MSRResNet x4", "msrresnet", {}, "msrresnet", {"scale": 4, "num_block": 16, "num_feat": 64}),
    ],
)
def test_detection_of_full_size_release_shapes(what, arch, kwargs, expected_arch, expected) -> None:
    state = dict(_meta(arch, **kwargs).state_dict())
    fmt, rec = recognise(state)
    assert rec.arch == expected_arch, what
    assert expected.items() <= rec.kwargs.items(), what


# ------------------------------------------------------------------ loading .pth files end to end


def _net(arch: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build(arch, **kwargs)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _assert_same_outputs(desc, net, side: int) -> None:
    lo, hi = desc.value_range
    x = lo + (hi - lo) * torch.rand(
        2, net.in_channels, side, side, generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        assert torch.equal(desc(x), net(x))


JUNYANZ = [
    ("resnet_6blocks", {"n_blocks": 6, "norm": "batch"}, 16),
    ("resnet_6blocks", {"n_blocks": 6, "norm": "instance"}, 16),
    ("resnet_9blocks", {"n_blocks": 9, "norm": "batch"}, 16),
    ("resnet_9blocks", {"n_blocks": 9, "norm": "instance"}, 16),
    ("unet_128", {"num_downs": 7, "norm": "batch"}, 128),
    ("unet_128", {"num_downs": 7, "norm": "instance"}, 128),
    ("unet_256", {"num_downs": 8, "norm": "batch"}, 256),
    ("unet_256", {"num_downs": 8, "norm": "instance"}, 256),
]


@pytest.mark.parametrize(("arch", "kwargs", "side"), JUNYANZ, ids=[f"{a}-{k['norm']}" for a, k, _ in JUNYANZ])
def test_junyanz_bare_state_dicts(tmp_path, arch, kwargs, side) -> None:
    ngf = 8 if arch.startswith("resnet") else 2
    net = _net(arch, ngf=ngf, **kwargs)
    path = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), path)

    desc = load_model(path)

    assert desc.arch == arch
    assert desc.kwargs == {"in_channels": 3, "out_channels": 3, "ngf": ngf, "dropout": False, **kwargs}
    assert desc.value_range == (-1.0, 1.0) and desc.scale == 1
    assert desc.instance_norm == (kwargs["norm"] == "instance")
    assert desc.size_multiple == (4 if arch.startswith("resnet") else 2 ** kwargs["num_downs"])
    assert desc.provenance["source_format"] == f"junyanz-{arch.split('_')[0]}"
    _assert_same_outputs(desc, net, side)


def test_junyanz_other_shapes_gray_to_rgb_dropout_and_data_parallel(tmp_path) -> None:
    net = _net("resnet", ngf=4, n_blocks=3, norm="batch", dropout=True, in_channels=1, out_channels=3)
    path = tmp_path / "latest_net_G_A.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # saved from DataParallel
    desc = load_model(path)
    assert desc.arch == "resnet"
    assert desc.kwargs == {
        "in_channels": 1,
        "out_channels": 3,
        "ngf": 4,
        "n_blocks": 3,
        "norm": "batch",
        "dropout": True,
    }
    _assert_same_outputs(desc, net, 8)

    unet = _net("unet", ngf=2, num_downs=6, norm="none", in_channels=3, out_channels=1)
    torch.save(unet.state_dict(), path)
    desc = load_model(path)
    assert desc.arch == "unet" and desc.kwargs["num_downs"] == 6 and desc.kwargs["norm"] == "none"
    assert desc.out_channels == 1
    _assert_same_outputs(desc, unet, 64)


def _add_old_instance_norm_stats(state: dict, norm_keys: list[str]) -> dict:
    """What PyTorch < 0.4 saved for InstanceNorm2d: running_mean/var (and later num_batches_tracked)."""
    old = dict(state)
    for i, prefix in enumerate(norm_keys):
        channels = 4
        old[f"{prefix}.running_mean"] = torch.rand(channels)
        old[f"{prefix}.running_var"] = torch.rand(channels) + 0.5
        if i % 2:
            old[f"{prefix}.num_batches_tracked"] = torch.tensor(7)
    return old


def test_old_instance_norm_running_stats_are_dropped(tmp_path) -> None:
    net = _net("resnet_6blocks", ngf=4, n_blocks=6, norm="instance")
    old = _add_old_instance_norm_stats(
        net.state_dict(), ["model.2", "model.5", "model.10.conv_block.2", "model.15.conv_block.6", "model.20"]
    )
    path = tmp_path / "horse2zebra.pth"
    torch.save(old, path)
    desc = load_model(path)
    assert desc.kwargs["norm"] == "instance" and desc.instance_norm
    _assert_same_outputs(desc, net, 16)

    unet = _net("unet_128", ngf=2, num_downs=7, norm="instance")
    innermost = "model.model.1." + "model.3." * 5
    old = _add_old_instance_norm_stats(unet.state_dict(), ["model.model.1.model.2", f"{innermost}model.4"])
    torch.save(old, path)
    desc = load_model(path)
    assert desc.arch == "unet_128" and desc.kwargs["norm"] == "instance"
    _assert_same_outputs(desc, unet, 128)


RRDB = [(4, 3, 4), (2, 4, 8), (1, 2, 8)]


@pytest.mark.parametrize(("scale", "num_block", "side"), RRDB, ids=[f"x{s}" for s, _, _ in RRDB])
def test_basicsr_rrdbnet_prefers_params_ema(tmp_path, scale, num_block, side) -> None:
    kwargs = {"scale": scale, "num_feat": 8, "num_block": num_block, "num_grow_ch": 6}
    ema, plain = _net("rrdbnet", 1, **kwargs), _net("rrdbnet", 2, **kwargs)
    path = tmp_path / f"RealESRGAN_x{scale}plus.pth"
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, path)

    desc = load_model(path)

    assert desc.arch == "rrdbnet" and desc.kwargs == {"in_channels": 3, "out_channels": 3, **kwargs}
    assert desc.value_range == (0.0, 1.0) and desc.scale == scale and desc.size_multiple == 4 // scale
    assert desc.provenance["state_key"] == "params_ema"
    _assert_same_outputs(desc, ema, side)

    torch.save({"params": plain.state_dict()}, path)
    _assert_same_outputs(load_model(path), plain, side)


def test_rrdbnet_scale_hint_resolves_ambiguous_input_channels(tmp_path) -> None:
    # 12 input channels at x4 look exactly like an RGB x2 model (pixel-unshuffled 3 x 4).
    net = _net("rrdbnet", in_channels=12, out_channels=3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)
    path = tmp_path / "odd.pth"
    torch.save({"params": net.state_dict()}, path)
    assert load_model(path).kwargs["scale"] == 2
    desc = load_model(path, scale=4)
    assert desc.kwargs["scale"] == 4 and desc.in_channels == 12
    _assert_same_outputs(desc, net, 8)
    with pytest.raises(CheckpointError, match="odd.pth: conv_first has 12 input channels, which is not a x1"):
        load_model(path, scale=1)  # 12 is not a multiple of 16


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_basicsr_msrresnet(tmp_path, scale) -> None:
    net = _net("msrresnet", scale=scale, num_feat=8, num_block=3)
    path = tmp_path / f"MSRResNet_x{scale}.pth"
    torch.save({"params": net.state_dict()}, path)
    desc = load_model(path)
    assert desc.arch == "msrresnet"
    assert desc.kwargs == {"in_channels": 3, "out_channels": 3, "scale": scale, "num_feat": 8, "num_block": 3}
    assert desc.value_range == (0.0, 1.0)
    _assert_same_outputs(desc, net, 6)
    with pytest.raises(CheckpointError, match="scale 5 given, but the file's MSRResNet upscales"):
        load_model(path, scale=5)


# ------------------------------------------------------------------ old ESRGAN layouts


def old_esrgan_state(basicsr: dict[str, torch.Tensor], num_block: int) -> dict[str, torch.Tensor]:
    """BasicSR keys -> the 2018 ESRGAN layout, from REFERENCE_FACTS.md / transer_RRDB_models.py."""
    top = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}", "conv_up1": "model.3",
           "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}  # fmt: skip
    old = {}
    for key, value in basicsr.items():
        module, kind = key.rsplit(".", 1)
        if module.startswith("body."):
            _, i, rdb, conv = module.split(".")
            old[f"model.1.sub.{i}.RDB{rdb[3:]}.{conv}.0.{kind}"] = value
        else:
            old[f"{top[module]}.{kind}"] = value
    return old


def test_old_esrgan_remap_key_by_key() -> None:
    basicsr = dict(_net("rrdbnet", num_feat=4, num_block=2, num_grow_ch=2).state_dict())
    old = old_esrgan_state(basicsr, num_block=2)
    remapped = remap_esrgan_old(old)
    assert set(remapped) == set(basicsr)
    assert all(remapped[k] is basicsr[k] for k in basicsr)
    pairs = {
        "model.0.weight": "conv_first.weight",
        "model.1.sub.0.RDB1.conv1.0.weight": "body.0.rdb1.conv1.weight",
        "model.1.sub.1.RDB3.conv5.0.bias": "body.1.rdb3.conv5.bias",
        "model.1.sub.2.weight": "conv_body.weight",
        "model.3.bias": "conv_up1.bias",
        "model.6.weight": "conv_up2.weight",
        "model.8.weight": "conv_hr.weight",
        "model.10.bias": "conv_last.bias",
    }
    for old_key, new_key in pairs.items():
        assert remapped[new_key] is old[old_key], old_key
    with pytest.raises(CheckpointError, match="unexpected key 'model.12.weight'"):
        remap_esrgan_old({**old, "model.12.weight": torch.zeros(1)})


def test_old_esrgan_file_loads_as_rrdbnet(tmp_path) -> None:
    net = _net("rrdbnet", num_feat=8, num_block=2, num_grow_ch=5)
    path = tmp_path / "RRDB_ESRGAN_x4_old_arch.pth"
    # 2018 files predate the zip format: save the legacy way.
    torch.save(old_esrgan_state(net.state_dict(), 2), path, _use_new_zipfile_serialization=False)
    desc = load_model(path)
    assert desc.arch == "rrdbnet" and desc.provenance["source_format"] == "esrgan-old"
    assert desc.kwargs == {
        "in_channels": 3,
        "out_channels": 3,
        "scale": 4,
        "num_feat": 8,
        "num_block": 2,
        "num_grow_ch": 5,
    }
    _assert_same_outputs(desc, net, 5)


def test_esrgan_rrdb_trunk_layout(tmp_path) -> None:
    net = _net("rrdbnet", num_feat=8, num_block=2, num_grow_ch=4)
    names = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}
    trunk = {}
    for key, value in net.state_dict().items():
        module, kind = key.rsplit(".", 1)
        if module.startswith("body."):
            _, i, rdb, conv = module.split(".")
            trunk[f"RRDB_trunk.{i}.RDB{rdb[3:]}.{conv}.{kind}"] = value
        else:
            trunk[f"{names.get(module, module)}.{kind}"] = value
    assert remap_esrgan_trunk(trunk).keys() == net.state_dict().keys()
    path = tmp_path / "RRDB_ESRGAN_x4.pth"
    torch.save(trunk, path)
    desc = load_model(path)
    assert desc.provenance["source_format"] == "esrgan-trunk" and desc.kwargs["num_block"] == 2
    _assert_same_outputs(desc, net, 5)


# ------------------------------------------------------------------ hints, refusals, unknown files


def test_arch_hint_names_and_checks_the_variant(tmp_path) -> None:
    net = _net("resnet_9blocks", ngf=4, n_blocks=9)
    path = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), path)
    assert load_model(path, arch="resnet").arch == "resnet"
    with pytest.raises(
        CheckpointError, match="latest_net_G.pth: arch 'resnet_6blocks' has n_blocks=6, but the file has 9"
    ):
        load_model(path, arch="resnet_6blocks")
    with pytest.raises(CheckpointError, match="latest_net_G.pth: weights do not fit rrdbnet"):
        load_model(path, arch="rrdbnet")
    with pytest.raises(CheckpointError, match="scale 4 given, but pix2pix/CycleGAN generators keep the size"):
        load_model(path, scale=4)


def test_arch_hint_loads_a_state_dict_no_detector_knows(tmp_path) -> None:
    net = _net("srresnet", scale=2, num_feat=64, num_block=16)  # SRGAN generator saved bare
    path = tmp_path / "srgan_g.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(CheckpointError, match="no known architecture"):
        load_model(path)
    desc = load_model(path, arch="srresnet", scale=2)
    assert desc.arch == "srresnet" and desc.scale == 2 and desc.provenance["source_format"] == "state-dict"
    _assert_same_outputs(desc, net, 6)
    with pytest.raises(
        CheckpointError,
        match=r"srgan_g.pth: weights do not fit srresnet .*scale.: 4.*3 missing \(upsample.1.conv.weight",
    ):
        load_model(path, arch="srresnet", scale=4)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "latest_net_G.pth"
    torch.save({"model.1.weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    with pytest.raises(
        CheckpointError, match=r"latest_net_G.pth: refused: .*could run code.*(system|Unsupported)"
    ):
        load_model(path)
    assert not marker.exists()


def test_unknown_and_unreadable_files(tmp_path) -> None:
    odd = tmp_path / "odd.pth"
    torch.save({"encoder.weight": torch.zeros(8, 3, 3, 3), "decoder.bias": torch.zeros(3)}, odd)
    with pytest.raises(CheckpointError) as info:
        load_model(odd)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{odd}: no known architecture matches its 2 tensors")
    assert "encoder.weight (8, 3, 3, 3)" in message and "model.10.conv_block.1.weight" in message
    assert "body.0.rdb1.conv1.weight" in message and "pip install img2img[zoo]" in message

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth: not a PyTorch checkpoint torch can read"):
        load_model(garbage)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="list.pth: holds a list, not a dict of tensors"):
        load_model(listed)
    mixed = tmp_path / "training_state.pth"
    torch.save({"w": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(CheckpointError, match="training_state.pth: is not a plain state dict: .*epoch"):
        load_model(mixed)


def test_without_spandrel_the_fallback_declines() -> None:
    # The zoo extra is not installed in the test environment: the fallback must report "not
    # recognised" (None) so that the error message can suggest installing it.
    from img2img.checkpoints.foreign import _load_with_spandrel

    with pytest.raises(ImportError):
        import spandrel  # noqa: F401
    assert _load_with_spandrel({"x": torch.zeros(1)}, source="f", provenance={}) is None
