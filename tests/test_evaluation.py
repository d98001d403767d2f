"""img2img.evaluation as a library: the report eval prints, without the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from img2img.evaluation import EvaluationError, compare_folders
from tests.helpers import smooth_rgb


def test_compare_folders_reports_rows_failures_and_strict_json(tmp_path) -> None:
    pred, target = tmp_path / "pred", tmp_path / "target"
    (pred / "sub").mkdir(parents=True)
    (target / "sub").mkdir(parents=True)
    same, other = smooth_rgb(24, 32, seed=1), smooth_rgb(24, 32, seed=2)
    Image.fromarray(same).save(target / "sub" / "a.png")
    Image.fromarray(same).save(pred / "sub" / "a.jpg", quality=100)  # matched by stem, not suffix
    Image.fromarray(other).save(target / "b.png")
    Image.fromarray(other).save(pred / "b.png")
    Image.fromarray(other).save(target / "c.png")  # no prediction
    report = compare_folders(pred, target)
    assert [r["image"] for r in report.rows] == ["b", "sub/a"]
    assert math.isinf(report.rows[0]["psnr"]) and report.identical() == 1
    assert 30 < report.rows[1]["psnr"] < math.inf
    assert len(report.failures) == 1 and "no prediction named c.*" in report.failures[0]
    assert report.notes == []  # nothing asked for that could not be done
    data = report.to_dict()
    assert data["mean"]["psnr"] == pytest.approx(report.rows[1]["psnr"])  # the identical pair is left out
    assert data["per_image"][0]["psnr"] is None and data["images"] == 2


def test_no_targets_is_an_evaluation_error(tmp_path) -> None:
    (tmp_path / "t").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "t" / ".hidden.png")  # hidden: not listed
    with pytest.raises(EvaluationError, match="t: no images found"):
        compare_folders(tmp_path, tmp_path / "t")
