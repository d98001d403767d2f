"""The job queue: uploaded images wait their turn, one runs at a time, each reports per-tile progress.

A job is one image through one model. Its files live in its own folder under the app's temporary
root, named by the job's id (``secrets.token_urlsafe``, so folder names never come from the
browser). One worker thread runs the jobs in order; ``cancel`` takes a waiting job out of the line
and stops a running one at its next batch of tiles. Every change is handed to ``publish`` as a
``{"type": "job", "job": {...}}`` event (see ``events.py``).
"""

from __future__ import annotations

import logging
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from img2img import image_io
from img2img.checkpoints import CheckpointError, load_model
from img2img.inference import Engine, InferenceError, select_device
from img2img.web import processing
from img2img.web.models import ModelEntry

log = logging.getLogger(__name__)

# Output formats the page offers; "same" keeps the input's.
FORMATS = ("same", "png", "jpg", "webp")
# What browsers display; other outputs (TIFF) get a PNG beside them for the page to show.
DISPLAYABLE = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
# Progress events at most this often per job (the last one always goes out).
PROGRESS_INTERVAL_S = 0.1
STATES = ("queued", "running", "done", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised from the progress hook to stop a running job."""


@dataclass(frozen=True)
class Options:
    """Per-job settings from the page's "advanced" section.

    tile: input tile side in pixels, ``"auto"`` or 0 (whole image); overlap: pixels or None (the
    model's default); scale: output side / input side, None for the model's own (other values
    resize the model's output); denoise: 0 (off) to 1, OpenCV's filter applied before the model;
    strength: the model's own denoise strength, 0..1 (its blend with the real-world companion its
    card declares, ``img2img upscale --denoise``), None for the card's default; fmt: one of FORMATS.
    """

    tile: int | str = "auto"
    overlap: int | None = None
    scale: int | None = None
    denoise: float = 0.0
    strength: float | None = None
    fmt: str = "same"
    quality: int = 95


@dataclass
class Job:
    """One image through one model; ``public()`` is what the page sees (no paths)."""

    id: str
    name: str
    model: ModelEntry
    options: Options
    folder: Path
    input_path: Path
    group: str | None = None
    status: str = "queued"
    done: int = 0
    total: int = 0
    error: str | None = None
    seconds: float | None = None
    width: int | None = None
    height: int | None = None
    before_path: Path | None = None
    output_path: Path | None = None
    preview_path: Path | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def download_name(self) -> str | None:
        if self.output_path is None:
            return None
        return f"{PurePath(self.name).stem}_{self.model.id}{self.output_path.suffix}"

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "model": self.model.id,
            "model_label": self.model.label,
            "group": self.group,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "seconds": self.seconds,
            "width": self.width,
            "height": self.height,
            "download_name": self.download_name,
        }


class JobQueue:
    """Jobs by id, run one at a time by a worker thread (started on the first job)."""

    def __init__(
        self,
        root: Path,
        *,
        device: str = "auto",
        max_pixels: int,
        publish: Callable[[dict[str, Any]], None],
    ) -> None:
        self.root = root
        self.device = device
        self.max_pixels = max_pixels
        self._publish = publish
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._waiting: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # One loaded engine at a time: a model stays loaded while consecutive jobs use it.
        self._engine_key: tuple[Any, ...] | None = None
        self._engine: Engine | None = None

    # ------------------------------------------------------------------ the page's calls

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its (created) folder."""
        job_id = secrets.token_urlsafe(16)
        folder = self.root / job_id
        folder.mkdir()
        return job_id, folder

    def submit(self, job: Job) -> Job:
        with self._lock:
            if self._closed:
                raise RuntimeError("the job queue is closed")
            self._jobs[job.id] = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="img2img-web-jobs", daemon=True)
                self._thread.start()
        self._waiting.put(job.id)
        self._changed(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a waiting or running job (a finished one is left as it is)."""
        job = self.get(job_id)
        if job is None:
            return None
        job.cancel_requested.set()
        with self._lock:
            waiting = job.status == "queued"
            if waiting:
                job.status = "cancelled"
        if waiting:
            self._changed(job)
        return job

    def remove(self, job_id: str) -> bool:
        """Cancel the job, forget it and delete its files."""
        job = self.cancel(job_id)
        if job is None:
            return False
        with self._lock:
            self._jobs.pop(job_id, None)
            running = job.status == "running"
        if not running:  # a running job's folder goes once it stops (see _work)
            shutil.rmtree(job.folder, ignore_errors=True)
        self._publish({"type": "removed", "id": job_id})
        return True

    def close(self) -> None:
        """Stop the worker after the running job stops (waiting jobs are cancelled)."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
            thread = self._thread
        for job in jobs:
            job.cancel_requested.set()
        self._waiting.put(None)
        if thread is not None:
            thread.join()

    # ------------------------------------------------------------------ the worker

    def join(self) -> None:
        """Block until every job submitted so far has finished (done, failed or cancelled)."""
        self._waiting.join()

    def _work(self) -> None:
        while True:
            job_id = self._waiting.get()
            try:
                if job_id is None:
                    return
                self._take(job_id)
            finally:
                self._waiting.task_done()

    def _take(self, job_id: str) -> None:
        job = self.get(job_id)
        if job is None or job.cancel_requested.is_set():
            return
        with self._lock:
            job.status = "running"
        self._changed(job)
        self._run(job)
        if self.get(job.id) is None:  # removed while it ran
            shutil.rmtree(job.folder, ignore_errors=True)

    def _run(self, job: Job) -> None:
        start = time.perf_counter()
        last_sent = [0.0]

        def progress(done: int, total: int) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled
            job.done, job.total = done, total
            now = time.perf_counter()
            if done == total or now - last_sent[0] >= PROGRESS_INTERVAL_S:
                last_sent[0] = now
                self._changed(job)

        try:
            image = image_io.read_image(job.input_path, max_pixels=self.max_pixels)
            engine = self._engine_for(job)
            scale = job.options.scale or engine.model.scale
            image = processing.denoise(image, job.options.denoise)
            out = engine(image, progress=progress)
            out = image_io.resize_image(out, (image.height * scale, image.width * scale))
            suffix = job.input_path.suffix if job.options.fmt == "same" else f".{job.options.fmt}"
            output = job.folder / f"output{suffix.lower()}"
            image_io.write_image(output, out, quality=job.options.quality)
            job.preview_path = displayable(out, output, job.folder / "after.png")
            job.width, job.height = out.width, out.height
            job.output_path = output
            status, error = "done", None
        except JobCancelled:
            status, error = "cancelled", None
        except image_io.ImageIOError as err:
            status, error = "failed", plain_reason(err.reason)
        except (CheckpointError, InferenceError, ValueError) as err:
            status, error = "failed", str(err)
        except Exception as err:  # a bug: keep serving the other jobs, and say where to look
            log.exception("job %s (%s) failed", job.id, job.name)
            status, error = "failed", f"internal error ({type(err).__name__}: {err}); see the server's log"
        job.seconds = time.perf_counter() - start
        with self._lock:
            job.status, job.error = status, error
        self._changed(job)

    def _engine_for(self, job: Job) -> Engine:
        key = (job.model.id, job.options.tile, job.options.overlap, job.options.strength)
        if self._engine_key != key or self._engine is None:
            self._engine = self._engine_key = None  # let the previous model go before loading the next
            # Without a strength, a model whose card declares a real-world companion runs blended at
            # the card's default, exactly what `img2img upscale` runs without --denoise.
            strength = "default" if job.options.strength is None else job.options.strength
            descriptor = load_model(job.model.source, direction=job.model.direction,
                                    device=select_device(self.device), denoise=strength)
            self._engine = Engine(descriptor, tile=job.options.tile, overlap=job.options.overlap)
            self._engine_key = key
        return self._engine

    def _changed(self, job: Job) -> None:
        self._publish({"type": "job", "job": job.public()})


def displayable(image: image_io.Image, path: Path, preview: Path) -> Path:
    """``path`` (holding ``image``) if browsers show its format, else ``preview``, a PNG written from ``image``."""
    if path.suffix.lower() in DISPLAYABLE:
        return path
    image_io.write_image(preview, image)
    return preview


def plain_reason(reason: str) -> str:
    """An image_io reason without its advice to Python callers (the page has its own limits)."""
    return reason.split("; pass max_pixels")[0]
