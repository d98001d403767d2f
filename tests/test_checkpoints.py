"""Our safetensors format, load_model sources (files, run directories, bundled names) and save_model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import img2img
from img2img.checkpoints import (
    CheckpointError,
    ModelDescriptor,
    bundled,
    convert,
    default_upscaler_name,
    list_bundled,
    load_model,
    read_metadata,
    save_model,
)
from img2img.checkpoints import format as fmt
from img2img.networks import build

# Small versions of each family the format must rebuild exactly: (arch, kwargs, value range, input side).
SMALL = [
    ("resnet_6blocks", {"ngf": 8, "n_blocks": 6, "norm": "instance"}, (-1.0, 1.0), 16),
    ("unet", {"ngf": 4, "num_downs": 5, "norm": "batch", "dropout": True}, (-1.0, 1.0), 32),
    ("rrdbnet", {"scale": 2, "num_feat": 8, "num_block": 2, "num_grow_ch": 4}, (0.0, 1.0), 12),
    ("msrresnet", {"scale": 4, "num_feat": 8, "num_block": 2}, (0.0, 1.0), 10),
]


@pytest.fixture(autouse=True)
def _isolated_model_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Bundled-name lookups must never see the user's cache or environment.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.delenv("IMG2IMG_WEIGHTS_DIR", raising=False)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


def _net(arch: str, kwargs: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build(arch, **kwargs)
    # Non-trivial BatchNorm statistics, so a format that dropped buffers would be caught.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _input(side: int, value_range: tuple[float, float], channels: int = 3) -> torch.Tensor:
    lo, hi = value_range
    g = torch.Generator().manual_seed(1)
    return lo + (hi - lo) * torch.rand(1, channels, side, side, generator=g)


@pytest.mark.parametrize(("arch", "kwargs", "value_range", "side"), SMALL, ids=[s[0] for s in SMALL])
def test_round_trip_gives_identical_outputs(tmp_path, arch, kwargs, value_range, side) -> None:
    net = _net(arch, kwargs)
    path = save_model(net, tmp_path / "m.safetensors", arch=arch, kwargs=kwargs, value_range=value_range)

    desc = load_model(path)

    x = _input(side, value_range)
    with torch.no_grad():
        assert torch.equal(desc(x), net(x))
    assert desc.arch == arch and desc.kwargs == kwargs and desc.value_range == value_range
    assert desc.net is not net and not desc.net.training
    assert (
        desc.scale == net.scale and desc.size_multiple == net.size_multiple and desc.min_size == net.min_size
    )
    assert desc.instance_norm == (kwargs.get("norm") == "instance")


def test_metadata_document_is_json_under_one_key(tmp_path) -> None:
    net = _net("rrdbnet", SMALL[2][1])
    provenance = {"command": "img2img train srgan --data d", "data": "d", "step": 1200, "path": Path("a/b")}
    path = save_model(
        net,
        tmp_path / "m.safetensors",
        arch="rrdbnet",
        kwargs=SMALL[2][1],
        value_range=(0, 1),
        provenance=provenance,
    )
    # Read the header with safetensors itself, not with our reader.
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        keys = set(f.keys())
    assert set(header) == {"format", "img2img"}
    doc = json.loads(header["img2img"])
    assert doc["format"] == "img2img-model" and doc["format_version"] == 1
    assert doc["arch"] == "rrdbnet" and doc["kwargs"] == SMALL[2][1]
    assert (doc["scale"], doc["in_channels"], doc["out_channels"]) == (2, 3, 3)
    assert doc["value_range"] == [0.0, 1.0] and (doc["size_multiple"], doc["min_size"]) == (2, 2)
    assert doc["instance_norm"] is False
    assert doc["provenance"]["command"] == provenance["command"] and doc["provenance"]["step"] == 1200
    assert doc["provenance"]["path"] == "a/b" and doc["provenance"]["img2img_version"] == img2img.__version__
    assert keys == set(net.state_dict())


def test_descriptor_saved_again_keeps_provenance_but_not_its_old_path(tmp_path) -> None:
    net = _net(*SMALL[3][:2])
    first = save_model(net, tmp_path / "a.safetensors", arch="msrresnet", kwargs=SMALL[3][1], value_range=(0, 1),
                       provenance={"step": 7})  # fmt: skip
    desc = load_model(first)
    assert desc.provenance["file"] == str(first) and desc.provenance["step"] == 7
    second = save_model(desc, tmp_path / "b.safetensors", provenance={"note": "copy"})
    doc = read_metadata(second)
    assert doc["provenance"]["step"] == 7 and doc["provenance"]["note"] == "copy"
    assert "file" not in doc["provenance"]


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch) -> None:
    arch, kwargs = SMALL[3][:2]
    path = save_model(
        _net(arch, kwargs), tmp_path / "m.safetensors", arch=arch, kwargs=kwargs, value_range=(0, 1)
    )
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        Path(args[1]).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(fmt, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(_net(arch, kwargs, seed=1), path, arch=arch, kwargs=kwargs, value_range=(0, 1))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_refuses_metadata_that_would_not_rebuild_the_net(tmp_path) -> None:
    net = build("msrresnet", num_feat=8, num_block=2)
    with pytest.raises(CheckpointError, match="weights do not fit msrresnet.*missing.*body.2.conv1.weight"):
        save_model(net, tmp_path / "m.safetensors", arch="msrresnet", kwargs={"num_feat": 8, "num_block": 3},
                   value_range=(0, 1))  # fmt: skip
    with pytest.raises(CheckpointError, match="not in img2img's registry"):
        save_model(ModelDescriptor(net=net, arch="spandrel:ESRGAN"), tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="end in .safetensors"):
        save_model(net, tmp_path / "m.pth", arch="msrresnet", kwargs={}, value_range=(0, 1))
    with pytest.raises(TypeError, match="needs arch="):
        save_model(net, tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


def test_save_unwraps_compiled_and_data_parallel_modules(tmp_path) -> None:
    arch, kwargs = SMALL[3][:2]
    net = _net(arch, kwargs)
    wrapped = torch.nn.DataParallel(net)
    path = save_model(wrapped, tmp_path / "m.safetensors", arch=arch, kwargs=kwargs, value_range=(0, 1))
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(net.state_dict())


def test_newer_format_version_and_broken_metadata_are_refused(tmp_path) -> None:
    tensors = {"w": torch.zeros(2)}
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={"img2img": json.dumps({"format_version": 99})})
    with pytest.raises(
        CheckpointError, match=r"newer.safetensors: written in model format version 99.*upgrade"
    ):
        load_model(newer)
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata={"img2img": "{not json"})
    with pytest.raises(CheckpointError, match="broken.safetensors: .*not valid JSON"):
        load_model(broken)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="garbage.safetensors: not a readable safetensors file"):
        load_model(garbage)


def test_third_party_safetensors_goes_through_detection(tmp_path) -> None:
    kwargs = {"scale": 4, "num_feat": 8, "num_block": 2, "num_grow_ch": 4}
    net = _net("rrdbnet", kwargs)
    path = tmp_path / "community_x4.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))  # no metadata at all
    desc = load_model(path)
    assert desc.arch == "rrdbnet" and desc.kwargs["scale"] == 4 and desc.value_range == (0.0, 1.0)
    x = _input(8, (0, 1))
    with torch.no_grad():
        assert torch.equal(desc(x), net(x))


def test_loaded_pix2pix_unet_is_deterministic(tmp_path) -> None:
    arch, kwargs, value_range, side = SMALL[1]
    path = save_model(
        _net(arch, kwargs), tmp_path / "m.safetensors", arch=arch, kwargs=kwargs, value_range=value_range
    )
    desc = load_model(path)
    x = _input(side, value_range)
    with torch.no_grad():
        assert torch.equal(desc(x), desc(x))  # dropout off, stored BatchNorm statistics
    assert not any(m.training for m in desc.net.modules())


# ------------------------------------------------------------------------- run directories


def _save_small_resnet(path: Path, seed: int) -> torch.nn.Module:
    arch, kwargs = SMALL[0][:2]
    net = _net(arch, kwargs, seed=seed)
    save_model(net, path, arch=arch, kwargs=kwargs, value_range=(-1, 1))
    return net


def _same(desc: ModelDescriptor, net: torch.nn.Module) -> bool:
    x = _input(16, (-1, 1))
    with torch.no_grad():
        return torch.equal(desc(x), net(x))


def test_cycle_run_dir_picks_the_generator_by_direction(tmp_path) -> None:
    g_ab = _save_small_resnet(tmp_path / "g_ab.safetensors", seed=1)
    g_ba = _save_small_resnet(tmp_path / "g_ba.safetensors", seed=2)
    assert _same(load_model(tmp_path), g_ab)
    assert _same(load_model(tmp_path, direction="AtoB"), g_ab)
    assert _same(load_model(tmp_path, direction="BtoA"), g_ba)
    with pytest.raises(CheckpointError, match="direction must be AtoB or BtoA"):
        load_model(tmp_path, direction="atob")


def test_single_model_run_dir_refuses_btoa(tmp_path) -> None:
    net = _save_small_resnet(tmp_path / "model.safetensors", seed=3)
    assert _same(load_model(tmp_path), net)
    with pytest.raises(CheckpointError, match=r"holds one generator \(model.safetensors\).*no B->A"):
        load_model(tmp_path, direction="BtoA")
    with pytest.raises(CheckpointError, match="one model file"):
        load_model(tmp_path / "model.safetensors", direction="BtoA")


def _save_reference_resnet(path: Path, seed: int) -> torch.nn.Module:
    arch, kwargs = SMALL[0][:2]
    net = _net(arch, kwargs, seed=seed)
    torch.save(net.state_dict(), path)  # the reference's save_networks: a bare state dict
    return net


def test_reference_cyclegan_folder(tmp_path) -> None:
    g_a = _save_reference_resnet(tmp_path / "latest_net_G_A.pth", seed=4)
    g_b = _save_reference_resnet(tmp_path / "latest_net_G_B.pth", seed=5)
    _save_reference_resnet(tmp_path / "5_net_G_A.pth", seed=6)
    assert _same(load_model(tmp_path), g_a)
    assert _same(load_model(tmp_path, direction="BtoA"), g_b)


def test_reference_folder_without_latest_takes_the_highest_epoch(tmp_path) -> None:
    _save_reference_resnet(tmp_path / "5_net_G_A.pth", seed=6)
    g_a_20 = _save_reference_resnet(tmp_path / "20_net_G_A.pth", seed=7)
    _save_reference_resnet(tmp_path / "20_net_G_B.pth", seed=8)
    _save_reference_resnet(tmp_path / "100_net_D_A.pth", seed=9)
    assert _same(load_model(tmp_path), g_a_20)


def test_reference_pix2pix_folder_refuses_btoa(tmp_path) -> None:
    net = _save_reference_resnet(tmp_path / "latest_net_G.pth", seed=10)
    assert _same(load_model(tmp_path), net)
    with pytest.raises(CheckpointError, match=r"latest_net_G.pth\).*no B->A"):
        load_model(tmp_path, direction="BtoA")


def test_empty_dir_and_missing_source_errors(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"no model in this directory .*found: notes.txt"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="nope.pth: no such file or directory"):
        load_model(tmp_path / "nope.pth")


# ------------------------------------------------------------------------- bundled names


def test_bundled_names_search_env_dir_then_cache(tmp_path, monkeypatch) -> None:
    env_dir, cache = tmp_path / "env", tmp_path / "xdg_cache" / "img2img"
    env_dir.mkdir()
    cache.mkdir(parents=True)
    in_env = _save_small_resnet(env_dir / "zebra.safetensors", seed=11)
    _save_small_resnet(cache / "zebra.safetensors", seed=12)
    in_cache = _save_small_resnet(cache / "horse.safetensors", seed=13)
    monkeypatch.setenv("IMG2IMG_WEIGHTS_DIR", str(env_dir))
    # The repo's own weights/ (the shipped default upscalers) is searched too: point it at an empty folder.
    monkeypatch.setattr(bundled, "repo_weights_dir", lambda: tmp_path / "repo_weights")

    assert _same(load_model("zebra"), in_env)  # the env folder shadows the cache
    assert _same(load_model("horse"), in_cache)
    assert _same(load_model("horse.safetensors"), in_cache)
    found = {m.name: m.location for m in list_bundled()}
    assert found["zebra"] == "env" and found["horse"] == "cache"
    with pytest.raises(CheckpointError, match=r"no-such-model: .*bundled models available: zebra, horse;"):
        load_model("no-such-model")
    with pytest.raises(CheckpointError, match="one bundled model.*no B->A"):
        load_model("zebra", direction="BtoA")


def test_bundled_default_names() -> None:
    assert default_upscaler_name(4) == "img2img-sr-x4"
    assert default_upscaler_name(2) == "img2img-sr-x2"
    with pytest.raises(ValueError, match="no default upscaler for scale 3"):
        default_upscaler_name(3)


def test_repo_weights_folder_is_next_to_the_package() -> None:
    from img2img.checkpoints.bundled import repo_weights_dir

    assert repo_weights_dir() == Path(__file__).resolve().parents[1] / "weights"


# ------------------------------------------------------------------------- convert


def test_convert_records_provenance_and_rebuilds_the_same_net(tmp_path) -> None:
    kwargs = {"scale": 2, "num_feat": 8, "num_block": 2, "num_grow_ch": 4}
    net = _net("rrdbnet", kwargs)
    src = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": net.state_dict()}, src)
    out = tmp_path / "ours.safetensors"

    convert(src, out, provenance={"command": "img2img weights convert ..."})

    doc = read_metadata(out)
    assert doc["arch"] == "rrdbnet" and doc["kwargs"] == {"in_channels": 3, "out_channels": 3, **kwargs}
    prov = doc["provenance"]
    assert prov["source_file"] == "RealESRGAN_x2plus.pth" and prov["source_format"] == "basicsr-rrdbnet"
    assert prov["state_key"] == "params_ema" and prov["command"] == "img2img weights convert ..."
    assert prov["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    x = _input(8, (0, 1))
    with torch.no_grad():
        assert torch.equal(load_model(out)(x), net(x))
    with pytest.raises(CheckpointError, match="is the input file"):
        convert(out, out)
