"""`img2img weights {list,info,convert}` end to end through click."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from img2img.checkpoints import load_model, read_metadata, save_model
from img2img.cli import cli
from img2img.cli.common import EXIT_OK, EXIT_USAGE
from img2img.networks import build

RRDB_X2 = {"scale": 2, "num_feat": 8, "num_block": 2, "num_grow_ch": 4}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.setenv("IMG2IMG_WEIGHTS_DIR", str(tmp_path / "weights"))


def _run(*args: str):
    return CliRunner().invoke(cli, ["weights", *args])


def _release_file(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = build("rrdbnet", **RRDB_X2).eval()
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return path, net


def test_list_shows_bundled_models_with_arch_and_scale(tmp_path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    net = build("msrresnet", scale=4, num_feat=8, num_block=1)
    save_model(net, weights / "tiny-sr-x4.safetensors", arch="msrresnet", kwargs={"scale": 4, "num_feat": 8,
               "num_block": 1}, value_range=(0, 1))  # fmt: skip

    result = _run("list")
    assert result.exit_code == EXIT_OK, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("tiny-sr-x4"))
    assert "msrresnet" in line and "x4" in line and "[env]" in line

    rows = json.loads(_run("list", "--json").stdout)
    mine = next(r for r in rows if r["name"] == "tiny-sr-x4")
    assert (mine["arch"], mine["scale"], mine["location"]) == ("msrresnet", 4, "env")


def test_info_describes_a_reference_file(tmp_path) -> None:
    path, net = _release_file(tmp_path)
    result = _run("info", str(path))
    assert result.exit_code == EXIT_OK, result.output
    out = result.stdout
    assert "rrdbnet(in_channels=3, out_channels=3, scale=2, num_feat=8, num_block=2, num_grow_ch=4)" in out
    assert "x2" in out and "[0, 1]" in out and "multiple of 2" in out
    assert f"{sum(p.numel() for p in net.parameters()):,}" in out
    assert "basicsr-rrdbnet" in out and "params_ema" in out

    summary = json.loads(_run("info", str(path), "--json").stdout)
    assert summary["arch"] == "rrdbnet" and summary["scale"] == 2 and summary["value_range"] == [0.0, 1.0]
    assert summary["parameters"] == sum(p.numel() for p in net.parameters())
    assert summary["instance_norm"] is False and summary["size_multiple"] == 2


def test_info_with_scale_hint_and_direction_errors(tmp_path) -> None:
    path, _ = _release_file(tmp_path)
    result = _run("info", str(path), "--scale", "3")
    assert result.exit_code == EXIT_USAGE
    assert (
        result.stderr.count("\n") == 1 and str(path) in result.stderr and "scale 1, 2 or 4" in result.stderr
    )
    result = _run("info", str(path), "--direction", "BtoA")
    assert result.exit_code == EXIT_USAGE and "no B->A generator" in result.stderr


def test_info_on_a_bad_file_is_one_line_and_exit_2(tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not torch")
    result = _run("info", str(bad))
    assert result.exit_code == EXIT_USAGE
    assert (
        result.stderr.startswith(f"error: {bad}: not a PyTorch checkpoint") and result.stderr.count("\n") == 1
    )
    missing = _run("info", "no-such-model-name")
    assert (
        missing.exit_code == EXIT_USAGE
        and "no-such-model-name: no such file, run directory or bundled model" in (missing.stderr)
    )


def test_convert_writes_our_format_with_provenance(tmp_path) -> None:
    src, net = _release_file(tmp_path)
    out = tmp_path / "converted.safetensors"

    result = _run("convert", str(src), str(out))
    assert result.exit_code == EXIT_OK, result.output
    assert "rrdbnet x2" in result.stdout

    doc = read_metadata(out)
    assert doc["arch"] == "rrdbnet" and doc["kwargs"] == {"in_channels": 3, "out_channels": 3, **RRDB_X2}
    assert doc["provenance"]["source_file"] == src.name
    assert doc["provenance"]["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert doc["provenance"]["command"] == f"img2img weights convert {src} {out}"
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(load_model(out)(x), net(x))

    again = _run("convert", str(src), str(out))
    assert again.exit_code == EXIT_USAGE and "exists; pass --overwrite" in again.stderr
    assert _run("convert", str(src), str(out), "--overwrite").exit_code == EXIT_OK
    wrong = _run("convert", str(src), str(tmp_path / "x.pth"))
    assert wrong.exit_code == EXIT_USAGE and "must be a .safetensors file" in wrong.stderr

    info = json.loads(_run("info", str(out), "--json").stdout)
    assert info["provenance"]["source_format"] == "basicsr-rrdbnet"


def test_convert_of_an_unknown_file_names_it(tmp_path) -> None:
    src = tmp_path / "mystery.pth"
    torch.save({"head.weight": torch.zeros(4, 3, 3, 3)}, src)
    result = _run("convert", str(src), str(tmp_path / "out.safetensors"))
    assert result.exit_code == EXIT_USAGE
    assert str(src) in result.stderr and "no known architecture" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()
