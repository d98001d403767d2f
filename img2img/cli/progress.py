"""Progress inside one image for `translate` / `upscale`: the tiles run so far.

The folder pipeline reports ``tile_progress(job, done, total)`` after each batch of tiles
(``img2img.inference.run_jobs``). In a terminal this draws a second tqdm bar under the file bar;
in a pipe or a log file it prints a plain line at most every ``PLAIN_INTERVAL`` seconds, so a
3000 x 2000 upscale that runs for a minute says how far it is, and a folder of quick images
prints nothing extra.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

PLAIN_INTERVAL = 10.0  # seconds between plain lines for one image


class TileProgress:
    """The ``tile_progress`` callback of ``run_jobs``.

    Args:
        jobs: the run's jobs, for "file 3 of 10" in plain lines.
        stream: where to write (stderr).
        terminal: draw a tqdm bar (True) or print plain lines (False).
        interval: seconds between plain lines, default ``PLAIN_INTERVAL`` (a line also ends an
            image that printed one).
    """

    def __init__(
        self, jobs: list[Any], *, stream: TextIO, terminal: bool, interval: float | None = None
    ) -> None:
        self.index = {id(job): i for i, job in enumerate(jobs, 1)}
        self.count = len(jobs)
        self.stream = stream
        self.terminal = terminal
        self.interval = PLAIN_INTERVAL if interval is None else interval
        self._job: Any = None
        self._bar: Any = None
        self._last_line = 0.0
        self._printed = False

    def __call__(self, job: Any, done: int, total: int) -> None:
        if job is not self._job:
            self.close()
            self._job, self._last_line, self._printed = job, time.monotonic(), False
        if total <= 1:
            return  # one pass: the file bar says all there is
        if self.terminal:
            self._draw(job, done, total)
        else:
            self._line(job, done, total)

    def _draw(self, job: Any, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=job.src.name, unit="tile", leave=False, position=1, file=self.stream,
                dynamic_ncols=True,
            )
        self._bar.total = total  # grows when an out-of-memory retry re-plans with smaller tiles
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def _line(self, job: Any, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if now - self._last_line < self.interval and not (finished and self._printed):
            return
        self._last_line, self._printed = now, True
        where = f" (file {self.index[id(job)]} of {self.count})" if self.count > 1 else ""
        print(f"progress: {job.src}{where}: {done}/{total} tiles, {100 * done // total}%", file=self.stream, flush=True)

    def close(self) -> None:
        """Remove the bar of the image in progress (the pipeline is done with it)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
