"""ONNX export: a model descriptor -> an ``.onnx`` file that carries the descriptor's facts.

The network is traced with the torch.export-based exporter (``torch.onnx.export(..., dynamo=True)``,
which needs ``onnxscript``) with dynamic batch, height and width, so one file serves every image
and tile size the architecture accepts (its ``size_multiple`` and ``min_size`` still apply: callers
pad, as the tiled engine does). The file's ``metadata_props`` hold the same document as our
``.safetensors`` metadata (``format.metadata_document``), one top-level field per key with a JSON
value (``arch``, ``kwargs``, ``scale``, ``value_range``, ``size_multiple``, ``instance_norm``,
``provenance``, ...), so Netron and ``onnx`` show them and :func:`read_onnx_metadata` reads them back.

Graph interface: input ``"input"`` (batch, in_channels, height, width), output ``"output"``
(batch, out_channels, height*scale, width*scale), both float32 in the model's ``value_range``
(float16 with ``half=True``, meant for GPUs).

The exporter, ``onnx`` and ONNX Runtime (for :func:`parity`) are optional dependencies
(``pip install img2img[onnx]``); a missing one is a ``CheckpointError`` saying what to install.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from img2img.atomic import replacing
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.errors import CheckpointError
from img2img.checkpoints.format import metadata_document

ONNX_SUFFIX = ".onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "output"
INSTALL_HINT = "pip install 'img2img[onnx]'"
# Largest acceptable max |ONNX - torch| for a random input, as a fraction of the value range's
# width: float32 graphs reorder a few sums (far below this); float16 keeps ~3 decimal digits.
PARITY_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2}
# Smallest side of the example input traced by the exporter (rounded up to the size multiple).
_EXAMPLE_SIDE = 32


def require(module: str) -> Any:
    """Import an optional dependency of ONNX export/inference, or raise CheckpointError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CheckpointError(f"ONNX export needs the {module!r} package: {INSTALL_HINT}") from None


def example_shape(desc: ModelDescriptor, *, batch: int = 2, grow: int = 0) -> tuple[int, int, int, int]:
    """A valid input shape for ``desc``: (batch, in_channels, h, w) with h != w, both multiples of
    ``size_multiple`` and at least ``min_size``; ``grow`` adds that many multiples to both sides
    (another size than the traced one, to check that height and width really are dynamic)."""
    m = desc.size_multiple
    side = -(-max(_EXAMPLE_SIDE, desc.min_size) // m) * m + grow * m
    # Height and width differ so the exporter cannot assume they are one and the same symbol.
    return batch, desc.in_channels, side + m, side


def to_onnx(
    desc: ModelDescriptor,
    *,
    half: bool = False,
    opset: int | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Any:
    """Trace ``desc.net`` into an ``onnx.ModelProto`` with dynamic batch/height/width and our metadata.

    ``half``: float16 weights, input and output. ``opset``: the ONNX opset (the exporter's default
    when None). ``provenance`` is merged over the descriptor's (e.g. the export command).
    The descriptor's network is not modified (a copy is traced).
    """
    require("onnxscript")
    onnx = require("onnx")
    from torch.export import Dim

    dtype = torch.float16 if half else torch.float32
    net = copy.deepcopy(desc.net).to(device="cpu", dtype=dtype).eval()
    example = torch.zeros(example_shape(desc), dtype=dtype)
    dynamic = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}
    options: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    try:
        # The exporter reports its steps with print(); a command's output is ours to choose.
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dynamic,),
                verbose=False,
                **options,
            )
    except Exception as e:  # the exporter raises many types; all mean "this network did not export"
        reason = _first_line(e.__cause__ or e)
        raise CheckpointError(f"{desc.arch}: ONNX export failed: {reason}") from None
    model = program.model_proto
    _name_dims(model)
    document = metadata_document(desc)
    document["provenance"].update(provenance or {})
    document["provenance"]["onnx"] = {
        "dtype": "float16" if half else "float32",
        "opset": _default_domain_opset(model),
        "exporter": f"torch {torch.__version__} (dynamo), onnxscript",
    }
    for key, value in document.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    return model


def export_onnx(
    desc: ModelDescriptor,
    path: str | os.PathLike[str],
    *,
    half: bool = False,
    opset: int | None = None,
    provenance: Mapping[str, Any] | None = None,
    check: bool = True,
) -> tuple[Path, float | None]:
    """Write ``desc`` as an ONNX file at ``path`` (atomically) and return (path, parity).

    With ``check`` the file is first run by ONNX Runtime against the torch network on a random input
    of a size other than the traced one (:func:`parity`); a difference above ``PARITY_TOLERANCE``
    raises CheckpointError and nothing is left at ``path``. ``parity`` is that max |difference|
    (None without ``check``).
    """
    path = Path(path)
    if path.suffix != ONNX_SUFFIX:
        raise CheckpointError(f"{path}: ONNX files end in {ONNX_SUFFIX}")
    model = to_onnx(desc, half=half, opset=opset, provenance=provenance)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_bytes(model.SerializeToString())
        difference = None
        if check:
            difference = parity(desc, tmp)
            dtype = torch.float16 if half else torch.float32
            limit = PARITY_TOLERANCE[dtype] * (desc.value_range[1] - desc.value_range[0])
            if not difference <= limit:
                raise CheckpointError(
                    f"{path}: ONNX Runtime differs from torch by {difference:.3g} (limit {limit:.3g}); not written"
                )
    return path, difference


def parity(
    desc: ModelDescriptor, onnx_path: str | os.PathLike[str], *, grow: int = 1, seed: int = 0
) -> float:
    """Max |ONNX Runtime - torch| on one random input in ``desc.value_range``.

    The input is (1, in_channels, h, w) from :func:`example_shape` grown by ``grow`` size multiples,
    so it is not the traced size. The ONNX side runs in the file's own dtype, torch in float32.
    """
    ort = require("onnxruntime")
    generator = torch.Generator().manual_seed(seed)
    low, high = desc.value_range
    x = low + (high - low) * torch.rand(example_shape(desc, batch=1, grow=grow), generator=generator)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    dtype = session.get_inputs()[0].type
    feed = x.numpy().astype("float16" if dtype == "tensor(float16)" else "float32")
    got = torch.from_numpy(session.run(None, {INPUT_NAME: feed})[0].astype("float32"))
    net = desc.net
    device = desc.device
    with torch.inference_mode():
        want = net(x.to(device)).float().cpu()
    if got.shape != want.shape:
        raise CheckpointError(
            f"{onnx_path}: ONNX output {tuple(got.shape)} != torch output {tuple(want.shape)}"
        )
    return float((got - want).abs().max())


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Our metadata document of an ONNX file (as written by :func:`to_onnx`), or None when it has none."""
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError, ...
        raise CheckpointError(f"{path}: not a readable ONNX file ({_first_line(e)})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if "arch" not in props:
        return None
    try:
        return {key: json.loads(value) for key, value in props.items()}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({e})") from None


def _name_dims(model: Any) -> None:
    """Rename the exporter's symbolic dims (``s77``, ``4*s53``) to batch/height/width in the graph's
    inputs and outputs, so tools show (batch, 3, height, width) -> (batch, 3, 4*height, 4*width)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    names = {d.dim_param: new for d, new in zip(dims, ("batch", None, "height", "width"), strict=True) if new}
    names = {old: new for old, new in names.items() if old}
    if not names:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    for value in [*model.graph.input, *model.graph.output]:
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = pattern.sub(lambda m: names[m.group(1)], d.dim_param)


def _default_domain_opset(model: Any) -> int | None:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the exporter colours its messages
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def onnx_cache_path(desc: ModelDescriptor) -> Path:
    """Where :func:`cached_onnx` keeps the export of ``desc`` (the file may not exist yet).

    The name is a hash of everything the graph depends on (architecture, kwargs, every tensor of
    the network, torch and img2img versions), so a changed model never meets a stale file.
    """
    from img2img._version import __version__
    from img2img.checkpoints.bundled import cache_dir

    digest = hashlib.sha256()
    digest.update(json.dumps([desc.arch, desc.kwargs, torch.__version__, __version__], default=str).encode())
    for name, tensor in desc.net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return cache_dir() / "onnx" / f"{desc.arch}-{digest.hexdigest()[:24]}{ONNX_SUFFIX}"


def cached_onnx(desc: ModelDescriptor) -> Path:
    """A float32 ONNX file of ``desc`` in the user cache (``<cache>/onnx/``), exported on first use.

    A second run skips the export (seconds to a minute for large networks; ``onnx_cache_path``
    names the file). The export is not checked here: the runtimes that use it are checked against
    torch by the tests.
    """
    path = onnx_cache_path(desc)
    if path.is_file():
        return path
    model = to_onnx(desc)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(path, fsync=False) as tmp:  # a cache: two processes exporting at once both write whole files
        tmp.write_bytes(model.SerializeToString())
    return path
