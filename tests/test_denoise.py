"""Denoise strength: blending a clean model with the real-world companion its card declares."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from img2img import image_io
from img2img.checkpoints import CheckpointError, bundled, load_model, save_model
from img2img.cli import cli
from img2img.cli.common import EXIT_OK, EXIT_USAGE
from img2img.networks import build
from tests.helpers import smooth_rgb

SR = {"scale": 2, "num_feat": 4, "num_block": 1}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.setenv("IMG2IMG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr(bundled, "repo_weights_dir", lambda: tmp_path / "repo_weights")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(path: Path, seed: int, **kwargs) -> Path:
    torch.manual_seed(seed)
    net = build("msrresnet", **{**SR, **kwargs})
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()  # weights far from zero, so the two models differ everywhere
    return save_model(net, path, arch="msrresnet", kwargs={**SR, **kwargs}, value_range=(0.0, 1.0))


def _pair(folder: Path, default: float = 0.25) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clean, real = _model(folder / "sr-clean.safetensors", 0), _model(folder / "sr-rw.safetensors", 1)
    card = {"model": "sr-clean", "denoise": {"companion": "sr-rw", "default": default}}
    (folder / "sr-clean.json").write_text(json.dumps(card), encoding="utf-8")
    return clean, real


def _state(source, **kw) -> dict[str, torch.Tensor]:
    return load_model(source, **kw).net.state_dict()


def test_the_endpoints_are_the_two_models_exactly(tmp_path) -> None:
    clean, real = _pair(tmp_path / "weights")
    a, b = _state(clean), _state(real)
    zero, one = _state(clean, denoise=0.0), _state(clean, denoise=1.0)
    assert all(torch.equal(zero[k], a[k]) for k in a)
    assert all(torch.equal(one[k], b[k]) for k in b)
    assert not torch.equal(a["conv_first.weight"], b["conv_first.weight"])


def test_between_the_endpoints_each_tensor_is_the_weighted_mean(tmp_path) -> None:
    clean, real = _pair(tmp_path / "weights")
    a, b = _state(clean), _state(real)
    mixed = _state(clean, denoise=0.3)
    for k in a:
        assert torch.allclose(mixed[k], 0.7 * a[k] + 0.3 * b[k], atol=1e-7), k
    # "default": the card's 0.25; a bundled name finds the card beside the bundled file.
    by_default = _state("sr-clean", denoise="default")
    assert all(torch.allclose(by_default[k], 0.75 * a[k] + 0.25 * b[k], atol=1e-7) for k in a)
    desc = load_model("sr-clean", denoise=0.3)
    assert desc.provenance["denoise"] == 0.3 and desc.provenance["denoise_companion"] == "sr-rw"


def test_a_model_without_a_companion_refuses_a_strength(tmp_path) -> None:
    alone = _model(tmp_path / "alone.safetensors", 0)
    with pytest.raises(CheckpointError, match=r"alone.safetensors: --denoise needs a model whose card \(alone.json\)"):
        load_model(alone, denoise=0.5)
    plain = _state(alone)
    as_is = _state(alone, denoise="default")  # the CLI's default: no pair, no blending
    assert all(torch.equal(as_is[k], plain[k]) for k in plain)


def test_bad_cards_strengths_and_pairs(tmp_path) -> None:
    clean, _ = _pair(tmp_path / "weights")
    for bad in (1.5, -0.1, float("nan"), "strong"):
        with pytest.raises(CheckpointError, match="denoise strength must be a number from 0 to 1"):
            load_model(clean, denoise=bad)
    (tmp_path / "weights" / "sr-clean.json").write_text('{"denoise": {"companion": "sr-rw"}}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="needs a 'companion' model name and a 'default' strength"):
        load_model(clean, denoise=0.5)
    other = tmp_path / "other"
    other.mkdir()
    wide = _model(other / "wide.safetensors", 0)
    _model(other / "narrow.safetensors", 1, num_feat=8)
    (other / "wide.json").write_text('{"denoise": {"companion": "narrow", "default": 0.5}}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="a denoise pair must share the architecture"):
        load_model(wide, denoise=0.5)
    (other / "wide.json").write_text('{"denoise": {"companion": "missing", "default": 0.5}}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="missing: no such file, run directory or bundled model"):
        load_model(wide, denoise=0.5)


def test_upscale_cli_denoise(tmp_path) -> None:
    clean, real = _pair(tmp_path / "weights", default=1.0)
    src = tmp_path / "in.png"
    image_io.write_image(src, image_io.Image(pixels=smooth_rgb(12, 10, seed=3)))

    def run(*args: str) -> tuple[int, str, np.ndarray | None]:
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}.png"
        result = CliRunner().invoke(cli, ["upscale", str(src), str(out), *args])
        return result.exit_code, result.output, image_io.read_image(out).pixels if out.exists() else None

    code, _, with_one = run("--model", str(clean), "--denoise", "1")
    assert code == EXIT_OK
    _, _, companion = run("--model", str(real))
    assert np.array_equal(with_one, companion)
    _, _, card_default = run("--model", "sr-clean")  # no --denoise: the card's default, 1.0 here
    assert np.array_equal(card_default, companion)
    _, _, zero = run("--model", str(clean), "--denoise", "0")
    assert not np.array_equal(zero, companion)
    code, output, _ = run("--model", str(real), "--denoise", "0.5")
    assert code == EXIT_USAGE
    assert "--denoise needs a model whose card (sr-rw.json) declares a real-world companion" in output
    code, output, _ = run("--model", str(clean), "--denoise", "2")
    assert code == EXIT_USAGE and "not in the range" in output


def test_eval_and_the_web_page_run_the_pair_as_upscale_does(tmp_path) -> None:
    """`img2img eval --model` and the web page load a paired model at its card's default, like upscale."""
    from img2img.evaluation import evaluate_model
    from img2img.web.jobs import JobQueue

    clean, real = _pair(tmp_path / "weights", default=1.0)  # default 1: the blend is the companion itself
    data = tmp_path / "data"
    for folder in ("lr", "hr"):
        (data / folder).mkdir(parents=True)
    hr = smooth_rgb(24, 20, seed=4)
    image_io.write_image(data / "hr" / "a.png", image_io.Image(pixels=hr))
    image_io.write_image(data / "lr" / "a.png", image_io.Image(pixels=hr[::2, ::2].copy()))
    paired = evaluate_model("sr-clean", data, inputs="lr", targets="hr").means()
    companion = evaluate_model(str(real), data, inputs="lr", targets="hr").means()
    assert paired == companion  # the pair at its default is what ran, not the clean model alone
    assert not torch.equal(_state(clean)["conv_first.weight"], _state(real)["conv_first.weight"])

    from img2img.web.jobs import Job, Options
    from img2img.web.models import ModelEntry

    queue = JobQueue(tmp_path / "jobs", device="cpu", max_pixels=10**6, publish=lambda event: None)
    entry = ModelEntry(id="sr-clean", label="sr", task="upscale", origin="bundled", source="sr-clean")
    job = Job(id="j", name="a.png", model=entry, options=Options(tile=0), folder=tmp_path, input_path=tmp_path / "a")
    served = queue._engine_for(job).model.net.state_dict()
    want = load_model(real).net.state_dict()
    assert all(torch.equal(served[k], want[k]) for k in want)  # the card's default (1.0): the companion
