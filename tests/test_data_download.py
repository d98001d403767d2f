"""datasets/download.py against a local HTTP server (no internet): resume, checksums, offline, extraction."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import socket
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import Server

SCRIPT = Path(__file__).resolve().parents[1] / "datasets" / "download.py"
spec = importlib.util.spec_from_file_location("datasets_download", SCRIPT)
dl = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = dl  # dataclasses look their module up while the script loads
spec.loader.exec_module(dl)


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = tar_gz({"facades/train/1.jpg": b"pretend image one", "facades/val/2.jpg": b"two"})


@pytest.fixture
def server():
    s = Server({"facades.tar.gz": ARCHIVE})
    yield s
    s.close()


def quiet(*_args) -> None:
    pass


def test_download_verifies_and_extracts(server, tmp_path) -> None:
    digest = "sha256:" + hashlib.sha256(ARCHIVE).hexdigest()
    dl.download("facades", tmp_path, url=server.url("facades.tar.gz"), digest=digest, log=quiet)
    assert (tmp_path / "facades" / "train" / "1.jpg").read_bytes() == b"pretend image one"
    assert not (tmp_path / ".downloads" / "facades.tar.gz").exists()  # archive removed after extraction
    dl.download("facades", tmp_path, url=server.url("facades.tar.gz"), log=quiet)  # already done: no request
    assert len(server.requests) == 1


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path) -> None:
    cache = tmp_path / ".downloads"
    cache.mkdir()
    half = len(ARCHIVE) // 2
    (cache / "facades.tar.gz.part").write_bytes(ARCHIVE[:half])
    dl.download("facades", tmp_path, url=server.url("facades.tar.gz"), keep=True, log=quiet)
    assert server.requests[0]["range"] == f"bytes={half}-"
    assert (cache / "facades.tar.gz").read_bytes() == ARCHIVE
    assert (tmp_path / "facades" / "val" / "2.jpg").read_bytes() == b"two"


def test_checksum_mismatch_stops_and_sets_the_file_aside(server, tmp_path) -> None:
    with pytest.raises(dl.DownloadError, match="does not match the expected"):
        dl.download(
            "facades", tmp_path, url=server.url("facades.tar.gz"), digest="md5:" + "0" * 32, log=quiet
        )
    assert (tmp_path / ".downloads" / "facades.tar.gz.bad").read_bytes() == ARCHIVE
    assert not (tmp_path / "facades").exists()


def test_unknown_checksum_prints_the_computed_sha256(server, tmp_path) -> None:
    lines: list[str] = []
    dl.download("facades", tmp_path, url=server.url("facades.tar.gz"), log=lines.append)
    assert any(f"checksum unknown; sha256 {hashlib.sha256(ARCHIVE).hexdigest()}" in line for line in lines)


def test_offline_message_names_the_host(tmp_path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        dl.DownloadError, match=rf"cannot reach 127\.0\.0\.1:{port} .*are you offline\?.*fetch it by hand"
    ):
        dl.download("facades", tmp_path, url=f"http://127.0.0.1:{port}/facades.tar.gz", log=quiet)


def test_http_error_and_file_urls(server, tmp_path) -> None:
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download("facades", tmp_path, url=server.url("missing.tar.gz"), log=quiet)
    local = tmp_path / "by_hand.tar.gz"
    local.write_bytes(ARCHIVE)
    dl.download("facades", tmp_path / "out", url=local.as_uri(), log=quiet)
    assert (tmp_path / "out" / "facades" / "train" / "1.jpg").exists()


def test_archives_reaching_outside_are_refused(tmp_path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", b"x")
    with pytest.raises(dl.DownloadError, match="outside"):
        dl.extract(evil, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()


def test_catalogue_and_command_line() -> None:
    for name in ("facades", "maps", "edges2shoes", "horse2zebra", "monet2photo", "div2k", "sr-benchmark"):
        assert name in dl.CATALOGUE
        for archive in dl.CATALOGUE[name].archives:
            assert archive.urls and all(u.startswith(("http://", "https://")) for u in archive.urls)
            assert archive.digest is None or archive.digest.split(":")[0] in ("md5", "sha256")
    assert dl.main(["--list"]) == 0
    assert dl.main(["facades", "--checksum", "abc"]) == 2
    assert dl.main(["nosuchset"]) == 1
