"""`img2img eval PRED_DIR TARGET_DIR` and `img2img eval --model M --data DIR`: parse, call
:mod:`img2img.evaluation`, print a table or JSON. Exit code 0 when every image was measured, 1 when
some failed (each named on stderr), 2 for usage errors.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from img2img.cli.common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, fail, get_context

if TYPE_CHECKING:  # torch, OpenCV and the metrics load only when the command runs
    from img2img.evaluation import EvalReport

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

    FID is not computed: it needs an Inception network's weights and a few thousand images; use a
    dedicated tool (e.g. pytorch-fid or torch-fidelity) on the two folders.
    """
    from img2img.evaluation import EvaluationError, compare_folders, evaluate_model

    device = get_context().device
    if scale is not None:
        y_channel = True
        crop = scale if crop is None else crop
    crop = crop or 0
    if crop < 0:
        fail("--crop must be >= 0")
    options = {"crop": crop, "y_channel": y_channel, "use_lpips": use_lpips, "device": device}
    try:
        if model is not None:
            if pred_dir is not None or data_dir is None:
                fail("--model needs --data DIR and no PRED_DIR/TARGET_DIR arguments")
            assert data_dir is not None
            report = evaluate_model(model, data_dir, split=split, direction=direction, inputs=inputs,
                                    targets=targets, **options)
        elif pred_dir is None or target_dir is None:
            fail("give PRED_DIR and TARGET_DIR, or --model M --data DIR")
        else:
            report = compare_folders(pred_dir, target_dir, **options)
    except EvaluationError as e:
        fail(str(e), EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif report.rows:  # nothing measured: the errors alone say why, no empty table before them
        print_table(report, per_image=per_image)
    for failure in report.failures:
        click.echo(f"error: {failure}", err=True)
    sys.exit(EXIT_SOME_FAILED if report.failures or not report.rows else EXIT_OK)


def print_table(report: EvalReport, *, per_image: bool) -> None:
    from img2img.evaluation import METRIC_ORDER

    keys = [k for k in METRIC_ORDER if any(k in r for r in report.rows)]
    conv = "Y (BT.601)" if report.convention.get("y_channel") else "RGB"
    crop = report.convention.get("crop", 0)
    click.echo(f"{len(report.rows)} image(s), metrics on {conv}" + (f", border {crop} px cropped" if crop else ""))
    click.echo(f"{'image':30s}" + "".join(f"{k.upper():>10s}" for k in keys))
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
