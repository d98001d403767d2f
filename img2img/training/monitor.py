"""What a run reports: progress bar, JSONL log, optional TensorBoard, sample grids."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from img2img.atomic import replacing
from img2img.training.method import Prediction

LOG_NAME = "log.jsonl"
TENSORBOARD_MISSING = ("note: no TensorBoard events are written: the tensorboard package is not installed "
                       "(pip install tensorboard; or set tensorboard: false); log.jsonl has the same values")


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def grid_image(pred: Prediction, *, max_rows: int = 4) -> torch.Tensor:
    """One (3, H, W) float image in [0, 1]: a row per sample, columns input | output | target | extras.

    Inputs smaller than the output (super-resolution) are enlarged with nearest-neighbour so pixels
    stay visible; 1-channel images are shown as gray.
    """
    out = pred.output[:max_rows].detach().float()
    height, width = out.shape[-2:]
    columns = [pred.input[:max_rows], out]
    if pred.target is not None:
        columns.append(pred.target[:max_rows])
    columns += [t[:max_rows] for t in pred.extra.values()]
    tiles = []
    for col in columns:
        col = col.detach().float()
        if col.shape[-2:] != (height, width):
            col = F.interpolate(col, size=(height, width), mode="nearest")
        if col.shape[1] == 1:
            col = col.expand(-1, 3, -1, -1)
        tiles.append(col[:, :3].clamp(0, 1).cpu())
    return torch.cat([torch.cat(list(t), dim=-1) for t in zip(*tiles, strict=True)], dim=-2)


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a (3, H, W) float image in [0, 1] as an 8-bit PNG (image_io: atomic write)."""
    from img2img import image_io

    image_io.write_image(path, image_io.Image(image_io.tensor_to_pixels(image, np.uint8)))


class RunMonitor:
    """Progress bar, ``RUN_DIR/log.jsonl`` (one JSON object per line) and TensorBoard events.

    Train records: ``{"kind": "train", "step", "epoch", "<loss>": mean over the interval,
    "lr_<optimiser>", "it_per_s"}``; validation: ``{"kind": "val", "step", "psnr", "ssim", "l1"}``;
    ``step`` counts completed steps. On resume, records beyond the resumed step are dropped first.

    ``progress``: a tqdm bar on a terminal; when stderr is not a terminal (a pipe, a log file, a
    batch job) a plain progress line instead, at most every ``PLAIN_EVERY_S`` seconds, since a
    bar's carriage returns would make the log one endless line.
    """

    PLAIN_EVERY_S = 30.0

    def __init__(
        self,
        run_dir: Path,
        *,
        total_steps: int,
        start_step: int,
        progress: bool,
        tensorboard: bool,
    ) -> None:
        self.run_dir = run_dir
        self.log_path = run_dir / LOG_NAME
        _truncate_log(self.log_path, start_step)
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        terminal = sys.stderr.isatty()
        self.bar = tqdm(total=total_steps, initial=start_step, disable=not (progress and terminal),
                        dynamic_ncols=True, unit="step")
        self._plain = progress and not terminal
        self._total = total_steps
        self._last_plain = time.perf_counter()
        self.tb = None
        if tensorboard and tensorboard_installed():
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        elif tensorboard and progress:  # quiet runs (-q) print errors only
            print(TENSORBOARD_MISSING, file=sys.stderr, flush=True)
        self._sums: dict[str, float] = {}
        self._count = 0
        self._t0 = time.perf_counter()
        self._since = start_step

    def step(self, step: int, losses: dict[str, float]) -> None:
        """Record the losses of the step that just completed (``step`` completed steps so far)."""
        for k, v in losses.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        self.bar.update(1)

    def flush_train(self, step: int, epoch: int, lrs: dict[str, float]) -> dict[str, Any]:
        """Write the mean losses since the last flush; returns the record."""
        if self._count == 0:
            return {}
        now = time.perf_counter()
        means = {k: v / self._count for k, v in self._sums.items()}
        record: dict[str, Any] = {"kind": "train", "step": step, "epoch": epoch, **means}
        record.update({f"lr_{k}": v for k, v in lrs.items()})
        record["it_per_s"] = (step - self._since) / max(now - self._t0, 1e-9)
        self._write(record)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()}, refresh=False)
        if self._plain and (now - self._last_plain >= self.PLAIN_EVERY_S or step >= self._total):
            losses = ", ".join(f"{k} {v:.3g}" for k, v in means.items())
            print(f"step {step}/{self._total}: {losses}, {record['it_per_s']:.3g} step/s", file=sys.stderr, flush=True)
            self._last_plain = now
        if self.tb is not None:
            for k, v in means.items():
                self.tb.add_scalar(f"loss/{k}", v, step)
            for k, v in lrs.items():
                self.tb.add_scalar(f"lr/{k}", v, step)
        self._sums, self._count, self._t0, self._since = {}, 0, now, step
        return record

    def validation(self, step: int, metrics: dict[str, float]) -> None:
        if not metrics:  # unpaired data: nothing to measure against
            return
        self._write({"kind": "val", "step": step, **metrics})
        self.bar.write(f"step {step}: " + ", ".join(f"val {k} {v:.4g}" for k, v in metrics.items()))
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"val/{k}", v, step)

    def note(self, message: str) -> None:
        self.bar.write(message)

    def _write(self, record: dict[str, Any]) -> None:
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    def close(self) -> None:
        self.bar.close()
        self._log.close()
        if self.tb is not None:
            self.tb.close()


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (left by a run stopped after its last checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
    with replacing(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
