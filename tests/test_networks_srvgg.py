"""Real-ESRGAN's SRVGGNetCompact: the published key layout, sizes, and loading its release files.

Facts used (see docs/checkpoints.md): Real-ESRGAN's ``inference_realesrgan.py`` builds
``realesr-general-x4v3`` (and its ``-wdn-`` twin, the denoise pair) as SRVGGNetCompact with
num_feat 64, num_conv 32, upscale 4, PReLU, and ``realesr-animevideov3`` with num_conv 16; the
weights sit under ``"params"``. The released realesr-general-x4v3.pth is 4.66 MB (Real-ESRGAN
issue #427), i.e. about 1.21 M float32 parameters plus pickle overhead.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from img2img.checkpoints import CheckpointError, load_model, recognise
from img2img.networks import build


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference_srvgg_shapes(num_feat: int, num_conv: int, scale: int, channels: int = 3) -> dict[str, tuple]:
    """The release layout written out key by key: body.0 conv, then (PReLU, conv) pairs, last conv."""
    shapes: dict[str, tuple] = {"body.0.weight": (num_feat, channels, 3, 3), "body.0.bias": (num_feat,)}
    index = 1
    for _ in range(num_conv):
        shapes[f"body.{index}.weight"] = (num_feat,)  # PReLU: one slope per channel
        shapes[f"body.{index + 1}.weight"] = (num_feat, num_feat, 3, 3)
        shapes[f"body.{index + 1}.bias"] = (num_feat,)
        index += 2
    shapes[f"body.{index}.weight"] = (num_feat,)
    shapes[f"body.{index + 1}.weight"] = (channels * scale * scale, num_feat, 3, 3)
    shapes[f"body.{index + 1}.bias"] = (channels * scale * scale,)
    return shapes


def _params_by_hand(num_feat: int, num_conv: int, scale: int, c: int = 3) -> int:
    conv = 9 * num_feat * num_feat + num_feat
    first = 9 * c * num_feat + num_feat
    last = 9 * num_feat * c * scale * scale + c * scale * scale
    return first + num_feat + num_conv * (conv + num_feat) + last


@pytest.mark.parametrize(
    ("name", "num_conv", "params"),
    [("realesr-general-x4v3", 32, 1_213_296), ("realesr-animevideov3", 16, 621_424)],
)
def test_release_layout_and_parameter_count(name, num_conv, params) -> None:
    with torch.device("meta"):
        net = build("srvgg_compact", num_feat=64, num_conv=num_conv, scale=4)
    state = net.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == reference_srvgg_shapes(64, num_conv, 4), name
    assert _params_by_hand(64, num_conv, 4) == params
    assert sum(p.numel() for p in net.parameters()) == params
    if name == "realesr-general-x4v3":
        # The published file is 4.66 MB: float32 weights (4 bytes each) plus pickle overhead.
        assert 4.5e6 < 4 * params < 4.66 * 2**20
        assert {"body.0.weight", "body.1.weight", "body.66.weight", "body.66.bias"} <= set(state)


@pytest.mark.parametrize(
    ("num_feat", "num_conv", "scale"), [(64, 32, 4), (64, 16, 4), (64, 16, 2), (32, 8, 3), (16, 0, 1)]
)
def test_detection_of_release_shapes(num_feat, num_conv, scale) -> None:
    state = {k: torch.empty(s, device="meta") for k, s in reference_srvgg_shapes(num_feat, num_conv, scale).items()}
    fmt, rec = recognise(state)
    assert fmt.name == "realesrgan-srvgg"
    assert rec.arch == "srvgg_compact"
    assert rec.kwargs == {"in_channels": 3, "out_channels": 3, "scale": scale, "num_feat": num_feat, "num_conv": num_conv}
    assert rec.value_range == (0.0, 1.0)


def _by_hand(state: dict[str, torch.Tensor], x: torch.Tensor, scale: int) -> torch.Tensor:
    """The forward pass written from the architecture description, with functional ops only."""
    last = max(int(k.split(".")[1]) for k in state)
    out = x
    for i in range(0, last + 1, 2):
        out = F.conv2d(out, state[f"body.{i}.weight"], state[f"body.{i}.bias"], padding=1)
        if i < last:
            out = F.prelu(out, state[f"body.{i + 1}.weight"])
    return F.pixel_shuffle(out, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")


@pytest.mark.parametrize("name", ["realesr-general-x4v3.pth", "realesr-general-wdn-x4v3.pth", "realesr-animevideov3.pth"])
def test_a_release_file_built_key_by_key_loads_and_runs(tmp_path, name) -> None:
    g = torch.Generator().manual_seed(0)
    state = {k: 0.2 * torch.randn(s, generator=g) for k, s in reference_srvgg_shapes(8, 3, 4).items()}
    path = tmp_path / name
    torch.save({"params": state}, path)

    desc = load_model(path)

    assert desc.arch == "srvgg_compact" and desc.scale == 4
    assert desc.kwargs == {"in_channels": 3, "out_channels": 3, "scale": 4, "num_feat": 8, "num_conv": 3}
    assert desc.provenance["source_format"] == "realesrgan-srvgg"
    x = torch.rand(1, 3, 5, 7, generator=g)
    with torch.no_grad():
        got = desc(x)
    assert got.shape == (1, 3, 20, 28)
    assert torch.allclose(got, _by_hand(state, x, 4), atol=1e-6)


def test_damaged_and_contradicting_files(tmp_path) -> None:
    shapes = reference_srvgg_shapes(8, 2, 4)
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    path = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params": state}, path)
    with pytest.raises(CheckpointError, match="scale 2 given, but the file's SRVGGNetCompact upscales x4"):
        load_model(path, scale=2)
    gap = {k: v for k, v in state.items() if not k.startswith("body.3.")}  # a missing PReLU: indices jump
    torch.save({"params": gap}, path)
    with pytest.raises(CheckpointError, match="not consecutive"):
        load_model(path)
    odd = dict(state)
    odd["body.6.weight"] = torch.zeros(47, 8, 3, 3)  # 47 channels: not 3 x scale**2
    odd["body.6.bias"] = torch.zeros(47)
    torch.save({"params": odd}, path)
    with pytest.raises(CheckpointError, match="not 3 x scale"):
        load_model(path)


def test_the_network_starts_from_its_nearest_skip() -> None:
    net = build("srvgg_compact", num_feat=4, num_conv=1, scale=2)
    torch.nn.init.zeros_(net.body[-1].weight)
    torch.nn.init.zeros_(net.body[-1].bias)
    x = torch.rand(1, 3, 3, 4)
    with torch.no_grad():
        assert torch.equal(net(x), x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    with pytest.raises(ValueError, match="in_channels"):
        build("srvgg_compact", in_channels=1, out_channels=3)
