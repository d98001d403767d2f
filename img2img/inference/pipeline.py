"""Files in, files out: the folder pipeline behind `img2img translate` and `img2img upscale`.

``plan_jobs(src, dst)`` turns a file, a directory or a glob into (input, output) pairs and refuses
what cannot be right (an output that is an input, two inputs onto one output) before any work.
``run_jobs(engine, jobs)`` runs them: a reader thread decodes the next images while the model
runs, a writer thread encodes finished ones (one single-thread executor each: their errors come
out of the futures' ``result()``), every output is written under a temporary name and renamed
when complete (``image_io.write_image``), existing outputs are skipped (so an interrupted run
resumes), and a bad file is recorded with its reason while the rest go on. ``run_folder`` is the
two in one call.
"""

from __future__ import annotations

import glob
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from img2img import image_io
from img2img.inference.engine import Engine
from img2img.inference.errors import InferenceError, PipelineUsageError

FORMATS = {"same": None, "png": ".png", "jpg": ".jpg", "webp": ".webp"}
_GLOB_CHARS = frozenset("*?[")
READ_AHEAD = 2  # images decoded ahead of the model: bounds the memory they hold
WRITE_BEHIND = 2  # finished images waiting to be encoded, likewise

TileProgress = Callable[["Job", int, int], None]  # tile_progress(job, done, total), see Engine.__call__


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
    input, when two inputs would write the same output, or when a path cannot be looked at (a
    name over the file system's limits, a folder without permission).
    """
    try:
        return _plan_jobs(src, dst, recursive=recursive, suffix=suffix, fmt=fmt)
    except OSError as err:
        where = err.filename if err.filename is not None else dst
        raise PipelineUsageError(f"{where}: {err.strerror or err}") from None


def _plan_jobs(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, recursive: bool, suffix: str, fmt: str
) -> list[Job]:
    if fmt not in FORMATS:
        raise PipelineUsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    _check_suffix(suffix)
    src_text, dst_text = os.fspath(src), os.fspath(dst)
    src_path, dst_path = Path(src_text).expanduser(), Path(dst_text).expanduser()
    dst_is_dir = dst_path.is_dir() or dst_text.endswith(("/", os.sep)) or not image_io.is_image_path(dst_path)

    if src_path.is_file():
        if not image_io.is_image_path(src_path):
            raise PipelineUsageError(f"{src_path}: not an image file name (supported: {_suffixes()})")
        if not dst_is_dir:
            _check_format_matches(dst_path, fmt)
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
        # With DST == SRC and a --suffix/--format, the outputs of an earlier run are not inputs.
        made_by = {job.dst.resolve(): job for job in jobs if job.dst.resolve() != job.src.resolve()}
        jobs = [job for job in jobs if made_by.get(job.src.resolve(), job) is job]
        if not jobs:
            raise PipelineUsageError(f"{src_text}: no image files found (supported: {_suffixes()})")
    _check_outputs(jobs)
    _check_writable(jobs)
    return jobs


def _check_format_matches(dst: Path, fmt: str) -> None:
    """A DST file's suffix picks its format; an explicit ``--format`` that says otherwise is a contradiction."""
    wanted = FORMATS[fmt]
    same = {".jpg": ".jpeg", ".jpeg": ".jpg"}
    if wanted is not None and dst.suffix.lower() not in (wanted, same.get(wanted)):
        raise PipelineUsageError(
            f"{dst}: the file name says {dst.suffix.lstrip('.') or 'no format'} but --format is {fmt}; "
            f"name the output {dst.stem}{wanted} or drop --format (DST's suffix picks the format)"
        )


def _check_suffix(suffix: str) -> None:
    """A suffix stays inside the file name: no separator, no NUL, so outputs never leave DST."""
    bad = [c for c in ("/", os.sep, os.altsep or "/", "\0") if c in suffix]
    if bad:
        raise PipelineUsageError(
            f"--suffix {suffix!r}: must not contain {bad[0]!r} (it is added to each output's file name, "
            f"it cannot name a folder)"
        )


def _check_writable(jobs: list[Job]) -> None:
    """Each output folder is, or can be made, a writable directory: found now, not after the work."""
    for folder in sorted({job.dst.parent for job in jobs}):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise PipelineUsageError(f"{folder}: cannot be an output folder, {existing} is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PipelineUsageError(f"{folder}: cannot write there (permission denied on {existing})")


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
    tile_progress: TileProgress | None = None,
    outscale: float | None = None,
) -> RunReport:
    """Run ``engine`` on every job; returns the report (see ``RunReport``).

    A file that cannot be read or written, or that does not fit in memory even at the smallest
    tile, is recorded in ``report.failed`` (and passed to ``on_error`` right away) and the run
    goes on. Any other exception is a bug and propagates, once the reader has stopped and the
    outputs already finished are written. ``progress`` shows a tqdm bar over files (with input
    megapixels per second); ``tile_progress(job, done, total)`` follows the tiles of each image.
    ``outscale`` (e.g. 3.5) resizes each output to that many times the input's size after the
    model (``output_size``; ``image_io.resize_image``'s filter), None keeps the model's scale.
    """
    if outscale is not None and not (math.isfinite(outscale) and outscale > 0):
        raise ValueError(f"outscale must be a positive number, got {outscale!r}")
    report = RunReport()
    start = time.perf_counter()
    todo = []
    for folder in {job.dst.parent for job in jobs}:
        image_io.remove_stale_temporaries(folder)  # left by a killed run

    def fail(path: Path, reason: str) -> None:
        report.failed.append((path, reason))
        if on_error is not None:
            on_error(path, reason)

    for job in jobs:
        if job.dst.is_dir():
            fail(job.dst, "a directory is where the output file should go; move it away")
        elif job.dst.exists() and not overwrite:
            report.skipped.append(job.dst)
        else:
            todo.append(job)

    def finish(job: Job, writing: Future[str | None]) -> None:
        reason = writing.result()  # a bug in encoding raises here
        if reason is None:
            report.written.append(job.dst)
        else:
            fail(job.dst, reason)
        bar.update(1)

    bar = _progress_bar(len(jobs), initial=len(report.skipped) + len(report.failed), enabled=progress)
    reader = ThreadPoolExecutor(1, thread_name_prefix="img2img-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="img2img-write")
    upcoming = iter(todo)
    reads: deque[tuple[Job, Future[tuple[image_io.Image | None, str | None]]]] = deque()
    writes: deque[tuple[Job, Future[str | None]]] = deque()

    def read_next(count: int) -> None:
        for job in islice(upcoming, count):
            reads.append((job, reader.submit(_read, job.src, max_pixels)))

    try:
        read_next(READ_AHEAD)
        while reads:
            job, reading = reads.popleft()
            read_next(1)
            image, reason = reading.result()  # a bug in decoding raises here
            if image is None:
                fail(job.src, reason or "unreadable")
                bar.update(1)
                continue
            try:
                out = engine.run_image(image, progress=None if tile_progress is None else partial(tile_progress, job))
            except InferenceError as err:
                fail(job.src, str(err))
                bar.update(1)
                continue
            except MemoryError:
                fail(job.src, f"out of memory running the model on {image.width}x{image.height} pixels")
                bar.update(1)
                continue
            if outscale is not None:
                out = image_io.resize_image(out, output_size(image.height, image.width, outscale))
            report.megapixels += image.height * image.width / 1e6
            writes.append((job, writer.submit(_write, job.dst, out, quality)))
            while writes and (writes[0][1].done() or len(writes) > WRITE_BEHIND):
                finish(*writes.popleft())
            bar.set_postfix_str(f"{report.megapixels / max(time.perf_counter() - start, 1e-9):.3f} Mpx/s")
        while writes:
            finish(*writes.popleft())
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)  # outputs handed over are finished: each is written whole or not at all
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


def run_folder(
    engine: Engine,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    recursive: bool = False,
    suffix: str = "",
    fmt: str = "same",
    overwrite: bool = False,
    quality: int = 95,
    max_pixels: int | None = image_io.DEFAULT_MAX_PIXELS,
    progress: bool = False,
    on_error: Callable[[Path, str], None] | None = None,
    tile_progress: TileProgress | None = None,
    outscale: float | None = None,
) -> RunReport:
    """``plan_jobs(src, dst, ...)`` then ``run_jobs(engine, jobs, ...)``: the CLI's folder pipeline.

    Raises PipelineUsageError for SRC/DST that cannot work; failed files are listed in
    ``report.failed``, not raised.
    """
    jobs = plan_jobs(src, dst, recursive=recursive, suffix=suffix, fmt=fmt)
    return run_jobs(
        engine,
        jobs,
        overwrite=overwrite,
        quality=quality,
        max_pixels=max_pixels,
        progress=progress,
        on_error=on_error,
        tile_progress=tile_progress,
        outscale=outscale,
    )


def output_megapixels(jobs: list[Job], scale: int, *, overwrite: bool = False) -> float:
    """Megapixels the model will write for ``jobs`` (each input's header size x ``scale`` squared;
    outputs that exist are skipped unless ``overwrite``; unreadable files count 0): the work a run
    plans, e.g. for ``backend="auto"``'s break-even."""
    total = 0
    for job in jobs:
        if overwrite or not job.dst.exists():
            size = image_io.image_size(job.src)
            total += 0 if size is None else size[0] * size[1]
    return total * scale * scale / 1e6


def output_size(height: int, width: int, outscale: float) -> tuple[int, int]:
    """(height, width) of an ``outscale`` times larger output of a ``height`` x ``width`` input, rounded, >= 1."""
    return max(1, round(height * outscale)), max(1, round(width * outscale))


def _read(path: Path, max_pixels: int | None) -> tuple[image_io.Image | None, str | None]:
    """(image, None), or (None, reason) for a file that cannot be decoded."""
    try:
        return image_io.read_image(path, max_pixels=max_pixels), None
    except image_io.ImageIOError as err:
        return None, err.reason
    except MemoryError:
        return None, "out of memory while decoding (the image is too large for the memory available)"
    except Exception as err:  # noqa: BLE001 - a hostile file may make a decoder raise anything
        return None, f"cannot decode ({type(err).__name__}: {err})"


def _write(path: Path, image: image_io.Image, quality: int) -> str | None:
    """None once written, or the reason it could not be."""
    try:
        image_io.write_image(path, image, quality=quality)
    except image_io.ImageIOError as err:
        return err.reason
    except MemoryError:
        return "out of memory while encoding"
    return None


def _progress_bar(total: int, *, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", disable=not enabled, dynamic_ncols=True)
