"""Hostile or mistaken model files are refused cheaply, in one line (issue 20, items 5, 6, 8 and 9).

Each case is the reproduction from the issue, made small: metadata claiming a billion blocks, a
ZIP "bomb" that inflates inside torch.load, broken metadata fields, integer weights, a photo or a
code-running pickle given as a model, and `weights convert` onto a full disk or into a folder it
cannot write.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from img2img.checkpoints import CheckpointError, foreign, load_model, save_model
from img2img.checkpoints import build as build_module
from img2img.checkpoints import format as fmt
from img2img.cli import cli
from img2img.networks import build, registry

SMALL_RRDB = {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4}


@pytest.fixture(autouse=True)
def _isolated_model_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.delenv("IMG2IMG_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("IMG2IMG_CACHE_DIR", raising=False)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict, str]]:
    """Every registry build as (arch, kwargs, default device): shows what was allocated where."""
    calls: list[tuple[str, dict, str]] = []
    real = registry.build

    def spy(name: str, **kwargs):
        calls.append((name, kwargs, str(torch.get_default_device())))
        if any(isinstance(v, int) and v > 1000 for v in kwargs.values()):
            raise AssertionError(f"built {name} with {kwargs}: the file should have been refused first")
        return real(name, **kwargs)

    monkeypatch.setattr(registry, "build", spy)
    return calls


def _our_file(path: Path, **document_changes) -> Path:
    """A real small RRDBNet file of ours, then its metadata document edited as a hostile user would."""
    save_model(build("rrdbnet", **SMALL_RRDB), path, arch="rrdbnet", kwargs=SMALL_RRDB, value_range=(0, 1))
    document = fmt.read_metadata(path)
    tensors = fmt.read_tensors(path)
    for key, value in document_changes.items():
        if key.startswith("kwargs."):
            document["kwargs"][key.removeprefix("kwargs.")] = value
        else:
            document[key] = value
    save_file(tensors, path, metadata={"format": "pt", fmt.METADATA_KEY: json.dumps(document)})
    return path


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# ------------------------------------------------------------------ 20.5: small files, huge networks


def test_a_billion_blocks_in_the_metadata_is_refused_before_anything_is_built(tmp_path, builds) -> None:
    path = _our_file(tmp_path / "m.safetensors", **{"kwargs.num_block": 10**9})
    builds.clear()  # save_model's own check build
    with pytest.raises(CheckpointError, match=r"m.safetensors: its rrdbnet has num_block=1000000000, but the file's "
                       r"\d+ tensors could only fill a network with numbers up to \d+; refusing to build it"):  # fmt: skip
        load_model(path)
    assert builds == []


def test_a_huge_width_is_refused_before_anything_is_built(tmp_path, builds) -> None:
    path = _our_file(tmp_path / "m.safetensors", **{"kwargs.num_feat": 3000})
    builds.clear()
    with pytest.raises(CheckpointError, match="num_feat=3000"):
        load_model(path)
    assert builds == []


def test_a_width_the_file_could_name_is_checked_on_the_meta_device_first(tmp_path, builds) -> None:
    # One long tensor makes num_feat=900 look plausible by size; the shape check on the meta
    # device refuses the file before a real (multi-GB at full size) network is allocated.
    path = _our_file(tmp_path / "m.safetensors", **{"kwargs.num_feat": 900})
    tensors = fmt.read_tensors(path)
    tensors["conv_first.bias"] = torch.zeros(900)
    save_file(tensors, path, metadata={"format": "pt", fmt.METADATA_KEY: json.dumps(fmt.read_metadata(path))})
    builds.clear()
    with pytest.raises(CheckpointError, match="weights do not fit rrdbnet.*of another shape"):
        load_model(path)
    assert [device for _, _, device in builds] == ["meta"]


def test_a_good_file_is_built_once_for_shapes_and_once_for_real(tmp_path, builds) -> None:
    path = _our_file(tmp_path / "m.safetensors")
    builds.clear()
    desc = load_model(path)
    assert desc.kwargs["num_block"] == 1
    assert [device for _, _, device in builds] == ["meta", "cpu"]
    assert all(torch.isfinite(p).all() for p in desc.net.parameters())


def _zip_bomb(path: Path, inflated_bytes: int) -> Path:
    """A real torch checkpoint re-packed with its data record deflated and padded with zeros:
    a small file that torch.load would inflate in memory."""
    torch.save({"w": torch.zeros(4)}, path.with_suffix(".src"))
    with zipfile.ZipFile(path.with_suffix(".src")) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data/0"):
                with dst.open(info.filename, "w", force_zip64=True) as f:
                    chunk = bytes(1 << 20)
                    for _ in range(inflated_bytes >> 20):
                        f.write(chunk)
            else:
                dst.writestr(info.filename, data)
    return path


def test_a_zip_bomb_is_refused_from_its_central_directory_before_torch_load(tmp_path, monkeypatch) -> None:
    bomb = _zip_bomb(tmp_path / "bomb.pth", 64 << 20)
    assert bomb.stat().st_size < 1 << 20  # 64 MB declared in well under 1 MB
    loads: list[str] = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(str(a[0])))
    with pytest.raises(CheckpointError, match=r"bomb.pth: refused: its ZIP directory declares 67.1 MB of data in a "
                       r"0.\d MB file"):  # fmt: skip
        load_model(bomb)
    assert loads == []


def test_an_ordinary_torch_zip_file_passes_the_directory_check(tmp_path) -> None:
    torch.save({"params_ema": build("rrdbnet", **SMALL_RRDB).state_dict()}, tmp_path / "ok.pth")
    foreign.check_torch_zip(tmp_path / "ok.pth")
    assert load_model(tmp_path / "ok.pth").arch == "rrdbnet"


def test_a_zip_that_is_not_a_checkpoint_says_so(tmp_path) -> None:
    with zipfile.ZipFile(tmp_path / "photos.pth", "w") as z:
        z.writestr("holiday.jpg", b"x" * 10)
    with pytest.raises(CheckpointError, match="photos.pth: is a ZIP archive without a data.pkl record"):
        load_model(tmp_path / "photos.pth")


# ------------------------------------------------------------------------- 20.6: metadata validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value_range": [1, 0]}, r"value_range must be \[low, high\] with finite low < high, not \[1, 0\]"),
        ({"value_range": [float("nan"), 1]}, r"value_range must be .* not \[nan, 1\]"),
        ({"value_range": [0]}, r"value_range must be .* not \[0\]"),
        ({"value_range": "0,1"}, r"value_range must be .* not '0,1'"),
        ({"kwargs": [1, 2]}, "kwargs must be a JSON object, not list"),
        ({"scale": "4"}, "scale must be an integer from 1 to 65536, not '4'"),
        ({"scale": True}, "scale must be an integer from 1 to 65536, not True"),
        ({"min_size": 0}, "min_size must be an integer from 1 to 65536, not 0"),
        ({"arch": ["rrdbnet"]}, r"arch must be a registry name, not \['rrdbnet'\]"),
        ({"instance_norm": "no"}, "instance_norm must be true or false"),
        ({"provenance": [1]}, "provenance must be a JSON object, not list"),
    ],
)
def test_broken_metadata_fields_give_one_line(tmp_path, change, message) -> None:
    path = _our_file(tmp_path / "m.safetensors", **change)
    with pytest.raises(CheckpointError, match=f"m.safetensors: its metadata is invalid: {message}"):
        load_model(path)
    assert "its metadata is invalid" in _one_line_error(["weights", "info", str(path)])


def test_deeply_nested_metadata_gives_one_line(tmp_path) -> None:
    path = tmp_path / "deep.safetensors"
    save_file({"w": torch.zeros(1)}, path, metadata={fmt.METADATA_KEY: "[" * 100_000 + "]" * 100_000})
    with pytest.raises(CheckpointError, match="deep.safetensors: its 'img2img' metadata is nested too deeply"):
        load_model(path)
    assert "nested too deeply" in _one_line_error(["weights", "info", str(path)])


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.int32])
def test_integer_or_bool_weights_are_refused_not_cast(tmp_path, dtype) -> None:
    path = _our_file(tmp_path / "m.safetensors")
    tensors = {k: v.to(dtype) for k, v in fmt.read_tensors(path).items()}
    save_file(tensors, path, metadata={"format": "pt", fmt.METADATA_KEY: json.dumps(fmt.read_metadata(path))})
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=f"of a non-float dtype where the network has float weights "
                       rf"\(conv_first.weight {name}, "):  # fmt: skip
        load_model(path)
    # the same through a reference-layout .pth
    torch.save({"params_ema": tensors}, tmp_path / "int.pth")
    with pytest.raises(CheckpointError, match="non-float dtype"):
        load_model(tmp_path / "int.pth")


def test_float16_release_weights_still_load(tmp_path) -> None:
    net = build("rrdbnet", **SMALL_RRDB)
    torch.save({"params_ema": {k: v.half() for k, v in net.state_dict().items()}}, tmp_path / "half.pth")
    assert load_model(tmp_path / "half.pth").net.conv_first.weight.dtype == torch.float32


# ---------------------------------------------------------------- 20.8: what the file is, not torch's advice


def test_a_photo_given_as_a_model_is_named_as_a_photo(tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    (tmp_path / "cat.pth").write_bytes((tmp_path / "cat.png").read_bytes())
    line = _one_line_error(["weights", "info", str(tmp_path / "cat.pth")])
    assert "cat.pth: is a PNG image, not a model file; img2img reads .safetensors files and PyTorch" in line
    assert "weights_only" not in line
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    (tmp_path / "cat2.pt").write_bytes((tmp_path / "cat.jpg").read_bytes())
    with pytest.raises(CheckpointError, match="cat2.pt: is a JPEG image, not a model file"):
        load_model(tmp_path / "cat2.pt")


def test_a_web_page_saved_as_a_model_is_named(tmp_path) -> None:
    (tmp_path / "model.pth").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(CheckpointError, match="model.pth: is an HTML page, not a model file"):
        load_model(tmp_path / "model.pth")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("how", ["pickle-protocol-4", "pickle-protocol-2", "torch-zip"])
def test_a_code_running_pickle_is_refused_naming_what_it_wants(tmp_path, how) -> None:
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pth"
    if how == "torch-zip":
        torch.save({"w": _RunsCode(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=int(how[-1])))
    line = _one_line_error(["weights", "info", str(path)])
    assert "evil.pth: refused: its pickle asks for more than tensors and plain containers" in line
    assert "exec" in line  # names what it wanted: builtins.exec (__builtin__.exec in protocol 2)
    assert "weights_only" not in line and "trusted source" not in line
    assert not marker.exists()


def test_an_unreadable_pickle_never_echoes_torchs_advice(tmp_path) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "p4.pth", pickle_protocol=4, _use_new_zipfile_serialization=False)
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02" + b"\x00" * 64)
    for name in ("junk.pth",):
        line = _one_line_error(["weights", "info", str(tmp_path / name)])
        assert f"{name}: not a PyTorch checkpoint torch can read" in line
        assert "weights_only" not in line and "trusted source" not in line


# ------------------------------------------------------------- 20.9: weights convert cannot write


@pytest.fixture
def reference_file(tmp_path) -> Path:
    torch.manual_seed(0)
    net = build("rrdbnet", scale=4, num_feat=16, num_block=2, num_grow_ch=8)
    torch.save({"params_ema": net.state_dict()}, tmp_path / "x.pth")
    return tmp_path / "x.pth"


def test_convert_into_a_folder_it_cannot_write_is_one_line(tmp_path, reference_file, monkeypatch) -> None:
    # Permission bits do not stop root (CI may run as root), so the refusal the OS gives a normal
    # user is injected where the temporary file is created.
    @contextlib.contextmanager
    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
        yield

    monkeypatch.setattr(fmt, "replacing", refused)
    (tmp_path / "ro").mkdir()
    line = _one_line_error(["weights", "convert", str(reference_file), str(tmp_path / "ro" / "out.safetensors")])
    assert line.endswith("ro/out.safetensors: cannot write it (Permission denied); nothing was written")
    assert list((tmp_path / "ro").iterdir()) == []


def test_convert_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, reference_file) -> None:
    # A real write failure: the file-size limit makes the write fail with EFBIG like ENOSPC would.
    out_dir = tmp_path / "full"
    out_dir.mkdir()

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = subprocess.run(
        [sys.executable, "-m", "img2img", "weights", "convert", str(reference_file), str(out_dir / "out.safetensors")],
        preexec_fn=small_disk, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "out.safetensors: cannot write it (" in lines[0]
    assert "File too large" in lines[0] and lines[0].endswith("; nothing was written")
    assert list(out_dir.iterdir()) == []


def test_kwargs_check_trusts_registry_defaults(tmp_path) -> None:
    # arch= hints build registry defaults (num_feat=64) for a file no detector knows; the size
    # bound applies to numbers the file claims, not to our own defaults.
    torch.save(build("msrresnet", num_feat=8, num_block=2).state_dict(), tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="weights do not fit rrdbnet"):
        load_model(tmp_path / "odd.pth", arch="rrdbnet")
    assert build_module._ALWAYS_PLAUSIBLE >= 8


def test_a_photo_named_safetensors_and_a_safetensors_named_pth(tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    (tmp_path / "cat.safetensors").write_bytes((tmp_path / "cat.png").read_bytes())
    with pytest.raises(CheckpointError, match="cat.safetensors: is a PNG image, not a model file"):
        load_model(tmp_path / "cat.safetensors")
    ours = _our_file(tmp_path / "m.safetensors")
    (tmp_path / "renamed.pth").write_bytes(ours.read_bytes())
    assert load_model(tmp_path / "renamed.pth").kwargs == load_model(ours).kwargs
