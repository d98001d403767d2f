"""CPU runtimes (`img2img.inference.backends`): ONNX Runtime / OpenVINO runners against torch, the auto choice."""

from __future__ import annotations

import importlib.util
import threading

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from img2img.checkpoints import ModelDescriptor, save_model
from img2img.checkpoints import export as export_module
from img2img.cli import cli
from img2img.cli.common import EXIT_OK, EXIT_USAGE
from img2img.inference import backends
from img2img.inference.backends import (
    AUTO_CPU,
    BackendError,
    OnnxRuntimeRunner,
    OpenVinoRunner,
    choose_backend,
    make_engine,
    make_runner,
)
from img2img.inference.runners import TorchRunner
from img2img.networks import ARCHITECTURES, build, resolve_kwargs
from tests.helpers import smooth_rgb

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _shared_cache(tmp_path_factory: pytest.TempPathFactory):
    # One cache for the module: the tests share the tiny model's export (the slow part).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


def _descriptor(arch: str, seed: int = 0, **kwargs) -> ModelDescriptor:
    torch.manual_seed(seed)
    kwargs = resolve_kwargs(arch, **kwargs)
    net = build(arch, **kwargs).eval()
    return ModelDescriptor.from_net(
        net, arch=arch, kwargs=kwargs, value_range=ARCHITECTURES[arch].value_range
    )


def _msrresnet(seed: int = 0) -> ModelDescriptor:
    return _descriptor("msrresnet", seed, num_feat=8, num_block=2)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runner_matches_torch_for_two_tile_shapes(backend) -> None:
    desc = _msrresnet()
    runner = make_runner(desc, backend, CPU, threads=1)
    assert isinstance(runner, {"onnxruntime": OnnxRuntimeRunner, "openvino": OpenVinoRunner}[backend])
    for shape in ((2, 3, 24, 32), (1, 3, 40, 16), (2, 3, 24, 32)):
        x = torch.rand(shape)
        with torch.inference_mode():
            want = desc.net(x)
        got = runner(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert (got - want).abs().max() <= 1e-4, shape
    # One session / compiled model per tile shape, reused when a shape comes back.
    cache = runner._sessions if backend == "onnxruntime" else runner._compiled
    assert sorted(cache) == [(1, 3, 40, 16), (2, 3, 24, 32)]


def test_openvino_runner_from_two_threads_at_once() -> None:
    desc = _msrresnet()
    runner = make_runner(desc, "openvino", CPU, threads=1)
    inputs = [torch.rand(1, 3, 24, 24) for _ in range(6)]
    results: dict[int, torch.Tensor] = {}

    def work(indices: list[int]) -> None:
        for i in indices:
            results[i] = runner(inputs[i])

    threads = [
        threading.Thread(target=work, args=([0, 2, 4],)),
        threading.Thread(target=work, args=([1, 3, 5],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with torch.inference_mode():
        for i, x in enumerate(inputs):
            assert (results[i] - desc.net(x)).abs().max() <= 1e-4


def _fastest_installed(arch: str) -> str:
    """Independently of backends._auto: the smallest measured time among the installed runtimes."""
    measured = AUTO_CPU[arch]
    times = {b: getattr(measured, b) for b in ("onnxruntime", "openvino") if backends.installed(b)}
    return min(times, key=times.get)


def test_auto_follows_the_table_and_the_device() -> None:
    sr = _msrresnet()
    assert choose_backend(sr, "auto", CPU) == _fastest_installed("msrresnet") == "openvino"  # make test installs it
    assert choose_backend(sr, "auto", torch.device("cuda")) == "torch"
    assert choose_backend(sr, "torch", CPU) == "torch"
    unlisted = _descriptor("discogan_g", ngf=4)
    assert "discogan_g" not in AUTO_CPU and choose_backend(unlisted, "auto", CPU) == "torch"


def test_auto_keeps_instance_norm_on_torch_and_explicit_requests_are_refused() -> None:
    cyclegan = _descriptor("resnet", ngf=4, n_blocks=1)
    assert cyclegan.instance_norm
    assert choose_backend(cyclegan, "auto", CPU) == "torch"
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(BackendError, match="InstanceNorm.*--backend torch"):
            choose_backend(cyclegan, backend, CPU)


def test_bad_requests_name_the_reason(monkeypatch) -> None:
    sr = _msrresnet()
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'"):
        choose_backend(sr, "tensorrt", CPU)
    with pytest.raises(BackendError, match="runs on the CPU"):
        choose_backend(sr, "onnxruntime", torch.device("cuda"))
    with pytest.raises(BackendError, match="threads must be >= 1"):
        make_runner(sr, "onnxruntime", CPU, threads=0)

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    with pytest.raises(BackendError, match=r"needs openvino: pip install 'img2img\[openvino\]'"):
        choose_backend(sr, "openvino", CPU)
    # auto takes the fastest installed runtime, and none that measured slower than torch: without
    # OpenVINO that is torch for MSRResNet (ONNX Runtime measured 0.96x), ONNX Runtime for U-Net 256.
    assert AUTO_CPU["msrresnet"].onnxruntime > AUTO_CPU["msrresnet"].torch
    assert choose_backend(sr, "auto", CPU) == "torch"
    assert AUTO_CPU["unet_256"].onnxruntime < AUTO_CPU["unet_256"].torch
    assert choose_backend(_descriptor("unet_256", ngf=2), "auto", CPU) == "onnxruntime"


def test_auto_takes_a_runtime_only_when_it_pays_for_its_export(monkeypatch) -> None:
    sr = _descriptor("msrresnet", seed=5, num_feat=4, num_block=1)  # a model no other test exported
    measured = AUTO_CPU["msrresnet"]
    best = _fastest_installed("msrresnet")
    break_even = measured.export / (measured.torch - getattr(measured, best))
    assert not export_module.onnx_cache_path(sr).exists()
    assert choose_backend(sr, "auto", CPU, output_megapixels=0.5 * break_even) == "torch"  # a small run
    assert choose_backend(sr, "auto", CPU, output_megapixels=2 * break_even) == best  # a large one
    assert choose_backend(sr, "auto", CPU) == best  # work unknown (a Python caller): taken as large
    export_module.cached_onnx(sr)  # once the export is cached, even a small run uses it
    assert choose_backend(sr, "auto", CPU, output_megapixels=0.01) == best
    # A runtime measured slower than torch would never be taken.
    monkeypatch.setitem(AUTO_CPU, "msrresnet", backends.Measured(torch=1.0, onnxruntime=2.0, openvino=3.0, export=1))
    assert choose_backend(sr, "auto", CPU) == "torch"


def test_cli_default_backend_is_auto_and_small_runs_stay_on_torch(tmp_path) -> None:
    from img2img.inference import Engine

    model = save_model(_descriptor("msrresnet", seed=6, num_feat=4, num_block=1), tmp_path / "sr.safetensors")
    cv2.imwrite(str(tmp_path / "photo.png"), smooth_rgb(40, 52))
    result = CliRunner().invoke(cli, ["-v", "upscale", str(tmp_path / "photo.png"), str(tmp_path / "out"),
                                      "--model", str(model)])
    assert result.exit_code == EXIT_OK, result.output
    assert "backend auto: torch" in result.output and "pays off from" in result.output
    from img2img.checkpoints import load_model

    want = Engine(load_model(model))(cv2.cvtColor(smooth_rgb(40, 52), cv2.COLOR_BGR2RGB))
    got = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "photo.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, want)  # torch ran it, bit for bit


def test_the_export_is_cached_per_model(monkeypatch) -> None:
    first = export_module.cached_onnx(_msrresnet(seed=0))
    calls = []
    real = export_module.to_onnx
    monkeypatch.setattr(export_module, "to_onnx", lambda desc: calls.append(desc) or real(desc))
    assert export_module.cached_onnx(_msrresnet(seed=0)) == first and calls == []  # same weights: no export
    other = export_module.cached_onnx(_msrresnet(seed=1))
    assert other != first and len(calls) == 1 and other.is_file()
    assert backends.cached_onnx is export_module.cached_onnx  # the runners use this cache


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_engine_on_a_photo_within_one_level_of_torch(backend) -> None:
    desc = _msrresnet()
    photo = smooth_rgb(70, 90)
    want = make_engine(desc, backend="torch", device="cpu", tile=48)(photo)
    engine = make_engine(desc, backend=backend, device="cpu", tile=48, threads=1)
    assert (
        type(engine.runner).__name__
        == {"onnxruntime": "OnnxRuntimeRunner", "openvino": "OpenVinoRunner"}[backend]
    )
    assert engine.plan_for(70, 90).count > 1  # really tiled
    got = engine(photo)
    assert got.shape == want.shape == (280, 360, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_make_engine_keeps_torch_settings_for_torch_and_instance_norm() -> None:
    cyclegan = _descriptor("resnet", ngf=4, n_blocks=1)
    engine = make_engine(cyclegan, backend="auto", device="cpu", tile=32)
    assert isinstance(engine.runner, TorchRunner)
    with pytest.raises(BackendError, match="InstanceNorm"):
        make_engine(cyclegan, backend="openvino", device="cpu")
    with pytest.raises(BackendError, match="--compile applies to the torch backend"):
        make_engine(_msrresnet(), backend="onnxruntime", device="cpu", compile=True)


def test_cli_backend_option(tmp_path) -> None:
    model = save_model(_msrresnet(), tmp_path / "sr.safetensors")
    cv2.imwrite(str(tmp_path / "photo.png"), smooth_rgb(40, 52))
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        result = CliRunner().invoke(
            cli,
            [
                "upscale",
                str(tmp_path / "photo.png"),
                str(tmp_path / backend),
                "--model",
                str(model),
                "--backend",
                backend,
                "--tile",
                "32",
            ],  # fmt: skip
        )
        assert result.exit_code == EXIT_OK, result.output
        outputs[backend] = cv2.imread(str(tmp_path / backend / "photo.png")).astype(int)
    assert outputs["torch"].shape == (160, 208, 3)
    assert np.abs(outputs["torch"] - outputs["onnxruntime"]).max() <= 1

    cyclegan = save_model(_descriptor("resnet", ngf=4, n_blocks=1), tmp_path / "g.safetensors")
    refused = CliRunner().invoke(
        cli,
        [
            "translate",
            str(tmp_path / "photo.png"),
            str(tmp_path / "t"),
            "--model",
            str(cyclegan),
            "--backend",
            "openvino",
        ],  # fmt: skip
    )
    assert refused.exit_code == EXIT_USAGE
    assert "InstanceNorm" in refused.output and "--backend torch" in refused.output


def test_the_cli_offers_exactly_the_backends() -> None:
    from img2img.cli.infer import upscale

    option = next(p for p in upscale.params if p.name == "backend")
    assert tuple(option.type.choices) == backends.BACKENDS


def test_auto_falls_back_to_torch_when_the_export_fails(monkeypatch, caplog) -> None:
    sr = _descriptor("msrresnet", seed=7, num_feat=4, num_block=1)

    def broken(desc):
        raise MemoryError("out of memory while exporting")

    monkeypatch.setattr(backends, "cached_onnx", broken)
    with caplog.at_level("WARNING", logger="img2img.inference"):
        engine = make_engine(sr, backend="auto", device="cpu")
    assert isinstance(engine.runner, TorchRunner) and "running on torch" in caplog.text
    with pytest.raises(MemoryError):  # an explicit request is not second-guessed
        make_engine(sr, backend="onnxruntime", device="cpu")
