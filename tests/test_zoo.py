"""The model zoo: the table as data, `weights list --available`, `weights get` and `--model NAME`.

Everything runs offline against a local HTTP server (tests/helpers.Server: with Range support,
and switches to ignore Range or to serve the wrong bytes), with zoo entries pointing at it and
small real model files made here.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from img2img.checkpoints import CheckpointError, load_model, zoo
from img2img.checkpoints import download as dl
from img2img.checkpoints.zoo import ZOO, ZooModel
from img2img.cli import cli
from img2img.networks import build, registry
from tests.helpers import Server


def _release_file(scale: int, seed: int) -> bytes:
    """A small RRDBNet saved the way Real-ESRGAN releases are ({"params_ema": state dict})."""
    torch.manual_seed(seed)
    net = build("rrdbnet", scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    buf = io.BytesIO()
    torch.save({"params_ema": net.state_dict()}, buf)
    return buf.getvalue()


X2 = _release_file(2, 0)
X4 = _release_file(4, 1)
OTHER = _release_file(2, 7)  # same size as X2, other weights


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    s = Server({"x2.pth": X2, "x4.pth": X4, "other.pth": OTHER, "page.pth": b"<!DOCTYPE html><html>log in</html>"})
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("IMG2IMG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("IMG2IMG_WEIGHTS_DIR", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def entries(server, monkeypatch) -> dict[str, ZooModel]:
    """Zoo entries pointing at the local server, in place of the real table."""
    made = {
        # the README's story: a published hash and size
        "RealESRGAN_x2plus": ZooModel("RealESRGAN_x2plus", "RealESRGAN_x2plus.pth", "rrdbnet", 2, "BSD-3-Clause",
                                      server.url("x2.pth"), "the release page", sha(X2), "a test", len(X2)),
        # no published hash: trust on first use
        "tofu": ZooModel("tofu", "tofu.pth", "rrdbnet", 4, "BSD-3-Clause", server.url("x4.pth"), "the page",
                         None, "none published"),
        # a hash that does not match what the server sends
        "wrong": ZooModel("wrong", "wrong.pth", "rrdbnet", 2, "x", server.url("other.pth"), "p", sha(X2), "a test",
                          len(X2)),
        # BasicSR style: only a prefix of the hash, in the name
        "prefixed": ZooModel("prefixed", f"m-{sha(X4)[:8]}.pth", "rrdbnet", 4, "x", server.url("x4.pth"), "p",
                             None, "prefix only", sha256_prefix=sha(X4)[:8]),
        "bad-prefix": ZooModel("bad-prefix", "m-00000000.pth", "rrdbnet", 4, "x", server.url("x4.pth"), "p",
                               None, "prefix only", sha256_prefix="00000000"),
        "web-page": ZooModel("web-page", "gd.pth", "rrdbnet", 4, "x", server.url("page.pth"), "p", None, "none"),
        "missing": ZooModel("missing", "missing.pth", "rrdbnet", 4, "x", server.url("gone.pth"), "p", None, "none"),
        "manual": ZooModel("manual", "manual.pth", "rrdbnet", 2, "x", None, "a Google Drive folder", sha(X2), "t"),
        "offline": ZooModel("offline", "offline.pth", "rrdbnet", 2, "x", f"http://127.0.0.1:{_closed_port()}/x2.pth",
                            "the release page", sha(X2), "a test", len(X2)),
    }  # fmt: skip
    monkeypatch.setattr(zoo, "ZOO", tuple(made.values()))
    return made


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# ------------------------------------------------------------------------------------ the table


def test_the_table_lists_the_published_models_with_what_users_need() -> None:
    names = [m.name for m in ZOO]
    assert len(names) == len(set(names))
    for wanted in ("RealESRGAN_x4plus", "RealESRGAN_x2plus", "RealESRNet_x4plus", "RealESRGAN_x4plus_anime_6B",
                   "realesr-general-x4v3", "realesr-general-wdn-x4v3", "realesr-animevideov3", "ESRGAN_x4",
                   "ESRGAN_SRx4_DF2KOST", "MSRResNet_x4", "cyclegan-horse2zebra", "pix2pix-facades_label2photo"):  # fmt: skip
        assert wanted in names
    for m in ZOO:
        assert m.arch in registry.ARCHITECTURES, m  # every zoo entry runs in this version
        assert m.licence and m.page and m.hash_source and m.scale >= 1
        assert m.url is None or m.url.startswith(("https://", "http://")), m
        assert m.file.endswith(".pth") and "/" not in m.file
        if m.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", m.sha256), m
            assert m.size, f"{m.name}: a published hash comes with the published size"
        else:
            assert "none" in m.hash_source or "only" in m.hash_source, m
        if m.sha256_prefix:
            assert m.file.endswith(f"-{m.sha256_prefix}.pth")  # BasicSR: the name carries the prefix
        assert m.companion is None or m.companion in names


def test_published_hashes_are_the_ones_openmodeldb_lists() -> None:
    # Written out again here from OpenModelDB's data/models/*.json, so a typo in the table fails.
    listed = {
        "RealESRGAN_x4plus": ("4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", 67040989),
        "RealESRGAN_x2plus": ("49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb", 67061725),
        "RealESRGAN_x4plus_anime_6B": ("f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da", 17938799),
        "realesr-general-x4v3": ("8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292", 4885111),
        "realesr-general-wdn-x4v3": ("1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca", 4885111),
        "realesr-animevideov3": ("b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d", 2504012),
        "ESRGAN_x4": ("545805ce2d861ee90972b5fa50b851f19ee4bb35dedd2eb090be1f7c935b6b00", 66952991),
    }
    for name, (digest, size) in listed.items():
        model = zoo.get_zoo(name)
        assert (model.sha256, model.size) == (digest, size)


def test_list_available_shows_name_arch_scale_licence_size_hash_and_url(cache) -> None:
    result = run("weights", "list", "--available")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("RealESRGAN_x4plus "))
    for part in ("rrdbnet", "x4", "67.0 MB", "BSD-3-Clause", "4fa0d38905f75ac0",
                 "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"):  # fmt: skip
        assert part in line
    assert "none published" in next(ln for ln in result.output.splitlines() if ln.startswith("RealESRNet_x4plus "))
    rows = json.loads(run("weights", "list", "--available", "--json").output)
    assert {r["name"] for r in rows} == {m.name for m in ZOO}
    assert all(r["cached"] is None for r in rows)


# ------------------------------------------------------------------------------------ weights get


def test_get_downloads_verifies_and_renames_into_the_cache(cache, entries, server) -> None:
    result = run("weights", "get", "RealESRGAN_x2plus")
    assert result.exit_code == 0, result.output
    target = cache / "zoo" / "RealESRGAN_x2plus.pth"
    assert result.stdout.strip() == str(target)
    assert target.read_bytes() == X2
    assert sorted(p.name for p in (cache / "zoo").iterdir()) == ["RealESRGAN_x2plus.pth"]  # no part file
    assert "downloading http://127.0.0.1" in result.stderr and "verified" in result.stderr
    again = run("weights", "get", "RealESRGAN_x2plus")  # cached: checked again, not fetched
    assert again.exit_code == 0 and len(server.requests) == 1
    listed = json.loads(run("weights", "list", "--available", "--json").output)
    assert next(r for r in listed if r["name"] == "RealESRGAN_x2plus")["cached"] == str(target)
    mine = json.loads(run("weights", "list", "--json").output)  # bundled and cached models
    assert {"name": "RealESRGAN_x2plus", "location": "zoo", "path": str(target), "arch": "rrdbnet",
            "scale": 2} in mine  # fmt: skip


def test_an_interrupted_download_resumes_with_a_range_request(cache, entries, server) -> None:
    part = cache / "zoo" / ".RealESRGAN_x2plus.pth.part"
    part.parent.mkdir(parents=True)
    half = len(X2) // 2
    part.write_bytes(X2[:half])
    result = run("weights", "get", "RealESRGAN_x2plus")
    assert result.exit_code == 0, result.output
    assert server.requests == [{"path": "/x2.pth", "range": f"bytes={half}-"}]
    assert "resuming" in result.stderr
    assert (cache / "zoo" / "RealESRGAN_x2plus.pth").read_bytes() == X2
    assert not part.exists()


def test_a_whole_part_file_is_verified_without_fetching_again(cache, entries, server) -> None:
    part = cache / "zoo" / ".RealESRGAN_x2plus.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(X2)  # killed after the last byte, before the rename
    result = run("weights", "get", "RealESRGAN_x2plus")
    assert result.exit_code == 0, result.output
    assert server.requests == [{"path": "/x2.pth", "range": f"bytes={len(X2)}-"}]  # answered 416
    assert (cache / "zoo" / "RealESRGAN_x2plus.pth").read_bytes() == X2


def test_a_server_that_ignores_range_makes_it_start_again(cache, entries, server) -> None:
    server.honour_range = False
    part = cache / "zoo" / ".RealESRGAN_x2plus.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(X2[:100])
    result = run("weights", "get", "RealESRGAN_x2plus")
    assert result.exit_code == 0, result.output
    assert "does not resume" in result.stderr
    assert (cache / "zoo" / "RealESRGAN_x2plus.pth").read_bytes() == X2


def test_a_wrong_hash_is_refused_and_the_download_removed(cache, entries, server) -> None:
    result = run("weights", "get", "wrong")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: wrong: refused {server.url('other.pth')}: its SHA-256 is {sha(OTHER)}, but wrong.pth has "
        f"{sha(X2)} (a test); it was not kept"
    )
    assert list((cache / "zoo").iterdir()) == []  # neither the final name nor a part file to resume
    with pytest.raises(CheckpointError, match="not a model in the zoo|no such file"):
        load_model("wrong.pth")


def test_a_wrong_size_is_refused_before_hashing(cache, entries, server) -> None:
    server.files["x2.pth"] = X2 + b"\0"
    result = run("weights", "get", "RealESRGAN_x2plus")
    assert result.exit_code == 2
    assert f"has {len(X2) + 1:,} bytes, but RealESRGAN_x2plus.pth has {len(X2):,}" in result.stderr
    assert list((cache / "zoo").iterdir()) == []


def test_a_web_page_instead_of_the_file_is_refused(cache, entries, server) -> None:
    result = run("weights", "get", "web-page")
    assert result.exit_code == 2
    assert "is an HTML page, not the model file gd.pth; it was not kept" in result.stderr
    assert list((cache / "zoo").iterdir()) == []
    assert not (cache / "zoo" / "gd.pth.sha256").exists()  # nothing trusted on first use


def test_offline_says_which_url_and_where_to_put_the_file(cache, entries) -> None:
    result = run("weights", "get", "offline")
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith(f"error: offline: cannot download {entries['offline'].url} (")
    assert "are you offline?" in message
    assert "img2img weights get offline --from FILE" in message
    assert str(cache / "zoo" / "offline.pth") in message
    assert len(message.splitlines()) == 1


def test_http_errors_are_one_line(cache, entries) -> None:
    result = run("weights", "get", "missing")
    assert result.exit_code == 2
    assert "cannot download" in result.stderr and "HTTP 404" in result.stderr
    assert "Traceback" not in result.output


def test_from_a_local_copy_or_a_mirror_is_verified_the_same(cache, entries, server, tmp_path) -> None:
    (tmp_path / "copy.pth").write_bytes(OTHER)
    bad = run("weights", "get", "manual", "--from", str(tmp_path / "copy.pth"))
    assert bad.exit_code == 2 and "refused" in bad.stderr
    assert list((cache / "zoo").iterdir()) == []
    (tmp_path / "copy.pth").write_bytes(X2)
    good = run("weights", "get", "manual", "--from", str(tmp_path / "copy.pth"))
    assert good.exit_code == 0, good.output
    assert (cache / "zoo" / "manual.pth").read_bytes() == X2
    mirror = run("weights", "get", "RealESRGAN_x2plus", "--from", server.url("x2.pth"))
    assert mirror.exit_code == 0, mirror.output
    assert (cache / "zoo" / "RealESRGAN_x2plus.pth").read_bytes() == X2


def test_a_file_without_direct_download_says_where_to_get_it(cache, entries) -> None:
    result = run("weights", "get", "manual")
    assert result.exit_code == 2
    assert ("manual.pth has no direct download; get it by hand from a Google Drive folder, then run: "
            "img2img weights get manual --from FILE") in result.stderr  # fmt: skip


def test_trust_on_first_use_records_the_hash_and_requires_it_later(cache, entries, server) -> None:
    first = run("weights", "get", "tofu")
    assert first.exit_code == 0, first.output
    assert f"recorded {sha(X4)}" in first.stderr
    assert (cache / "zoo" / "tofu.pth.sha256").read_text().split()[0] == sha(X4)
    server.files["x4.pth"] = OTHER  # the file changes upstream
    changed = run("weights", "get", "tofu", "--force")
    assert changed.exit_code == 2
    assert "recorded at its first download" in changed.stderr
    assert (cache / "zoo" / "tofu.pth").read_bytes() == X4  # the verified copy stays


def test_basicsr_hash_prefix_is_checked(cache, entries) -> None:
    assert run("weights", "get", "prefixed").exit_code == 0
    bad = run("weights", "get", "bad-prefix")
    assert bad.exit_code == 2 and "does not start with 00000000" in bad.stderr
    assert not (cache / "zoo" / "m-00000000.pth").exists()


def test_a_cached_file_changed_by_hand_is_caught_before_loading(cache, entries) -> None:
    assert run("weights", "get", "RealESRGAN_x2plus").exit_code == 0
    (cache / "zoo" / "RealESRGAN_x2plus.pth").write_bytes(OTHER)
    with pytest.raises(CheckpointError, match="delete it or run: img2img weights get RealESRGAN_x2plus --force"):
        load_model("RealESRGAN_x2plus")


def test_unknown_names_suggest_close_ones(cache) -> None:
    result = run("weights", "get", "RealESRGAN_x4")
    assert result.exit_code == 2
    assert "not a model in the zoo" in result.stderr and "RealESRGAN_x4plus" in result.stderr


# ------------------------------------------------------------------------------------ --model NAME


def test_model_name_downloads_on_first_use_announced_then_uses_the_cache(cache, entries, server, capsys) -> None:
    desc = load_model("RealESRGAN_x2plus")
    assert (desc.arch, desc.scale) == ("rrdbnet", 2)
    assert desc.provenance["file"] == str(cache / "zoo" / "RealESRGAN_x2plus.pth")
    assert "RealESRGAN_x2plus: downloading" in capsys.readouterr().err
    load_model("RealESRGAN_x2plus")
    assert len(server.requests) == 1


def test_upscale_with_a_zoo_name(cache, entries, tmp_path) -> None:
    from PIL import Image

    Image.new("RGB", (12, 10), (120, 60, 30)).save(tmp_path / "in.png")
    result = run("upscale", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--model", "RealESRGAN_x2plus")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").size == (24, 20)


def test_the_readme_story_get_then_info_by_file_name(cache, entries, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no RealESRGAN_x2plus.pth here
    before = run("weights", "info", "RealESRGAN_x2plus.pth")
    assert before.exit_code == 2
    assert "it is the zoo model RealESRGAN_x2plus: `img2img weights get RealESRGAN_x2plus`" in before.stderr
    assert run("weights", "get", "RealESRGAN_x2plus").exit_code == 0
    after = run("weights", "info", "RealESRGAN_x2plus.pth")
    assert after.exit_code == 0, after.output
    assert "architecture     rrdbnet(" in after.stdout and "scale            x2" in after.stdout


def test_a_local_file_wins_over_a_zoo_name(cache, entries, tmp_path, monkeypatch, server) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "RealESRGAN_x2plus.pth").write_bytes(X4)  # the user's own file of that name
    assert load_model("RealESRGAN_x2plus.pth").scale == 4
    assert server.requests == []


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("IMG2IMG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.zoo_dir() == tmp_path / "xdg" / "img2img" / "zoo"
    monkeypatch.setenv("IMG2IMG_CACHE_DIR", str(tmp_path / "own"))
    assert dl.zoo_dir() == tmp_path / "own" / "zoo"
