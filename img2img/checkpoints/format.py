"""Our model file: ``.safetensors`` weights plus one JSON document that rebuilds the network.

safetensors metadata is a str -> str map, so everything we need lives under one key,
``"img2img"``, as a JSON document (see ``docs/checkpoints.md`` for the schema)::

    {"format": "img2img-model", "format_version": 1,
     "arch": "rrdbnet", "kwargs": {"in_channels": 3, ..., "scale": 4},
     "scale": 4, "in_channels": 3, "out_channels": 3, "value_range": [0.0, 1.0],
     "size_multiple": 1, "min_size": 1, "instance_norm": false,
     "provenance": {"command": "...", "data": "...", "step": 100000, "source_file": "...", ...}}

Loading needs nothing but the file: the registry rebuilds ``arch(**kwargs)`` and the tensors are
loaded strictly. A ``.safetensors`` file without our key (a third-party export) is handed to the
foreign detectors by :mod:`img2img.checkpoints.loading`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from img2img._version import __version__
from img2img.atomic import replacing
from img2img.checkpoints.build import build_descriptor, check_state_fits
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.errors import CheckpointError
from img2img.networks import registry

METADATA_KEY = "img2img"
FORMAT_NAME = "img2img-model"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"

# Upper bound for the integer fields (scale, channels, size_multiple, min_size): far above any real
# model, low enough that arithmetic on them stays small.
_MAX_FIELD = 1 << 16

# Fields every document must carry; provenance is optional.
_REQUIRED = (
    "arch",
    "kwargs",
    "scale",
    "in_channels",
    "out_channels",
    "value_range",
    "size_multiple",
    "min_size",
)


def save_model(
    model: ModelDescriptor | nn.Module,
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) atomically and return the path.

    Args:
        model: a descriptor, or a bare network; a bare network needs ``arch``, ``kwargs`` and
            ``value_range`` (a DataParallel/DDP or ``torch.compile`` wrapper is unwrapped).
        path: the output file; written under a temporary name in the same folder, then renamed,
            so readers never see half a file.
        arch, kwargs, value_range: how to rebuild a bare network (ignored for a descriptor unless given).
        scale: optional check: must equal the network's own ``scale``.
        provenance: merged over the descriptor's provenance (e.g. ``command``, ``data``, ``step``).

    Raises CheckpointError when the architecture is not in the registry (the file could not be
    rebuilt from its metadata) or when ``arch(**kwargs)`` would not have the network's tensors;
    OSError when the file cannot be written (no temporary file is left behind).
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise CheckpointError(f"{path}: our model files end in {SUFFIX}")
    desc = _as_descriptor(model, arch=arch, kwargs=kwargs, value_range=value_range, provenance=provenance)
    if scale is not None and scale != desc.scale:
        raise CheckpointError(f"{path}: scale {scale} given, but the network upscales x{desc.scale}")
    if desc.arch not in registry.ARCHITECTURES:
        raise CheckpointError(
            f"{path}: cannot save architecture {desc.arch!r}: it is not in img2img's registry, "
            "so the file could not be rebuilt from its metadata"
        )
    state = {k: v.detach().to("cpu").contiguous() for k, v in desc.net.state_dict().items()}
    # Prove that the metadata rebuilds this network: build the claimed architecture and compare
    # keys and shapes. (A plain CPU build; the meta device is slower here for deep nets.)
    rebuilt = registry.build(desc.arch, **desc.kwargs)
    check_state_fits(rebuilt.state_dict(), state, source=str(path), what=f"{desc.arch} {desc.kwargs}")

    document = metadata_document(desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(path) as tmp:
            # safetensors refuses tensors that share memory; a clone per tensor makes them independent.
            save_file(
                {k: v.clone() for k, v in state.items()},
                tmp,
                metadata={"format": "pt", METADATA_KEY: json.dumps(document)},
            )
    except SafetensorError as e:
        # the writer's I/O errors (disk full, file size limit) arrive wrapped: give callers the one
        # type they handle for a failed write, OSError (no partial file is left)
        code = re.search(r"os error (\d+)", str(e))
        raise (OSError(int(code[1]), os.strerror(int(code[1]))) if code else OSError(_one_line(e))) from None
    return path


def metadata_document(desc: ModelDescriptor) -> dict[str, Any]:
    """The JSON document stored under ``"img2img"`` for ``desc``."""
    # "file" is where a loaded descriptor came from, not something the new file should claim.
    provenance = {"img2img_version": __version__, **{k: v for k, v in desc.provenance.items() if k != "file"}}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": desc.arch,
        "kwargs": _jsonable(dict(desc.kwargs)),
        "scale": desc.scale,
        "in_channels": desc.in_channels,
        "out_channels": desc.out_channels,
        "value_range": list(desc.value_range),
        "size_multiple": desc.size_multiple,
        "min_size": desc.min_size,
        "instance_norm": desc.instance_norm,
        "provenance": _jsonable(provenance),
    }


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The raw str -> str metadata of a safetensors file (empty when it has none); reads no tensors."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(e)})") from None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Our metadata document of ``path``, or None for a safetensors file written by someone else.

    Raises CheckpointError for a broken document or one from a newer format version.
    """
    header = read_header(path)
    if METADATA_KEY not in header:
        return None
    try:
        document = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its {METADATA_KEY!r} metadata is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: its {METADATA_KEY!r} metadata is nested too deeply to be ours") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: its {METADATA_KEY!r} metadata is not a JSON object")
    version = document.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: its metadata has no integer format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written in model format version {version}; this img2img reads up to {FORMAT_VERSION}, "
            "please upgrade img2img"
        )
    missing = [k for k in _REQUIRED if k not in document]
    if missing:
        raise CheckpointError(f"{path}: its metadata lacks {', '.join(missing)}")
    problem = document_problem(document)
    if problem:
        raise CheckpointError(f"{path}: its metadata is invalid: {problem}")
    return document


def document_problem(document: Mapping[str, Any]) -> str | None:
    """What is wrong with the fields of a metadata document (types and ranges), or None.

    Checked before anything is built from it: a wrong type here would otherwise surface as a
    traceback deep in a builder, and a reversed or NaN value range as silently wrong images.
    """
    if not isinstance(document["arch"], str) or not document["arch"]:
        return f"arch must be a registry name, not {document['arch']!r}"
    if not isinstance(document["kwargs"], dict):
        return f"kwargs must be a JSON object, not {type(document['kwargs']).__name__}"
    for name in ("scale", "in_channels", "out_channels", "size_multiple", "min_size"):
        value = document[name]
        if not _is_int(value) or not 1 <= value <= _MAX_FIELD:
            return f"{name} must be an integer from 1 to {_MAX_FIELD}, not {value!r}"
    value_range = document["value_range"]
    if (
        not isinstance(value_range, list)
        or len(value_range) != 2
        or not all(_is_number(v) and math.isfinite(v) for v in value_range)
        or not value_range[0] < value_range[1]
    ):
        return f"value_range must be [low, high] with finite low < high, not {value_range!r}"
    if not isinstance(document.get("instance_norm", False), bool):
        return f"instance_norm must be true or false, not {document['instance_norm']!r}"
    if not isinstance(document.get("provenance") or {}, dict):
        return f"provenance must be a JSON object, not {type(document['provenance']).__name__}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, on the CPU."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(e)})") from None


def load_ours(path: str | os.PathLike[str], document: Mapping[str, Any]) -> ModelDescriptor:
    """Rebuild the network described by ``document`` (from :func:`read_metadata`) and load ``path``'s tensors."""
    source = str(path)
    desc = build_descriptor(
        arch=str(document["arch"]),
        kwargs=dict(document["kwargs"]),
        state=read_tensors(path),
        value_range=(float(document["value_range"][0]), float(document["value_range"][1])),
        provenance={**dict(document.get("provenance") or {}), "file": source},
        source=source,
    )
    # The document repeats what the rebuilt network knows; a disagreement means a hand-edited file.
    for name in ("scale", "in_channels", "out_channels"):
        if int(document[name]) != getattr(desc, name):
            raise CheckpointError(
                f"{source}: metadata says {name}={document[name]} but {desc.arch} {desc.kwargs} has {getattr(desc, name)}"
            )
    return desc


def _as_descriptor(
    model: ModelDescriptor | nn.Module,
    *,
    arch: str | None,
    kwargs: Mapping[str, Any] | None,
    value_range: tuple[float, float] | None,
    provenance: Mapping[str, Any] | None,
) -> ModelDescriptor:
    if isinstance(model, ModelDescriptor):
        return ModelDescriptor.from_net(
            _unwrap(model.net),
            arch=arch or model.arch,
            kwargs=model.kwargs if kwargs is None else kwargs,
            value_range=model.value_range if value_range is None else value_range,
            provenance={**model.provenance, **(provenance or {})},
        )
    if arch is None or kwargs is None or value_range is None:
        raise TypeError("save_model of a bare network needs arch=, kwargs= and value_range=")
    return ModelDescriptor.from_net(
        _unwrap(model), arch=arch, kwargs=kwargs, value_range=value_range, provenance=provenance
    )


def _unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside DataParallel/DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            net = net.module
        elif isinstance(getattr(net, "_orig_mod", None), nn.Module):
            net = net._orig_mod  # type: ignore[assignment]
        else:
            return net


def _jsonable(value: Any) -> Any:
    """``value`` with paths and tuples turned into JSON types; anything else unknown becomes its str()."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
