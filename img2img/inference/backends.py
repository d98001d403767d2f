"""CPU runtimes for the tiled engine: ONNX Runtime and OpenVINO runners, and the ``auto`` choice.

A runner turns one batch of tiles into output tiles (the ``Runner`` protocol of ``runners.py``);
tiling, blending, InstanceNorm statistics and memory stay the engine's, whatever the runner.
Both runners here run the network's ONNX export (``checkpoints/export.py``, cached on disk per
model, so only the first run pays for the export) on the CPU in float32, with an explicit thread
count. ``make_runner`` picks one by name; ``auto`` looks the architecture up in ``AUTO_CPU``, the
speeds measured through the tiled engine (figures in docs/benchmarks.md, method in
docs/backends.md), and takes the fastest installed runtime when it pays for its one-off export;
CUDA and MPS run torch.

InstanceNorm generators stay on torch: the engine freezes whole-image statistics inside the torch
layers, which an ONNX graph cannot receive, so its tiles would each normalise by their own
statistics. ``auto`` keeps them on torch and an explicit ONNX Runtime / OpenVINO request is refused.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from img2img.checkpoints import CheckpointError
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.export import INPUT_NAME, cached_onnx, onnx_cache_path
from img2img.inference.engine import Engine
from img2img.inference.runners import Runner, TorchRunner, select_device
from img2img.inference.tile_policy import TileSpec

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
# The Python packages each runtime needs (the ONNX export needs onnx and onnxscript too).
_PACKAGES = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "onnx", "onnxscript"),
    "openvino": ("openvino", "onnx", "onnxscript"),
}
_INSTALL = {"onnxruntime": "pip install 'img2img[onnx]'", "openvino": "pip install 'img2img[openvino]'"}

@dataclass(frozen=True)
class Measured:
    """Seconds per output megapixel of each CPU backend through the tiled engine, and the one-off
    ONNX export, for one architecture at one size (``benchmarks/bench_backends.py``, 2 threads)."""

    torch: float
    onnxruntime: float
    openvino: float
    export: float

    def seconds_per_megapixel(self, backend: str) -> float:
        return float(getattr(self, backend))


# What ``auto`` decides from: the full run of benchmarks/bench_backends.py on the project's quiet
# 2-core machine, 2026-12-03, with glibc keeping freed memory as the CLI does (the table in
# docs/benchmarks.md, "Backends"). Only measured architectures belong here; any other runs on
# torch. ONNX Runtime measured slower than torch for MSRResNet and RRDBNet, so auto never takes it
# for them. U-Net: whole images (its receptive field is its input, so ``tile="auto"`` runs it whole).
AUTO_CPU: dict[str, Measured] = {
    "msrresnet": Measured(torch=1.370, onnxruntime=1.423, openvino=1.102, export=7.0),  # the bundled x4, 48/10
    "rrdbnet": Measured(torch=16.13, onnxruntime=16.35, openvino=14.53, export=58.0),  # x4, 64/23
    "unet_256": Measured(torch=1.789, onnxruntime=1.714, openvino=1.482, export=8.8),  # ngf 64
}


class BackendError(ValueError):
    """A backend that cannot run this model here (unknown, not installed, wrong device, InstanceNorm)."""


def installed(backend: str) -> bool:
    """True when every package ``backend`` needs can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in _PACKAGES[backend])


def choose_backend(
    model: ModelDescriptor, backend: str, device: torch.device, output_megapixels: float | None = None
) -> str:
    """The concrete backend (``torch``, ``onnxruntime`` or ``openvino``) that runs ``model`` on ``device``.

    ``auto``: torch on CUDA/MPS, for InstanceNorm models and for architectures not in ``AUTO_CPU``;
    otherwise the fastest installed runtime of the table, provided it pays for itself: its ONNX
    export is already cached, or ``output_megapixels`` (the run's work, None: unknown, assume
    large) saves more time than the export costs at the measured speeds.
    Raises BackendError for an explicit request that cannot be honoured, with the reason.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        return _auto(model, device, output_megapixels)
    if backend == "torch":
        return backend
    if device.type != "cpu":
        raise BackendError(f"backend {backend} runs on the CPU here; use --device cpu or --backend torch")
    if model.instance_norm:
        raise BackendError(
            f"backend {backend} cannot run {model.arch}: its InstanceNorm layers need whole-image statistics "
            "that only the torch backend receives when tiling; use --backend torch (or auto)"
        )
    if not installed(backend):
        missing = [name for name in _PACKAGES[backend] if importlib.util.find_spec(name) is None]
        raise BackendError(
            f"backend {backend} needs {', '.join(missing)}: {_INSTALL[backend]}"
        )
    return backend


def _auto(model: ModelDescriptor, device: torch.device, output_megapixels: float | None) -> str:
    measured = AUTO_CPU.get(model.arch)
    if device.type != "cpu" or model.instance_norm or measured is None:
        return "torch"
    fastest = min(
        (b for b in ("onnxruntime", "openvino") if installed(b)),
        key=measured.seconds_per_megapixel,
        default="torch",
    )
    saving = measured.torch - measured.seconds_per_megapixel(fastest)
    if fastest == "torch" or saving <= 0:
        return "torch"
    if output_megapixels is not None and not onnx_cache_path(model).is_file():
        break_even = measured.export / saving
        if output_megapixels < break_even:
            log.info(
                "backend auto: torch (%s would need a one-off ONNX export of ~%.0f s, which pays off from "
                "~%.0f output megapixels; this run makes %.1f)", fastest, measured.export, break_even,
                output_megapixels,
            )
            return "torch"
        log.warning("backend auto: exporting the model to ONNX for %s once (~%.0f s here; cached for later runs)",
                    fastest, measured.export)
    log.info("backend auto: %s (%.2fx torch measured for %s)", fastest,
             measured.torch / measured.seconds_per_megapixel(fastest), model.arch)
    return fastest


def make_runner(
    model: ModelDescriptor,
    backend: str,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    *,
    half: bool = False,
    compile: bool = False,
) -> Runner:
    """A runner for ``model`` on ``device``: a ``TorchRunner`` or one of the CPU runners below.

    ``threads``: the ONNX Runtime / OpenVINO intra-op threads (default: torch's thread count, the
    process setting; the torch runner's threads are the engine's tile pool). ``half`` and
    ``compile`` are torch settings (``compile`` with another backend is an error; ``half`` is a
    GPU setting, ignored on a CPU as the torch runner does). Raises BackendError as
    :func:`choose_backend`, or when the export fails.
    """
    device = select_device(device)
    chosen = choose_backend(model, backend, device)
    if chosen == "torch":
        return TorchRunner(model.net, device=device, half=half, compile=compile)
    if compile:
        raise BackendError(f"--compile applies to the torch backend, not {chosen}")
    threads = torch.get_num_threads() if threads is None else int(threads)
    if threads < 1:
        raise BackendError(f"threads must be >= 1, got {threads}")
    try:
        path = cached_onnx(model)
    except CheckpointError as e:
        raise BackendError(f"backend {chosen}: {e}") from None
    runner_type = OnnxRuntimeRunner if chosen == "onnxruntime" else OpenVinoRunner
    return runner_type(path, model, threads=threads)


def make_engine(
    model: ModelDescriptor,
    *,
    backend: str = "torch",
    device: str | torch.device | None = None,
    threads: int | None = None,
    tile: TileSpec = "auto",
    overlap: int | None = None,
    batch: int | None = None,
    half: bool = False,
    compile: bool = False,
    alpha: str = "bicubic",
    output_megapixels: float | None = None,
) -> Engine:
    """An ``Engine`` for ``model`` whose network runs on ``backend`` (the CLI's ``--backend``).

    ``device``: as for ``Engine`` (None keeps the model where it is). The torch backend gets the
    engine's own torch runner (tile pool, ``half``, ``compile``, InstanceNorm statistics); another
    backend gets :func:`make_runner`'s runner with ``threads``, and ``half`` is ignored with a
    note (float32 on the CPU). ``output_megapixels``: the work planned, for ``auto``'s
    break-even (:func:`choose_backend`). The other arguments are ``Engine``'s.
    """
    device = model.device if device is None else select_device(device)
    chosen = choose_backend(model, backend, device, output_megapixels)
    common = {"tile": tile, "overlap": overlap, "batch": batch, "alpha": alpha}
    if chosen == "torch":
        return Engine(model, device=device, half=half, compile=compile, **common)
    if half:
        log.warning("--half: %s runs float32 on the CPU", chosen)
    try:
        runner = make_runner(model, chosen, device, threads, compile=compile)
    except Exception as err:  # noqa: BLE001 - an export can fail in many ways; auto must still run
        if backend != "auto":
            raise
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("backend auto: %s could not be prepared (%s); running on torch", chosen, reason[:200])
        return Engine(model, device=device, half=half, compile=compile, **common)
    return Engine(model, runner=runner, **common)


class OnnxRuntimeRunner:
    """Runs tile batches with ONNX Runtime on the CPU: (B, C, h, w) float32 -> (B, C_out, h*s, w*s).

    One session per tile shape: the graph's dims are dynamic, but a session that only ever sees
    one shape keeps one memory plan, and the engine uses one tile shape per image. Thread-safe:
    ONNX Runtime sessions may be run from several threads at once.
    """

    name = "onnxruntime"
    device = torch.device("cpu")
    fixed_shape = False

    def __init__(self, onnx_path: Any, model: ModelDescriptor, *, threads: int) -> None:
        import onnxruntime

        self._ort = onnxruntime
        self.path = str(onnx_path)
        self.model = model
        self.threads = threads
        self._sessions: dict[tuple[int, ...], Any] = {}

    def session(self, shape: tuple[int, ...]) -> Any:
        if shape not in self._sessions:
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._sessions[shape] = self._ort.InferenceSession(
                self.path, options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[shape]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = _as_numpy(batch)
        (y,) = self.session(x.shape).run(None, {INPUT_NAME: x})
        return torch.from_numpy(y)


class OpenVinoRunner:
    """Runs tile batches with OpenVINO on the CPU: (B, C, h, w) float32 -> (B, C_out, h*s, w*s).

    One model compiled per tile shape (static shapes compile to faster kernels than dynamic ones),
    float32 inference precision (OpenVINO would otherwise pick bf16 on CPUs that have it), and a
    queue of idle infer requests per shape, so concurrent callers never share one.
    """

    name = "openvino"
    device = torch.device("cpu")
    fixed_shape = False

    def __init__(self, onnx_path: Any, model: ModelDescriptor, *, threads: int) -> None:
        import openvino

        self._core = openvino.Core()
        self._source = self._core.read_model(str(onnx_path))
        self.model = model
        self.threads = threads
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._idle: dict[tuple[int, ...], queue.SimpleQueue[Any]] = {}

    def compiled(self, shape: tuple[int, ...]) -> Any:
        if shape not in self._compiled:
            graph = self._source.clone()
            graph.reshape({INPUT_NAME: list(shape)})
            config = {
                "INFERENCE_NUM_THREADS": self.threads,
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
            }
            self._compiled[shape] = self._core.compile_model(graph, "CPU", config)
            self._idle[shape] = queue.SimpleQueue()
        return self._compiled[shape]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = _as_numpy(batch)
        compiled = self.compiled(x.shape)
        idle = self._idle[x.shape]
        try:
            request = idle.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            request.infer({0: x})
            # The request owns its output buffer and overwrites it on its next call: copy it out.
            y = np.array(request.get_output_tensor(0).data, copy=True)
        finally:
            idle.put(request)
        return torch.from_numpy(y)


def _as_numpy(batch: torch.Tensor) -> np.ndarray:
    """(B, C, h, w) tensor -> contiguous float32 numpy array on the CPU (a view when it already is one)."""
    return np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
