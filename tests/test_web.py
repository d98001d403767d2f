"""The web app over HTTP (Starlette's test client): models by id, uploads and their limits, results,
the zip, path traversal, the safety headers, mounting, shutdown, and `img2img serve` itself."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from img2img import image_io
from img2img.checkpoints import load_model
from img2img.inference import Engine
from img2img.web import create_app, find_models
from img2img.web.events import Broadcaster
from img2img.web.processing import denoise
from tests.helpers import smooth_rgb
from tests.web_fixtures import models_folder, photo

HEADERS = {"x-img2img": "1"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))  # no user cache leaks in
    monkeypatch.delenv("IMG2IMG_WEIGHTS_DIR", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return models_folder(tmp_path / "models")


def upload(client: TestClient, path: Path, *models: str, name: str | None = None, **fields: str):
    data = {"model": list(models), **fields}
    if name is not None:
        data["name"] = name
    return client.post("/api/jobs", files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
                       data=data, headers=HEADERS)


def test_models_are_listed_by_id_without_paths(models: Path) -> None:
    listed = {m["id"]: m for m in TestClient(create_app([models])).get("/api/models").json()["models"]}
    assert listed["img2img-sr-x4"] == {"id": "img2img-sr-x4", "label": "img2img-sr-x4", "task": "upscale",
                                       "origin": "bundled", "direction": None, "scale": 4, "denoise_default": 0.75}
    assert listed["sr-tiny"]["denoise_default"] is None  # no card declaring a companion
    assert (listed["sr-tiny"]["task"], listed["sr-tiny"]["scale"]) == ("upscale", 2)
    assert {k: listed[k]["direction"] for k in ("cyc-AtoB", "cyc-BtoA")} == {"cyc-AtoB": "AtoB", "cyc-BtoA": "BtoA"}
    assert listed["cyc-AtoB"]["task"] == "translate"
    text = TestClient(create_app([models])).get("/api/models").text
    assert str(models) not in text and "safetensors" not in text


def test_a_models_folder_that_is_itself_a_run_directory(models: Path) -> None:
    ids = {m.id: m for m in find_models([models / "cyc"])}
    assert ids["cyc-BtoA"].source == str(models / "cyc") and ids["cyc-BtoA"].direction == "BtoA"


def test_upload_runs_and_the_result_is_the_engines_output(models: Path, tmp_path: Path) -> None:
    src = photo(tmp_path / "a.png")
    app = create_app([models])
    with TestClient(app) as client:
        response = upload(client, src, "sr-tiny", tile="16")
        assert response.status_code == 201, response.text
        (job,) = response.json()["jobs"]
        assert len(job["id"]) >= 22 and job["status"] in ("queued", "running", "done")
        app.state.jobs.join()
        job = client.get("/api/jobs").json()["jobs"][0]
        assert (job["status"], job["width"], job["height"], job["download_name"]) == ("done", 48, 40, "a_sr-tiny.png")
        assert job["total"] > 1 and job["done"] == job["total"]  # 16-px tiles: per-tile progress
        download = client.get(f"/api/jobs/{job['id']}/download")
        assert download.headers["content-disposition"] == 'attachment; filename="a_sr-tiny.png"'
        got = image_io.read_image(io_file(tmp_path / "got.png", download.content)).pixels
        expected = Engine(load_model(models / "sr-tiny.safetensors"), tile=16)(image_io.read_image(src)).pixels
        assert np.array_equal(got, expected)
        before = client.get(f"/api/jobs/{job['id']}/before")
        assert before.content == src.read_bytes() and before.headers["content-type"] == "image/png"
        assert client.get(f"/api/jobs/{job['id']}/after").content == download.content


def io_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_one_upload_through_several_models_is_one_group(models: Path, tmp_path: Path) -> None:
    app = create_app([models])
    with TestClient(app) as client:
        jobs = upload(client, photo(tmp_path / "a.png"), "sr-tiny", "img2img-sr-x2").json()["jobs"]
        app.state.jobs.join()
        assert jobs[0]["group"] and jobs[0]["group"] == jobs[1]["group"]
        done = client.get("/api/jobs").json()["jobs"]
        assert [(j["model"], j["status"], j["width"]) for j in done] == [("sr-tiny", "done", 48),
                                                                         ("img2img-sr-x2", "done", 48)]
        archive = client.get("/api/download.zip", params={"ids": ",".join(j["id"] for j in done)})
        names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        assert names == ["a_sr-tiny.png", "a_img2img-sr-x2.png"]


def test_tiff_and_output_format_get_browser_previews(models: Path, tmp_path: Path) -> None:
    src = tmp_path / "scan.tif"
    image_io.write_image(src, image_io.Image(pixels=smooth_rgb(16, 16, seed=3)))
    app = create_app([models])
    with TestClient(app) as client:
        (job,) = upload(client, src, "sr-tiny").json()["jobs"]
        (webp,) = upload(client, src, "sr-tiny", format="webp").json()["jobs"]
        app.state.jobs.join()
        assert client.get(f"/api/jobs/{job['id']}/before").headers["content-type"] == "image/png"
        assert client.get(f"/api/jobs/{job['id']}/after").headers["content-type"] == "image/png"
        assert client.get(f"/api/jobs/{job['id']}/download").headers["content-type"] == "image/tiff"
        assert client.get(f"/api/jobs/{webp['id']}/download").headers["content-type"] == "image/webp"


@pytest.mark.parametrize(
    ("name", "content", "status", "reason"),
    [
        ("notes.txt", b"hello", 415, "not a supported image file"),
        ("broken.png", b"hello, not a png", 422, "not a recognised image file"),
        ("cut.png", None, 422, ""),
    ],
)
def test_bad_uploads_are_refused_with_the_reason_and_the_server_goes_on(
    models: Path, tmp_path: Path, name: str, content: bytes | None, status: int, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content if content is not None else photo(tmp_path / "ok.png").read_bytes()[:60])
    app = create_app([models])
    with TestClient(app) as client:
        response = upload(client, path, "sr-tiny")
        assert response.status_code == status and reason in response.json()["error"]
        assert str(tmp_path) not in response.text and str(app.state.root) not in response.text
        assert upload(client, photo(tmp_path / "ok.png"), "sr-tiny").status_code == 201
        app.state.jobs.join()
        assert [j["status"] for j in client.get("/api/jobs").json()["jobs"]] == ["done"]


def test_uploads_are_limited_in_bytes_and_pixels(models: Path, tmp_path: Path) -> None:
    src = photo(tmp_path / "a.png", 40, 40)
    with TestClient(create_app([models], max_bytes=1000)) as client:
        response = upload(client, src, "sr-tiny")
        assert response.status_code == 413 and "over this server's limit of 0.0 MB" in response.json()["error"]
    with TestClient(create_app([models], max_pixels=1000)) as client:
        response = upload(client, src, "sr-tiny")
        assert response.status_code == 422
        assert response.json()["error"] == ("image is 40x40 = 1,600 pixels, over the limit of 1,000 "
                                            "(a guard against decompression bombs); to read it, raise the limit to 1600 or more "
                                            "(img2img --max-pixels / IMG2IMG_MAX_PIXELS, or read_image(max_pixels=))")


@pytest.mark.parametrize("model", ["", "no-such-model", "../models/sr-tiny.safetensors", "sr-tiny.safetensors"])
def test_only_listed_model_ids_are_accepted(models: Path, tmp_path: Path, model: str) -> None:
    app = create_app([models])
    with TestClient(app) as client:
        response = upload(client, photo(tmp_path / "a.png"), model)
        assert (response.status_code, response.json()) == (400, {"error": "choose a model from the list"})
        assert app.state.jobs.all() == []


@pytest.mark.parametrize(("field", "value"), [("tile", "-1"), ("tile", "big"), ("scale", "9"), ("denoise", "2"),
                                              ("format", "gif"), ("overlap", "x")])
def test_bad_options_are_usage_errors(models: Path, tmp_path: Path, field: str, value: str) -> None:
    with TestClient(create_app([models])) as client:
        response = upload(client, photo(tmp_path / "a.png"), "sr-tiny", **{field: value})
        assert response.status_code == 400 and field in response.json()["error"]


def test_scale_and_denoise_options(models: Path, tmp_path: Path) -> None:
    app = create_app([models])
    with TestClient(app) as client:
        upload(client, photo(tmp_path / "a.png"), "sr-tiny", scale="3", denoise="0.5")
        app.state.jobs.join()
        (job,) = client.get("/api/jobs").json()["jobs"]
        assert (job["status"], job["width"], job["height"]) == ("done", 72, 60)


def test_the_models_own_denoise_strength(models: Path, tmp_path: Path) -> None:
    """strength: the blend with the companion a card declares (`upscale --denoise`), as the CLI runs it."""
    app = create_app([models])
    src = photo(tmp_path / "a.png")
    with TestClient(app) as client:
        refused = upload(client, src, "sr-tiny", strength="0.5")
        assert refused.status_code == 400 and "sr-tiny: no real-world companion" in refused.json()["error"]
        assert upload(client, src, "img2img-sr-x2", strength="2").status_code == 400
        for strength in ("0", ""):
            assert upload(client, src, "img2img-sr-x2", strength=strength).status_code == 201
        app.state.jobs.join()
        jobs = sorted(client.get("/api/jobs").json()["jobs"], key=lambda job: job["id"])
        outputs = [image_io.read_image(app.state.jobs.get(job["id"]).output_path).pixels for job in jobs]
    image = image_io.read_image(src)
    clean = Engine(load_model("img2img-sr-x2", denoise=0.0))(image).pixels
    default = Engine(load_model("img2img-sr-x2", denoise="default"))(image).pixels
    assert not np.array_equal(clean, default)
    assert sorted(map(bytes, map(np.ascontiguousarray, outputs))) == sorted(map(bytes, [clean, default]))


def test_denoise() -> None:
    clean = np.empty((32, 32, 3))
    clean[:] = (90, 140, 200)  # a flat colour: whatever denoising removes is noise
    noisy = clean + np.random.default_rng(0).normal(0, 12, clean.shape)
    image = image_io.Image(pixels=np.clip(np.round(noisy), 0, 255).astype(np.uint8))
    assert np.abs(denoise(image, 1.0).pixels - clean).mean() < 0.5 * np.abs(image.pixels - clean).mean()
    assert denoise(image, 0.0) is image
    with pytest.raises(ValueError, match="8-bit"):
        denoise(image_io.Image(pixels=smooth_rgb(8, 8, dtype=np.uint16)), 0.5)


TRAVERSALS = [
    "/static/../app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e%2fapp.py",
    "/static/..%5capp.py",
    "/static/%2fetc%2fpasswd",
    "/static/app.py",
    "/static/",
    "/app.py",
    "/static/../../../../../../etc/passwd",
    "/api/jobs/..%2f..%2f..%2fetc%2fpasswd/download",
    "/api/jobs/JOB/..%2finput.png",
    "/api/jobs/JOB/input",
    "/api/jobs/JOB/..%2f..%2fJOB/before",
    "/api/jobs/%2e%2e/before",
    "/api/download.zip?ids=..%2fJOB",
]


def test_nothing_outside_the_static_files_and_job_outputs_is_served(models: Path, tmp_path: Path) -> None:
    app = create_app([models])
    with TestClient(app) as client:
        (job,) = upload(client, photo(tmp_path / "a.png"), "sr-tiny").json()["jobs"]
        app.state.jobs.join()
        assert client.get(f"/api/jobs/{job['id']}/download").status_code == 200
        for url in TRAVERSALS:
            response = client.get(url.replace("JOB", job["id"]))
            assert response.status_code in (404, 405), (url, response.status_code)
            assert b"import" not in response.content and b"root:" not in response.content, url
            assert b"PNG" not in response.content, url


def test_the_page_and_its_files_come_with_safety_headers(models: Path) -> None:
    with TestClient(create_app([models])) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'data-testid="file-input"' in page.text
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")


def test_state_changes_need_the_apps_header(models: Path, tmp_path: Path) -> None:
    app = create_app([models])
    with TestClient(app) as client:
        src = photo(tmp_path / "a.png")
        response = client.post("/api/jobs", files={"file": ("a.png", src.read_bytes())}, data={"model": "sr-tiny"})
        assert response.status_code == 403 and app.state.jobs.all() == []
        (job,) = upload(client, src, "sr-tiny").json()["jobs"]
        app.state.jobs.join()
        assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 403
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 403
        assert client.delete(f"/api/jobs/{job['id']}", headers=HEADERS).status_code == 204
        assert client.get(f"/api/jobs/{job['id']}/download").status_code == 404
        assert list(app.state.root.iterdir()) == []


def test_a_loopback_server_answers_only_to_its_own_names(models: Path) -> None:
    app = create_app([models], allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://localhost:8765").get("/").status_code == 200
    assert TestClient(app, base_url="http://rebound.example:8765").get("/").status_code == 400


def test_job_files_are_removed_on_shutdown(models: Path, tmp_path: Path) -> None:
    app = create_app([models])
    with TestClient(app) as client:
        upload(client, photo(tmp_path / "a.png"), "sr-tiny")
        app.state.jobs.join()
        assert any(app.state.root.iterdir())
    assert not app.state.root.exists()


def test_the_app_mounts_under_a_prefix(models: Path, tmp_path: Path) -> None:
    app = create_app([models])
    outer = Starlette(routes=[Mount("/tools/img2img", app=app)])
    client = TestClient(outer)
    assert 'href="static/app.css"' in client.get("/tools/img2img/").text  # relative: works under the prefix
    assert client.get("/tools/img2img/static/app.css").status_code == 200
    response = client.post("/tools/img2img/api/jobs", files={"file": ("a.png", photo(tmp_path / "a.png").read_bytes())},
                           data={"model": "sr-tiny"}, headers=HEADERS)
    assert response.status_code == 201
    app.state.jobs.join()
    app.state.close()
    assert not app.state.root.exists()


def test_events_reach_every_subscriber_from_any_thread() -> None:
    async def main() -> list[str]:
        broadcaster = Broadcaster()
        stream = broadcaster.stream(lambda: {"type": "snapshot", "jobs": []})
        lines = [await anext(stream)]
        threading.Thread(target=broadcaster.publish, args=({"type": "job", "job": {"id": "x"}},)).start()
        lines.append(await anext(stream))
        broadcaster.close()
        lines += [line async for line in stream]
        return lines

    assert asyncio.run(main()) == ['data: {"type":"snapshot","jobs":[]}\n\n', 'data: {"type":"job","job":{"id":"x"}}\n\n']


def serve(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "img2img", "serve", "--no-open", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    return process, process.stdout.readline()


def test_serve_prints_its_address_serves_and_cleans_up(models: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "XDG_CACHE_HOME": str(tmp_path / "xdg_cache")}
    (tmp_path / "tmp").mkdir()
    process, line = serve("--models", str(models), env=env)
    try:
        assert line.startswith("serving on http://127.0.0.1:") and line.endswith("/\n"), line
        with urllib.request.urlopen(line.split()[-1] + "api/models") as response:
            assert "sr-tiny" in response.read().decode()
        assert [p.name[:12] for p in (tmp_path / "tmp").iterdir()] == ["img2img-web-"]
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert list((tmp_path / "tmp").iterdir()) == []


def test_serve_warns_when_it_listens_beyond_loopback(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from click.testing import CliRunner

    from img2img.cli import cli

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: served.append(sockets[0].getsockname()))
    result = CliRunner().invoke(cli, ["serve", "--no-open", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 0, result.output
    (address,) = served
    assert result.stdout == f"serving on http://0.0.0.0:{address[1]}/\n"
    assert "warning: listening on 0.0.0.0: anyone who can reach this machine can use the page" in result.stderr
