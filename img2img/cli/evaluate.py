"""`img2img eval PRED_DIR TARGET_DIR` and `img2img eval --model M --data DIR`.

Predictions and targets are matched by relative path without extension (``x.png`` against
``x.jpg`` is fine). Metrics come from :mod:`img2img.metrics` (PSNR, SSIM, L1; RGB, or Y with a
border crop for super-resolution: ``--scale N`` = ``--y-channel --crop N``), LPIPS when the
``lpips`` package and its weights are available. Exit code 0 when every image was measured,
1 when some failed (each named on stderr), 2 for usage errors.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from img2img.cli.common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, fail, get_context

METRIC_ORDER = ("psnr", "ssim", "l1", "lpips")

if TYPE_CHECKING:  # torch, OpenCV and the metrics load only when the command runs
    import torch


@dataclass
class EvalReport:
    """Per-image metrics, their means, failures and notes."""

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
        return sum(1 for r in self.rows if math.isinf(r.get("psnr", 0.0)))


def list_images(root: Path) -> dict[str, Path]:
    """Images under ``root`` (recursive) keyed by relative path without extension."""
    from img2img import image_io

    found: dict[str, Path] = {}
    for p in image_io.list_image_files(root, recursive=True):
        found.setdefault(p.relative_to(root).with_suffix("").as_posix(), p)
    return found


def read_rgb01(path: Path) -> torch.Tensor:
    """(1, C, H, W) float32 in [0, 1] through image_io (8- or 16-bit; alpha dropped; gray stays 1-channel)."""
    from img2img import image_io

    return image_io.pixels_to_tensor(image_io.read_image(path).pixels)[None]


def compare_folders(
    pred_dir: Path, target_dir: Path, *, crop: int, y_channel: bool, use_lpips: bool, device: str
) -> EvalReport:
    """Match, read and measure every target image against its prediction."""
    from img2img import image_io, metrics

    report = EvalReport(convention={"y_channel": y_channel, "crop": crop})
    preds, targets = list_images(pred_dir), list_images(target_dir)
    if not targets:
        raise click.UsageError(f"{target_dir}: no images found")
    lpips = None
    if use_lpips:
        try:
            lpips = metrics.LPIPS(device)
        except RuntimeError as e:
            report.notes.append(str(e))
    else:
        report.notes.append("LPIPS not computed (pass --lpips; needs the 'lpips' package and its weights)")
    report.notes.append(metrics.FID_NOTE)
    for key, target_path in targets.items():
        pred_path = preds.get(key)
        if pred_path is None:
            report.failures.append(f"{target_dir / key}.*: no prediction named {key}.* in {pred_dir}")
            continue
        try:
            pred, target = read_rgb01(pred_path), read_rgb01(target_path)
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


def print_table(report: EvalReport, *, per_image: bool) -> None:
    keys = [k for k in METRIC_ORDER if any(k in r for r in report.rows)]
    conv = "Y (BT.601)" if report.convention.get("y_channel") else "RGB"
    crop = report.convention.get("crop", 0)
    click.echo(f"{len(report.rows)} image(s), metrics on {conv}" + (f", border {crop} px cropped" if crop else ""))
    header = f"{'image':30s}" + "".join(f"{k.upper():>10s}" for k in keys)
    click.echo(header)
    if per_image:
        for r in report.rows:
            click.echo(f"{r['image'][:30]:30s}" + "".join(_fmt(k, r.get(k)) for k in keys))
    means = report.means()
    click.echo(f"{'mean':30s}" + "".join(_fmt(k, means.get(k)) for k in keys))
    if report.identical():
        click.echo(f"({report.identical()} identical image(s): PSNR inf, left out of the PSNR mean)")
    for note in report.notes:
        click.echo(f"note: {note}")


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return f"{'-':>10s}"
    if math.isinf(value):
        return f"{'inf':>10s}"
    return f"{value:10.2f}" if key == "psnr" else f"{value:10.4f}"


def report_json(report: EvalReport) -> str:
    """Strict JSON: infinite PSNR (identical images) is written as null and counted."""

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps({
        "images": len(report.rows),
        "convention": report.convention,
        "mean": {k: clean(v) for k, v in report.means().items()},
        "identical": report.identical(),
        "per_image": [{k: clean(v) for k, v in r.items()} for r in report.rows],
        "failures": report.failures,
        "notes": report.notes,
    }, indent=2)


@click.command("eval")
@click.argument("pred_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model", help="Translate/upscale --data's inputs with this model first (NAME|FILE|RUN_DIR).")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="With --model: dataset root with {split}A and {split}B folders, or {split}/ of side-by-side "
                   "AB images (or see --inputs/--targets).")
@click.option("--split", default="test", show_default=True,
              help="With --model: inputs {split}A, targets {split}B (or the halves of {split}/*).")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), default="AtoB", show_default=True,
              help="With --model: BtoA translates {split}B and compares with {split}A (and picks g_ba of a cycle run).")
@click.option("--inputs", default=None, help="With --model: input folder, relative to --data (overrides --split).")
@click.option("--targets", default=None, help="With --model: target folder, relative to --data.")
@click.option("--scale", type=int, default=None,
              help="Super-resolution convention: Y channel, border of SCALE px cropped (BasicSR).")
@click.option("--y-channel", is_flag=True, help="Measure on the Y channel of YCbCr (BT.601).")
@click.option("--crop", type=int, default=None, help="Pixels cropped from every border before measuring.")
@click.option("--lpips", "use_lpips", is_flag=True, help="Also LPIPS (needs the 'lpips' package and weights).")
@click.option("--per-image", is_flag=True, help="One table row per image.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def eval_command(
    pred_dir: Path | None,
    target_dir: Path | None,
    model: str | None,
    data_dir: Path | None,
    split: str,
    direction: str,
    inputs: str | None,
    targets: str | None,
    scale: int | None,
    y_channel: bool,
    crop: int | None,
    use_lpips: bool,
    per_image: bool,
    as_json: bool,
) -> None:
    """Measure PSNR/SSIM/L1 (and LPIPS) of predictions against targets.

    \b
      img2img eval PRED_DIR TARGET_DIR [--scale 4] [--json]
      img2img eval --model runs/facades --data datasets/facades [--split test] [--direction BtoA]
      img2img eval --model img2img-sr-x4 --data set5 --inputs LRx4 --targets HR --scale 4
    """
    ctx = get_context()
    device = "cpu" if ctx.device == "auto" else ctx.device
    if scale is not None:
        y_channel = True
        crop = scale if crop is None else crop
    crop = crop or 0
    if crop < 0:
        fail("--crop must be >= 0")
    with tempfile.TemporaryDirectory(prefix="img2img-eval-") as tmp:
        if model is not None:
            if pred_dir is not None or data_dir is None:
                fail("--model needs --data DIR and no PRED_DIR/TARGET_DIR arguments")
            assert data_dir is not None
            src, target_dir, unsplit = _model_folders(data_dir, split, direction, inputs, targets, Path(tmp) / "split")
            pred_dir = Path(tmp) / "predictions"
            failed = _predict(model, src, pred_dir, ctx.device, direction)
        elif pred_dir is None or target_dir is None:
            fail("give PRED_DIR and TARGET_DIR, or --model M --data DIR")
        assert pred_dir is not None and target_dir is not None
        try:
            report = compare_folders(pred_dir, target_dir, crop=crop, y_channel=y_channel, use_lpips=use_lpips,
                                     device=device)
        except click.UsageError as e:
            fail(e.message, EXIT_USAGE)
        if model is not None:
            report.convention["model"] = model
            # An input the model could not process: its own reason instead of "no prediction".
            for path, reason in failed:
                report.failures = [f for f in report.failures if f"no prediction named {path.stem}." not in f]
                report.failures.append(f"{path}: {reason}")
            report.failures += unsplit
    if as_json:
        click.echo(report_json(report))
    else:
        print_table(report, per_image=per_image)
    for failure in report.failures:
        click.echo(f"error: {failure}", err=True)
    if not report.rows:
        sys.exit(EXIT_SOME_FAILED)
    sys.exit(EXIT_SOME_FAILED if report.failures else EXIT_OK)


def _model_folders(
    data_dir: Path, split: str, direction: str, inputs: str | None, targets: str | None, scratch: Path
) -> tuple[Path, Path, list[str]]:
    """(input folder, target folder, AB images that could not be split) for ``--model`` evaluation.

    ``{split}A`` / ``{split}B`` folders, or the reference layout of side-by-side AB images in
    ``{split}/``, which are split into ``scratch`` first (the dataset is never written to).
    """
    unsplit: list[str] = []
    a, b = data_dir / f"{split}A", data_dir / f"{split}B"
    if not (inputs or targets or a.is_dir() or b.is_dir()) and (data_dir / split).is_dir():
        from img2img.data import DataError
        from img2img.data.tools import split as split_ab

        try:
            split_report = split_ab(data_dir / split, scratch)
        except DataError as e:
            fail(str(e), EXIT_USAGE)
        if not split_report.written:
            fail(f"{data_dir / split}: no side-by-side AB image could be split ({'; '.join(split_report.failed)})")
        unsplit = split_report.failed
        a, b = scratch / "A", scratch / "B"
    src, dst = (a, b) if direction == "AtoB" else (b, a)
    src = data_dir / inputs if inputs else src
    dst = data_dir / targets if targets else dst
    for folder, option in ((src, "--inputs"), (dst, "--targets")):
        if not folder.is_dir():
            fail(f"{folder}: no such folder; pass {option} or --split")
    return src, dst, unsplit


def _predict(model: str, inputs: Path, out: Path, device: str, direction: str) -> list[tuple[Path, str]]:
    """Run ``model`` over ``inputs`` into ``out`` with the inference pipeline; returns failed inputs."""
    from img2img.checkpoints import CheckpointError, load_model
    from img2img.inference import Engine, InferenceError, PipelineUsageError, run_folder

    try:
        descriptor = load_model(model, direction=direction if direction == "BtoA" else None)
        report = run_folder(Engine(descriptor, device=device), inputs, out)
    except (CheckpointError, PipelineUsageError, InferenceError) as e:
        fail(str(e), EXIT_USAGE)
    return [(Path(p), reason) for p, reason in report.failed]
