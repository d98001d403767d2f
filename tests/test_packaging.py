"""The package as users install it: every subpackage in the wheel, the default upscalers inside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    """pyproject lists packages explicitly (to map weights/ into the wheel): a new subpackage
    missing from the list would be missing from every installed copy."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "img2img").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == found | {"img2img.weights"}
    assert setuptools["package-dir"] == {"img2img.weights": "weights"}


@pytest.mark.slow
def test_the_wheel_carries_the_default_upscalers(tmp_path: Path) -> None:
    """Built from a copy of the sources: the wheel holds weights/*.safetensors as img2img/weights,
    and an installed (unpacked) copy finds them there, not in a checkout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("img2img", "weights"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("img2img-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"img2img/weights/{p.name}" for p in (ROOT / "weights").glob("*.safetensors")}
    assert shipped and shipped <= names
    page = {f"img2img/web/static/{p.name}" for p in (ROOT / "img2img" / "web" / "static").iterdir()}
    assert {"img2img/web/static/index.html", "img2img/web/static/app.js"} <= page <= names  # the web page
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = ("from img2img.checkpoints.bundled import find_bundled; "
            "print(find_bundled('img2img-sr-x4'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == str(tmp_path / "site" / "img2img" / "weights" / "img2img-sr-x4.safetensors")


def test_every_shipped_model_has_its_card_and_figures() -> None:
    """weights/NAME.safetensors comes with NAME.md (the card) and NAME.json (its measured figures,
    written by scripts/eval_default_upscaler.py --json): each mean is the mean of its rows."""
    import json

    models = sorted((ROOT / "weights").glob("*.safetensors"))
    assert models
    for model in models:
        assert model.with_suffix(".md").is_file(), model.name
        card = json.loads(model.with_suffix(".json").read_text())
        assert card["model"] == model.stem and "val" in card["folders"]
        for folder in card["folders"].values():
            rows = folder["per_photo"]
            mean_gain = sum(r["gain"] for r in rows) / len(rows)
            assert abs(folder["mean"]["gain"] - mean_gain) < 1e-9
            assert all(r["gain"] == r["psnr_ours"] - max(r["psnr_pil"], r["psnr_bicubic"]) for r in rows)
        # The real-world protocol (clean / jpeg / noise, gain over PIL bicubic), per denoise strength.
        for strength in card.get("real_world", {}).values():
            for folder in strength["folders"].values():
                for condition, rows in folder["per_photo"].items():
                    assert all(r["gain"] == r["psnr_ours"] - r["psnr_bicubic_pil"] for r in rows)
                    mean_gain = sum(r["gain"] for r in rows) / len(rows)
                    assert abs(folder["summary"][condition]["mean_gain"] - mean_gain) < 1e-9
                    assert folder["summary"][condition]["worst_gain"] == min(r["gain"] for r in rows)
        if "denoise" in card:  # a declared pair: the companion ships too, with its own card
            assert (model.parent / f"{card['denoise']['companion']}.safetensors").is_file()
            assert 0 <= card["denoise"]["default"] <= 1


def test_shipped_models_name_no_path_of_the_machine_that_built_them() -> None:
    """Provenance in the safetensors metadata and the .json cards names files relative to the repo:
    an absolute path (a build machine's run directory) means nothing on a user's machine."""
    import json

    from safetensors import safe_open

    def strings(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    for model in sorted((ROOT / "weights").glob("*.safetensors")):
        with safe_open(model, "pt") as f:
            metadata = f.metadata()
        documents = [json.loads(metadata["img2img"]), json.loads(model.with_suffix(".json").read_text())]
        for text in (s for doc in documents for s in strings(doc)):
            for word in text.split():
                assert not (word.startswith(("/", "~")) or word[1:3] in (":\\", ":/")), (model.name, text)
