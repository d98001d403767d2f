"""The ASGI app: the page, its static files, the model list, the job queue and its event stream.

Routes (docs/web.md): ``GET /`` the page; ``GET /static/NAME`` its files; ``GET /api/models``;
``GET|POST /api/jobs``; ``POST /api/jobs/ID/cancel``; ``DELETE /api/jobs/ID``;
``GET /api/jobs/ID/{before,after,download}``; ``GET /api/download.zip?ids=ID,ID``;
``GET /api/events`` (server-sent events). Nothing else is served: static files come from a fixed
table made at start-up and job files are found by id, so no part of a URL becomes a path.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path, PurePath
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from img2img import image_io
from img2img.web.events import Broadcaster
from img2img.web.jobs import FORMATS, Job, JobQueue, Options, displayable, plain_reason
from img2img.web.models import ModelEntry, find_models

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_BYTES = 50 * 2**20
DEFAULT_MAX_PIXELS = 25_000_000
MAX_SCALE = 8
# Requests that change state must carry this header: a page from another site cannot add it
# without a CORS preflight, which this app never grants (no cross-site job submission).
CSRF_HEADER = "x-img2img"
# Multipart framing and the small option fields around the file.
FORM_OVERHEAD = 64 * 1024
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                  ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                  ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp",
                  ".tif": "image/tiff", ".tiff": "image/tiff", ".zip": "application/zip"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UploadRefused(Exception):
    """An upload the app will not take; ``status`` is the HTTP status, the message the reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def create_app(
    models: Iterable[str | os.PathLike[str]] = (),
    *,
    device: str = "auto",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allowed_hosts: Iterable[str] | None = None,
    catalogue: list[ModelEntry] | None = None,
) -> Starlette:
    """The web app as an ASGI application (serve it with uvicorn, or mount it in another app).

    Args:
        models: folders of model files and run directories to offer beside the bundled models.
        device: where models run (``auto``, ``cpu``, ``cuda``, ``mps``).
        max_bytes: largest upload, in bytes, per image.
        max_pixels: largest upload, in pixels (width x height), per image.
        allowed_hosts: Host header values to answer (e.g. ``["127.0.0.1", "localhost"]``, which
            stops DNS-rebinding pages from reaching a loopback server); None answers any.
        catalogue: the model list itself, instead of finding it (tests, embedding).

    Job files live in a temporary folder that the app's shutdown (its lifespan, or
    ``app.state.close()`` when mounted) removes, and at the latest the interpreter's exit.
    """
    entries = find_models(models) if catalogue is None else list(catalogue)
    by_id = {entry.id: entry for entry in entries}
    static = {path.name: path for path in sorted(STATIC_DIR.iterdir()) if path.is_file()}
    workspace = tempfile.TemporaryDirectory(prefix="img2img-web-")
    root = Path(workspace.name)
    broadcaster = Broadcaster()
    jobs = JobQueue(root, device=device, max_pixels=max_pixels, publish=broadcaster.publish)

    def close() -> None:
        broadcaster.close()
        jobs.close()
        workspace.cleanup()

    # ------------------------------------------------------------------ page and static files

    async def page(request: Request) -> Response:
        return _file(static["index.html"])

    async def static_file(request: Request) -> Response:
        path = static.get(request.path_params["name"])
        if path is None:
            return _error("not found", 404)
        return _file(path)

    # ------------------------------------------------------------------ models and jobs

    async def list_models(request: Request) -> Response:
        return JSONResponse({
            "models": [entry.public() for entry in entries],
            "limits": {"max_bytes": max_bytes, "max_pixels": max_pixels},
            "formats": list(FORMATS),
            "suffixes": sorted(image_io.SUPPORTED_SUFFIXES),
        })

    async def list_jobs(request: Request) -> Response:
        return JSONResponse({"jobs": [job.public() for job in jobs.all()]})

    async def submit(request: Request) -> Response:
        if (refused := _cross_site(request)) is not None:
            return refused
        try:
            created = await _submit(request)
        except UploadRefused as refused:
            return _error(str(refused), refused.status)
        return JSONResponse({"jobs": [job.public() for job in created]}, status_code=201)

    async def _submit(request: Request) -> list[Job]:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise UploadRefused("an upload needs a Content-Length", 411)
        if int(length) > max_bytes + FORM_OVERHEAD:
            raise UploadRefused(f"{_size(int(length))} is over this server's limit of {_size(max_bytes)} per image", 413)
        async with request.form(max_files=1, max_fields=20) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise UploadRefused("no file in the upload (field 'file')")
            name = _display_name(str(form.get("name") or upload.filename or "image"))
            suffix = PurePath(upload.filename or name).suffix.lower()
            if suffix not in image_io.SUPPORTED_SUFFIXES:
                kinds = ", ".join(sorted(image_io.SUPPORTED_SUFFIXES))
                raise UploadRefused(f"not a supported image file (supported: {kinds})", 415)
            chosen = [by_id.get(str(model_id)) for model_id in form.getlist("model")]
            if not chosen or None in chosen:
                raise UploadRefused("choose a model from the list")
            options = _options(form)
            if options.strength is not None:
                unpaired = [m.id for m in chosen if m is not None and not m.denoise_pair]
                if unpaired:
                    raise UploadRefused(
                        f"{', '.join(unpaired)}: no real-world companion in its card, so no denoise strength; "
                        "leave the strength blank"
                    )
            group = secrets.token_urlsafe(8) if len(chosen) > 1 else None
            job_id, folder = jobs.new_folder()
            input_path = folder / f"input{suffix}"
            try:
                await run_in_threadpool(_save, upload, input_path, max_bytes)
                before = await run_in_threadpool(_check_image, input_path, max_pixels)
            except UploadRefused:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        created = []
        for i, model in enumerate(chosen):
            assert model is not None
            if i > 0:
                job_id, folder = jobs.new_folder()
                for path in {input_path, before}:
                    shutil.copyfile(path, folder / path.name)
            job = Job(id=job_id, name=name, model=model, options=options, folder=folder,
                      input_path=folder / input_path.name, before_path=folder / before.name, group=group)
            created.append(jobs.submit(job))
        return created

    async def cancel(request: Request) -> Response:
        if (refused := _cross_site(request)) is not None:
            return refused
        job = jobs.cancel(request.path_params["job_id"])
        if job is None:
            return _error("no such job", 404)
        return JSONResponse({"job": job.public()})

    async def remove(request: Request) -> Response:
        if (refused := _cross_site(request)) is not None:
            return refused
        if not jobs.remove(request.path_params["job_id"]):
            return _error("no such job", 404)
        return Response(status_code=204)

    async def job_file(request: Request) -> Response:
        job = jobs.get(request.path_params["job_id"])
        which = request.path_params["which"]
        if job is None or which not in ("before", "after", "download"):
            return _error("not found", 404)
        if which == "before":
            return _error("not available", 404) if job.before_path is None else _file(job.before_path)
        if job.status != "done" or job.output_path is None:
            return _error(f"job is {job.status}, no result", 404)
        if which == "after":
            return _file(job.preview_path or job.output_path)
        return _file(job.output_path, download=job.download_name)

    async def download_zip(request: Request) -> Response:
        chosen = [jobs.get(job_id) for job_id in request.query_params.get("ids", "").split(",") if job_id]
        done = [job for job in chosen if job is not None and job.status == "done" and job.output_path]
        if not done:
            return _error("no finished jobs to download", 404)
        path = root / f"results-{secrets.token_urlsafe(8)}.zip"
        await run_in_threadpool(_write_zip, path, done)
        return FileResponse(path, media_type="application/zip", filename="img2img-results.zip",
                            background=BackgroundTask(path.unlink, missing_ok=True), headers=_SECURITY_HEADERS)

    async def events(request: Request) -> Response:
        def snapshot() -> dict[str, Any]:
            return {"type": "snapshot", "jobs": [job.public() for job in jobs.all()]}

        return StreamingResponse(broadcaster.stream(snapshot), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(close)

    routes = [
        Route("/", page),
        Route("/static/{name}", static_file),
        Route("/api/models", list_models),
        Route("/api/jobs", list_jobs, methods=["GET"]),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job_id}", remove, methods=["DELETE"]),
        Route("/api/jobs/{job_id}/{which}", job_file),
        Route("/api/download.zip", download_zip),
        Route("/api/events", events),
    ]
    hosts = ["*"] if allowed_hosts is None else list(allowed_hosts)
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])
    app.state.models = entries
    app.state.jobs = jobs
    app.state.root = root
    app.state.close = close
    return app


# ---------------------------------------------------------------------------- helpers


def _file(path: Path, *, download: str | None = None) -> Response:
    media_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    if download is None:
        return FileResponse(path, media_type=media_type, headers=_SECURITY_HEADERS,
                            content_disposition_type="inline")
    return FileResponse(path, media_type=media_type, filename=download, headers=_SECURITY_HEADERS)


def _cross_site(request: Request) -> Response | None:
    """403 for a state-changing request without the page's header (see CSRF_HEADER), else None."""
    if request.headers.get(CSRF_HEADER) != "1":
        return _error(f"missing the {CSRF_HEADER} header", 403)
    return None


def _error(reason: str, status: int) -> Response:
    return JSONResponse({"error": reason}, status_code=status, headers=_SECURITY_HEADERS)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _display_name(name: str) -> str:
    """The file's name as the page shows it (a folder upload keeps its relative path); never a path here."""
    name = _CONTROL.sub("", name.replace("\\", "/")).strip("/ ")
    return name[-200:] or "image"


def _options(form: Any) -> Options:
    def number(key: str, kind: type, low: float, high: float | None = None) -> Any:
        text = str(form.get(key) or "").strip()
        if not text:
            return None
        try:
            value = kind(text)
        except ValueError:
            raise UploadRefused(f"{key} must be a number, not {text!r}") from None
        if value < low or (high is not None and value > high):
            raise UploadRefused(f"{key} must be between {low} and {high}" if high else f"{key} must be >= {low}")
        return value

    tile_text = str(form.get("tile") or "auto").strip()
    tile: int | str = "auto" if tile_text == "auto" else number("tile", int, 0)
    fmt = str(form.get("format") or "same")
    if fmt not in FORMATS:
        raise UploadRefused(f"format must be one of {', '.join(FORMATS)}")
    return Options(tile=tile, overlap=number("overlap", int, 0), scale=number("scale", int, 1, MAX_SCALE),
                   denoise=number("denoise", float, 0.0, 1.0) or 0.0, strength=number("strength", float, 0.0, 1.0),
                   fmt=fmt)


def _save(upload: UploadFile, path: Path, max_bytes: int) -> None:
    """Copy the upload to ``path``, refusing it once it passes ``max_bytes``."""
    upload.file.seek(0)
    written = 0
    with path.open("wb") as out:
        while chunk := upload.file.read(1 << 20):
            written += len(chunk)
            if written > max_bytes:
                raise UploadRefused(f"the file is over this server's limit of {_size(max_bytes)} per image", 413)
            out.write(chunk)


def _check_image(path: Path, max_pixels: int) -> Path:
    """Decode the upload once, so a broken or oversized image is refused now, not when its turn
    comes; returns what the page shows as "before": the file, or a PNG of it beside it."""
    try:
        image = image_io.read_image(path, max_pixels=max_pixels)
    except image_io.ImageIOError as err:
        raise UploadRefused(plain_reason(err.reason), 422) from None
    return displayable(image, path, path.parent / "before.png")


def _write_zip(path: Path, done: list[Job]) -> None:
    used: set[str] = set()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for job in done:
            assert job.output_path is not None and job.download_name is not None
            stem, suffix = PurePath(job.download_name).stem, PurePath(job.download_name).suffix
            member, n = f"{stem}{suffix}", 2
            while member in used:
                member, n = f"{stem}-{n}{suffix}", n + 1
            used.add(member)
            archive.write(job.output_path, member)
