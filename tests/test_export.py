"""ONNX export (`img2img.checkpoints.export`, `img2img weights export`): parity, dynamic sizes, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from img2img.checkpoints import CheckpointError, ModelDescriptor, load_model, save_model
from img2img.checkpoints.export import example_shape, export_onnx, read_onnx_metadata
from img2img.cli import cli
from img2img.cli.common import EXIT_OK, EXIT_USAGE
from img2img.networks import ARCHITECTURES, build, resolve_kwargs

# Tiny configurations: few features and blocks; the U-Nets keep their depth (it sets their size multiple).
TINY = {
    "unet": {"ngf": 4, "num_downs": 5},
    "unet_128": {"ngf": 4},
    "unet_256": {"ngf": 4},
    "resnet": {"ngf": 4, "n_blocks": 2},
    "resnet_6blocks": {"ngf": 4, "n_blocks": 2},
    "resnet_9blocks": {"ngf": 4, "n_blocks": 2},
    "discogan_g": {"ngf": 4},
    "srresnet": {"num_feat": 8, "num_block": 2},
    "msrresnet": {"num_feat": 8, "num_block": 2},
    "rrdbnet": {"num_feat": 8, "num_block": 1, "num_grow_ch": 4},
    "srvgg_compact": {"num_feat": 8, "num_conv": 2},
}
GENERATORS = sorted(name for name, spec in ARCHITECTURES.items() if spec.role == "generator")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.setenv("IMG2IMG_WEIGHTS_DIR", str(tmp_path / "weights"))


def _descriptor(arch: str, seed: int = 0) -> ModelDescriptor:
    torch.manual_seed(seed)
    kwargs = resolve_kwargs(arch, **TINY[arch])
    net = build(arch, **kwargs).eval()
    with torch.no_grad():  # BatchNorm layers with non-trivial statistics, so eval mode matters
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return ModelDescriptor.from_net(
        net, arch=arch, kwargs=kwargs, value_range=ARCHITECTURES[arch].value_range
    )


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_every_generator_has_a_tiny_configuration() -> None:
    assert set(TINY) == set(GENERATORS)


@pytest.mark.slow
@pytest.mark.parametrize("arch", GENERATORS)
def test_export_matches_torch_at_two_other_sizes(tmp_path, arch) -> None:
    desc = _descriptor(arch)
    path, _ = export_onnx(desc, tmp_path / f"{arch}.onnx", check=False)
    session = _session(path)
    traced = example_shape(desc)
    for grow in (1, 2):
        shape = example_shape(desc, grow=grow)
        assert shape[2:] != traced[2:]
        low, high = desc.value_range
        x = low + (high - low) * torch.rand(shape)
        got = session.run(None, {"input": x.numpy()})[0]
        with torch.inference_mode():
            want = desc.net(x).numpy()
        assert got.shape == want.shape == (2, desc.out_channels, shape[2] * desc.scale, shape[3] * desc.scale)
        assert np.abs(got - want).max() <= 1e-4, (arch, shape)


def test_half_export_is_float16_and_close(tmp_path) -> None:
    desc = _descriptor("msrresnet")
    path, difference = export_onnx(desc, tmp_path / "h.onnx", half=True)
    assert _session(path).get_inputs()[0].type == "tensor(float16)"
    assert read_onnx_metadata(path)["provenance"]["onnx"]["dtype"] == "float16"
    assert 0 < difference <= 2e-2  # float16 rounding is visible, and bounded
    assert next(desc.net.parameters()).dtype == torch.float32  # the descriptor's own net is untouched


def test_a_parity_failure_leaves_no_file(tmp_path, monkeypatch) -> None:
    import img2img.checkpoints.export as export

    traced = export.to_onnx(_descriptor("msrresnet"))
    monkeypatch.setattr(export, "to_onnx", lambda desc, **options: traced)  # export once only
    monkeypatch.setattr(export, "parity", lambda desc, path: 0.5)
    with pytest.raises(CheckpointError, match="differs from torch by 0.5"):
        export_onnx(_descriptor("msrresnet"), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_of_a_foreign_file_prints_parity(tmp_path) -> None:
    torch.manual_seed(0)
    net = build("rrdbnet", **TINY["rrdbnet"], scale=2).eval()
    source = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": net.state_dict()}, source)  # a BasicSR release layout
    out = tmp_path / "x2.onnx"

    result = CliRunner().invoke(cli, ["weights", "export", str(source), str(out)])
    assert result.exit_code == EXIT_OK, result.output
    assert "parity: max |onnxruntime - torch| = " in result.output
    assert float(result.output.split("= ")[1].split()[0]) <= 1e-4
    # The descriptor's facts travel in metadata_props, one field per key (generic ONNX tools show them).
    loaded = load_model(source)
    document, summary = read_onnx_metadata(out), loaded.summary()
    for key in ("arch", "kwargs", "scale", "in_channels", "out_channels", "value_range", "size_multiple",
                "min_size", "instance_norm"):  # fmt: skip
        assert document[key] == summary[key], key
    assert document["provenance"]["command"].startswith("img2img weights export ")
    assert document["provenance"]["onnx"]["dtype"] == "float32"
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["scale"]) == 2 and json.loads(props["arch"]) == "rrdbnet"
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]

    x = torch.rand(1, 3, 20, 28)
    got = _session(out).run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        assert np.abs(got - loaded.net(x).numpy()).max() <= 1e-4

    again = CliRunner().invoke(cli, ["weights", "export", str(source), str(out)])
    assert again.exit_code == EXIT_USAGE and "--overwrite" in again.output
    wrong = CliRunner().invoke(cli, ["weights", "export", str(source), str(tmp_path / "x2.safetensors")])
    assert wrong.exit_code == EXIT_USAGE and ".onnx" in wrong.output


def test_cli_export_of_our_file_with_opset(tmp_path) -> None:
    torch.manual_seed(0)
    kwargs = resolve_kwargs("resnet", ngf=4, n_blocks=1)
    desc = ModelDescriptor.from_net(
        build("resnet", **kwargs).eval(), arch="resnet", kwargs=kwargs, value_range=(-1, 1)
    )
    source = save_model(desc, tmp_path / "g.safetensors")
    out = tmp_path / "g.onnx"
    result = CliRunner().invoke(cli, ["weights", "export", str(source), str(out), "--opset", "18"])
    assert result.exit_code == EXIT_OK, result.output
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert read_onnx_metadata(out)["instance_norm"] is True
