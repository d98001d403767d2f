"""Measuring predictions against targets, folder by folder: what `img2img eval` runs.

Predictions and targets are matched by relative path without extension (``x.png`` against ``x.jpg``
is fine) and read through :mod:`img2img.image_io` as (1, C, H, W) float32 in [0, 1]. The numbers
come from :mod:`img2img.metrics` (PSNR, SSIM, L1 on RGB, or on Y with a border crop for
super-resolution), LPIPS when asked for and available. :func:`evaluate_model` first runs a model
over a dataset's inputs with the inference pipeline, then compares its outputs with the targets.

A file that cannot be measured is a failure named in the report and the others are still
measured; a problem with the request itself (no targets, no such folder, a model that does not
load) raises :class:`EvaluationError`.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from img2img import image_io, metrics

__all__ = ["METRIC_ORDER", "EvalReport", "EvaluationError", "compare_folders", "evaluate_model"]

METRIC_ORDER = ("psnr", "ssim", "l1", "lpips")


class EvaluationError(Exception):
    """The request cannot be evaluated at all (one line naming the folder or model and the reason)."""


@dataclass
class EvalReport:
    """Per-image metrics (``rows``: dicts with ``image`` and metric keys), failures, notes, convention."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    convention: dict[str, Any] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        """Mean of each metric; PSNR over images with a finite value (identical pairs are counted apart)."""
        out: dict[str, float] = {}
        for key in METRIC_ORDER:
            values = [r[key] for r in self.rows if key in r and math.isfinite(r[key])]
            if values:
                out[key] = sum(values) / len(values)
            elif any(key in r for r in self.rows):
                out[key] = math.inf
        return out

    def identical(self) -> int:
        """How many images are identical to their target (infinite PSNR)."""
        return sum(1 for r in self.rows if math.isinf(r.get("psnr", 0.0)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for strict JSON: infinite PSNR (identical images) becomes None and is counted."""

        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {
            "images": len(self.rows),
            "convention": self.convention,
            "mean": {k: clean(v) for k, v in self.means().items()},
            "identical": self.identical(),
            "per_image": [{k: clean(v) for k, v in r.items()} for r in self.rows],
            "failures": self.failures,
            "notes": self.notes,
        }


def compare_folders(
    pred_dir: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    crop: int = 0,
    y_channel: bool = False,
    use_lpips: bool = False,
    device: str = "auto",
) -> EvalReport:
    """Match, read and measure every image under ``target_dir`` against its prediction in ``pred_dir``.

    Both folders are searched recursively with the one listing rule of ``image_io.list_image_files``.
    ``device`` is where the metrics run (``"auto"``: the CPU). Raises EvaluationError when
    ``target_dir`` holds no image.
    """
    pred_dir, target_dir = Path(pred_dir), Path(target_dir)
    device = "cpu" if device == "auto" else device  # a few images' metrics gain nothing from a device hunt
    report = EvalReport(convention={"y_channel": y_channel, "crop": crop})
    preds, targets = _images_by_stem(pred_dir), _images_by_stem(target_dir)
    if not targets:
        raise EvaluationError(f"{target_dir}: no images found")
    lpips = None
    if use_lpips:
        try:
            lpips = metrics.LPIPS(device)
        except RuntimeError as e:
            report.notes.append(str(e))
    for key, target_path in targets.items():
        pred_path = preds.get(key)
        if pred_path is None:
            report.failures.append(f"{target_dir / key}.*: no prediction named {key}.* in {pred_dir}")
            continue
        try:
            pred, target = _read_01(pred_path), _read_01(target_path)
        except image_io.ImageIOError as e:  # one unreadable file is reported, the others are still measured
            report.failures.append(str(e))
            continue
        if pred.shape != target.shape:
            report.failures.append(
                f"{pred_path}: size {tuple(pred.shape[1:])} differs from {target_path} {tuple(target.shape[1:])}"
            )
            continue
        pred, target = pred.to(device), target.to(device)
        try:
            values = metrics.image_metrics(pred, target, crop=crop, y_channel=y_channel)
        except ValueError as e:
            report.failures.append(f"{pred_path}: {e}")
            continue
        row: dict[str, Any] = {"image": key, **{k: float(v[0]) for k, v in values.items()}}
        if lpips is not None and pred.shape[1] == 3:
            row["lpips"] = float(lpips(pred, target)[0])
        report.rows.append(row)
    extra = sorted(set(preds) - set(targets))
    if extra:
        report.notes.append(f"{len(extra)} prediction(s) without a target ignored (e.g. {extra[0]})")
    return report


def evaluate_model(
    model: str,
    data_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    direction: str = "AtoB",
    inputs: str | None = None,
    targets: str | None = None,
    crop: int = 0,
    y_channel: bool = False,
    use_lpips: bool = False,
    device: str = "auto",
) -> EvalReport:
    """Run ``model`` (NAME|FILE|RUN_DIR) over a dataset's inputs, then measure its outputs against the targets.

    Inputs are ``data_dir/{split}A`` and targets ``{split}B`` (swapped for ``direction="BtoA"``), or
    ``inputs`` / ``targets`` relative to ``data_dir``; a dataset in the reference layout of side-by-side
    AB images in ``data_dir/{split}/`` is split into a scratch folder first (the dataset is never
    written to). The model runs on ``device``, the metrics as in :func:`compare_folders`. An input the
    model could not process is a failure with its own reason. Raises EvaluationError when a folder is
    missing or the model cannot be loaded or run.
    """
    from img2img.checkpoints import CheckpointError, load_model
    from img2img.inference import Engine, InferenceError, PipelineUsageError, run_folder

    data_dir = Path(data_dir)
    with tempfile.TemporaryDirectory(prefix="img2img-eval-") as tmp:
        src, dst, unsplit = _model_folders(data_dir, split, direction, inputs, targets, Path(tmp) / "split")
        predictions = Path(tmp) / "predictions"
        try:
            # What `img2img upscale` runs: a declared denoise pair at its card's default strength.
            descriptor = load_model(model, direction=direction if direction == "BtoA" else None, denoise="default")
            run = run_folder(Engine(descriptor, device=device), src, predictions)
        except (CheckpointError, PipelineUsageError, InferenceError) as e:
            raise EvaluationError(str(e)) from e
        report = compare_folders(predictions, dst, crop=crop, y_channel=y_channel, use_lpips=use_lpips,
                                 device=device)
    report.convention["model"] = model
    for path, reason in run.failed:
        stem = Path(path).stem
        report.failures = [f for f in report.failures if f"no prediction named {stem}." not in f]
        report.failures.append(f"{path}: {reason}")
    report.failures += unsplit
    return report


def _images_by_stem(root: Path) -> dict[str, Path]:
    """Images under ``root`` (recursive) keyed by relative path without extension."""
    found: dict[str, Path] = {}
    for p in image_io.list_image_files(root, recursive=True):
        found.setdefault(p.relative_to(root).with_suffix("").as_posix(), p)
    return found


def _read_01(path: Path) -> torch.Tensor:
    """(1, C, H, W) float32 in [0, 1] (8- or 16-bit; alpha dropped; gray stays 1-channel)."""
    return image_io.pixels_to_tensor(image_io.read_image(path).pixels)[None]


def _model_folders(
    data_dir: Path, split: str, direction: str, inputs: str | None, targets: str | None, scratch: Path
) -> tuple[Path, Path, list[str]]:
    """(input folder, target folder, failures of AB images that could not be split)."""
    unsplit: list[str] = []
    a, b = data_dir / f"{split}A", data_dir / f"{split}B"
    if not (inputs or targets or a.is_dir() or b.is_dir()) and (data_dir / split).is_dir():
        from img2img.data import DataError
        from img2img.data.tools import split as split_ab

        try:
            split_report = split_ab(data_dir / split, scratch)
        except DataError as e:
            raise EvaluationError(str(e)) from e
        if not split_report.written:
            raise EvaluationError(
                f"{data_dir / split}: no side-by-side AB image could be split ({'; '.join(split_report.failed)})"
            )
        unsplit = split_report.failed
        a, b = scratch / "A", scratch / "B"
    src, dst = (a, b) if direction == "AtoB" else (b, a)
    src = data_dir / inputs if inputs else src
    dst = data_dir / targets if targets else dst
    for folder, option in ((src, "--inputs"), (dst, "--targets")):
        if not folder.is_dir():
            raise EvaluationError(f"{folder}: no such folder; pass {option} or --split")
    return src, dst, unsplit
