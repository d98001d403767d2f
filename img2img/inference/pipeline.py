"""Files in, files out: the folder pipeline behind `img2img translate` and `img2img upscale`.

``plan_jobs(src, dst)`` turns a file, a directory or a glob into (input, output) pairs and refuses
what cannot be right (an output that is an input, two inputs onto one output) before any work.
``run_jobs(engine, jobs)`` runs them: a reader thread decodes the next images while the model
runs, a writer thread encodes finished ones, every output is written under a temporary name and
renamed when complete (``image_io.write_image``), existing outputs are skipped (so an interrupted
run resumes), and a bad file is recorded with its reason while the rest go on.
"""

from __future__ import annotations

import glob
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img2img import image_io
from img2img.inference.engine import InferenceError

if TYPE_CHECKING:
    from img2img.inference.engine import Engine

FORMATS = {"same": None, "png": ".png", "jpg": ".jpg", "webp": ".webp"}
_GLOB_CHARS = frozenset("*?[")
_QUEUE_DEPTH = 2  # images decoded ahead / waiting to be encoded: bounds the memory they hold


class PipelineUsageError(ValueError):
    """SRC/DST that cannot work (nothing to read, output onto an input, ...); the CLI exits 2."""


@dataclass(frozen=True)
class Job:
    """One input file and the output path it goes to."""

    src: Path
    dst: Path


@dataclass
class RunReport:
    """What happened to every job: written, skipped (output existed), failed (path, reason)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    megapixels: float = 0.0  # input pixels processed

    @property
    def ok(self) -> bool:
        return not self.failed


# ----------------------------------------------------------------------------------- planning


def plan_jobs(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    recursive: bool = False,
    suffix: str = "",
    fmt: str = "same",
) -> list[Job]:
    """Pair every input image with its output path.

    Args:
        src: an image file, a directory (its images; with ``recursive`` also those of its
            sub-folders, keeping their structure) or a glob pattern (``**`` with ``recursive``).
        dst: a directory; or, when ``src`` is one file, a file path (its suffix picks the format).
            A path that exists as a directory, ends with a separator or has no image suffix is a
            directory.
        suffix: appended to each output's stem (``photo.png`` -> ``photo_x4.png`` with ``_x4``).
        fmt: ``same`` (the input's format), ``png``, ``jpg`` or ``webp``.

    Raises PipelineUsageError when there is nothing to read, when an output would overwrite an
    input, or when two inputs would write the same output.
    """
    if fmt not in FORMATS:
        raise PipelineUsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    src_text, dst_text = os.fspath(src), os.fspath(dst)
    src_path, dst_path = Path(src_text).expanduser(), Path(dst_text).expanduser()
    dst_is_dir = dst_path.is_dir() or dst_text.endswith(("/", os.sep)) or not image_io.is_image_path(dst_path)

    if src_path.is_file():
        if not image_io.is_image_path(src_path):
            raise PipelineUsageError(f"{src_path}: not an image file name (supported: {_suffixes()})")
        target = dst_path / _output_name(src_path, suffix, fmt) if dst_is_dir else dst_path
        jobs = [Job(src_path, target)]
    else:
        if dst_path.is_file():
            raise PipelineUsageError(f"{dst_path}: is a file; with several inputs DST must be a directory")
        # Outputs of an earlier run in a sub-folder of SRC are not inputs (DST == SRC is checked below).
        nested = dst_path.resolve() != src_path.resolve()
        jobs = [
            Job(path, dst_path / rel.parent / _output_name(path, suffix, fmt))
            for path, rel in _inputs(src_text, src_path, recursive=recursive)
            if not (nested and _is_inside(path, dst_path))
        ]
        if not jobs:
            raise PipelineUsageError(f"{src_text}: no image files found (supported: {_suffixes()})")
    _check_outputs(jobs)
    return jobs


def _suffixes() -> str:
    return ", ".join(sorted(image_io.SUPPORTED_SUFFIXES))


def _inputs(text: str, path: Path, *, recursive: bool) -> Iterator[tuple[Path, Path]]:
    """(input file, its path relative to the root whose structure the outputs copy)."""
    if path.is_dir():
        for p in image_io.list_image_files(path, recursive=recursive):
            yield p, p.relative_to(path)
    elif _GLOB_CHARS & set(text):
        root = _glob_root(text)
        found = (Path(p) for p in glob.glob(os.path.expanduser(text), recursive=recursive))
        for p in sorted(found):
            if p.is_file() and image_io.is_image_path(p) and not p.name.startswith("."):
                yield p, p.relative_to(root)
    else:
        raise PipelineUsageError(f"{text}: no such file or directory")


def _glob_root(pattern: str) -> Path:
    """The directory part of ``pattern`` before its first wildcard."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _output_name(path: Path, suffix: str, fmt: str) -> str:
    return f"{path.stem}{suffix}{FORMATS[fmt] or path.suffix}"


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_outputs(jobs: list[Job]) -> None:
    inputs = {job.src.resolve() for job in jobs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        out = job.dst.resolve()
        if out in inputs:
            raise PipelineUsageError(
                f"{job.dst}: the output would overwrite the input {job.src}; choose another DST or a --suffix"
            )
        if out in seen:
            raise PipelineUsageError(
                f"{job.dst}: both {seen[out]} and {job.src} would be written here; use --format same or a --suffix"
            )
        seen[out] = job.src


# ------------------------------------------------------------------------------------ running


def run_jobs(
    engine: Engine,
    jobs: list[Job],
    *,
    overwrite: bool = False,
    quality: int = 95,
    max_pixels: int | None = image_io.DEFAULT_MAX_PIXELS,
    progress: bool = False,
    on_error: Callable[[Path, str], None] | None = None,
) -> RunReport:
    """Run ``engine`` on every job; returns the report (see ``RunReport``).

    A file that cannot be read or written, or that does not fit in memory even at the smallest
    tile, is recorded in ``report.failed`` (and passed to ``on_error`` right away) and the run
    goes on. Any other exception is a bug and propagates, after the threads stop.
    ``progress`` shows a tqdm bar over files (with input megapixels per second).
    """
    report = RunReport()
    start = time.perf_counter()
    todo = []
    for job in jobs:
        if job.dst.exists() and not overwrite:
            report.skipped.append(job.dst)
        else:
            todo.append(job)

    def fail(path: Path, reason: str) -> None:
        report.failed.append((path, reason))
        if on_error is not None:
            on_error(path, reason)

    bar = _progress_bar(len(jobs), initial=len(report.skipped), enabled=progress)
    stop = threading.Event()
    reader = _Reader(todo, max_pixels=max_pixels, stop=stop)
    writer = _Writer(quality=quality, stop=stop)
    try:
        for job, image, error in reader:
            if error is not None:
                fail(job.src, error)
                bar.update(1)
                continue
            try:
                out = engine.run_image(image)
            except InferenceError as err:
                fail(job.src, str(err))
                bar.update(1)
                continue
            report.megapixels += image.height * image.width / 1e6
            writer.put(job, out)
            for done, reason in writer.finished():
                _record(report, done, reason, fail)
                bar.update(1)
            bar.set_postfix_str(f"{report.megapixels / max(time.perf_counter() - start, 1e-9):.3f} Mpx/s")
        for done, reason in writer.close():
            _record(report, done, reason, fail)
            bar.update(1)
    finally:
        stop.set()
        reader.join()
        writer.join()
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


def _record(report: RunReport, job: Job, reason: str | None, fail: Callable[[Path, str], None]) -> None:
    if reason is None:
        report.written.append(job.dst)
    else:
        fail(job.dst, reason)


def _progress_bar(total: int, *, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", disable=not enabled, dynamic_ncols=True)


class _Reader:
    """Decodes the jobs' inputs in a thread, ``_QUEUE_DEPTH`` images ahead of the model.

    Iterating yields (job, image, None) or (job, None, reason) in job order.
    """

    def __init__(self, jobs: list[Job], *, max_pixels: int | None, stop: threading.Event) -> None:
        self._queue: queue.Queue[tuple[Job, image_io.Image | None, str | None] | None] = queue.Queue(
            _QUEUE_DEPTH
        )
        self._error: BaseException | None = None
        self._stop = stop
        self._thread = threading.Thread(
            target=self._work, args=(jobs, max_pixels), daemon=True, name="img2img-reader"
        )
        self._thread.start()

    def _work(self, jobs: list[Job], max_pixels: int | None) -> None:
        try:
            for job in jobs:
                try:
                    item = (job, image_io.read_image(job.src, max_pixels=max_pixels), None)
                except image_io.ImageIOError as err:
                    item = (job, None, err.reason)
                if not self._put(item):
                    return
        except BaseException as err:  # a bug in decoding: hand it to the main thread
            self._error = err
        self._put(None)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[Job, image_io.Image | None, str | None]]:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                item = None  # stopped early (another thread failed); its error surfaces there
            if item is None:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def join(self) -> None:
        self._thread.join()


class _Writer:
    """Encodes and writes outputs in a thread while the model works on the next image."""

    def __init__(self, *, quality: int, stop: threading.Event) -> None:
        self._queue: queue.Queue[tuple[Job, image_io.Image] | None] = queue.Queue(_QUEUE_DEPTH)
        self._done: queue.Queue[tuple[Job, str | None]] = queue.Queue()
        self._error: BaseException | None = None
        self._quality = quality
        self._stop = stop
        self._thread = threading.Thread(target=self._work, daemon=True, name="img2img-writer")
        self._thread.start()

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is None:
                return
            job, image = item
            try:
                image_io.write_image(job.dst, image, quality=self._quality)
                self._done.put((job, None))
            except image_io.ImageIOError as err:
                self._done.put((job, err.reason))
            except BaseException as err:  # a bug in encoding: hand it to the main thread
                self._error = err
                self._stop.set()
                return

    def put(self, job: Job, image: image_io.Image) -> None:
        while True:
            self._raise_error()
            try:
                self._queue.put((job, image), timeout=0.1)
                return
            except queue.Full:
                continue

    def finished(self) -> Iterator[tuple[Job, str | None]]:
        """Outputs finished since the last call."""
        self._raise_error()
        while True:
            try:
                yield self._done.get_nowait()
            except queue.Empty:
                return

    def close(self) -> Iterator[tuple[Job, str | None]]:
        """Wait for the queued outputs, then report them."""
        self._queue.put(None)
        self._thread.join()
        self._raise_error()
        yield from self.finished()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def join(self) -> None:
        self._thread.join()
