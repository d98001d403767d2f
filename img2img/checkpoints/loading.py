"""``load_model``: one entry point for bundled names, model files and run directories.

A source resolves to one file, and the file to one :class:`ModelDescriptor`:

- an existing directory: a run directory of ours (``model.safetensors``, or ``g_ab`` /
  ``g_ba.safetensors`` for cycle methods) or a reference pix2pix/CycleGAN checkpoint folder
  (``latest_net_G.pth``, or ``latest_net_G_A.pth`` / ``latest_net_G_B.pth``, else the highest
  ``<epoch>_net_G*.pth``); ``direction`` picks the generator of a two-generator folder;
- an existing file: ``.safetensors`` with our metadata, a third-party ``.safetensors``, one of our
  training checkpoints (``RUN_DIR/checkpoints/last.pt``: its generator, EMA copy when kept), or
  another torch file (read with ``weights_only=True``);
- otherwise a bundled name (see :mod:`img2img.checkpoints.bundled`), else a zoo name (see
  :mod:`img2img.checkpoints.zoo`): its verified file in the cache, downloaded on first use (announced
  on stderr). A missing ``RealESRGAN_x2plus.pth`` (a zoo file name) resolves to the cached zoo file
  when it has been fetched (``img2img weights get``), and otherwise says how to fetch it.

The network comes back in eval mode: dropout off and BatchNorm using its stored statistics, so
results are deterministic. (The pix2pix reference keeps both live at test time unless ``--eval``.)
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from img2img.checkpoints import filekind
from img2img.checkpoints.build import build_descriptor
from img2img.checkpoints.bundled import find_bundled, looks_like_name
from img2img.checkpoints.denoise import blend, resolve_strength
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.download import cached_path, ensure_zoo_file, is_cached
from img2img.checkpoints.errors import CheckpointError
from img2img.checkpoints.foreign import (
    Hints,
    check_torch_zip,
    load_foreign_file,
    load_foreign_state,
    unpickler_reason,
)
from img2img.checkpoints.format import SUFFIX, load_ours, read_metadata, read_tensors, save_model
from img2img.checkpoints.zoo import find_zoo, find_zoo_by_file

DIRECTIONS = ("AtoB", "BtoA")

# Our run directories.
SINGLE_MODEL = f"model{SUFFIX}"
CYCLE_MODELS = {"AtoB": f"g_ab{SUFFIX}", "BtoA": f"g_ba{SUFFIX}"}
# Reference folders: <epoch>_net_<name>.pth with epoch "latest" or a number.
REFERENCE_NETS = {"AtoB": "G_A", "BtoA": "G_B"}
REFERENCE_SINGLE = "G"


def load_model(
    source: str | os.PathLike[str],
    *,
    arch: str | None = None,
    scale: int | None = None,
    direction: str | None = None,
    device: str | torch.device = "cpu",
    denoise: float | str | None = None,
) -> ModelDescriptor:
    """Load a generator and describe it.

    Args:
        source: a bundled name (``"img2img-sr-x4"``), a model file (``.safetensors`` / ``.pth``)
            or a run directory (ours or a reference checkpoint folder).
        arch: registry architecture name, for files whose architecture detection finds ambiguous
            or does not know (ignored for our own files, which name theirs).
        scale: the upscaling factor, for files where it is ambiguous (RRDBNet's input channels).
        direction: ``"AtoB"`` (default) or ``"BtoA"``: which generator of a two-generator source;
            ``"BtoA"`` on a single-generator source is an error.
        device: where the network is moved.
        denoise: None loads the file as it is; a strength in [0, 1] blends the model's weights with
            the real-world companion its card declares (0: this model, 1: the companion, exactly;
            an error when the card declares none); ``"default"`` uses the card's default strength,
            or the model as it is when it has no companion (what ``img2img upscale`` does).
            See :mod:`img2img.checkpoints.denoise`.

    Returns a descriptor whose ``net`` is in eval mode on ``device``; calling it on a float tensor
    (B, in_channels, H, W) in ``value_range`` returns the network's output.

    Raises CheckpointError (one line naming the file and the reason) for anything it cannot load.
    """
    path = resolve_source(source, direction=direction)
    desc = load_file(path, arch=arch, scale=scale, direction=direction)
    if denoise is not None and (chosen := resolve_strength(path, denoise)) is not None:
        strength, pair = chosen
        desc = blend(desc, load_file(pair.companion), strength, companion=pair.companion.stem)
    desc.net.eval()
    return desc.to(device)


def load_file(
    path: str | os.PathLike[str], *, arch: str | None = None, scale: int | None = None,
    direction: str | None = None,
) -> ModelDescriptor:
    """The descriptor of one model file (ours, third-party safetensors or torch), on the CPU.

    Detection order: our ``.safetensors`` (metadata), a third-party ``.safetensors``, our training
    checkpoint (``direction`` picks a cycle run's generator), a foreign torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    hints = Hints(arch=arch, scale=scale)
    head = filekind.model_file_head(path)
    # The content decides, not the name: a safetensors file saved as .pth loads as what it is.
    if path.suffix.lower() == SUFFIX or filekind.is_safetensors(head):
        document = read_metadata(path)
        if document is not None:
            desc = load_ours(path, document)
            if scale is not None and scale != desc.scale:
                raise CheckpointError(f"{path}: scale {scale} given, but the model upscales x{desc.scale}")
            return desc
        return load_foreign_state(read_tensors(path), source=str(path), hints=hints)
    if is_training_checkpoint(path):
        desc = load_training_checkpoint(path, direction=direction)
        if scale is not None and scale != desc.scale:
            raise CheckpointError(f"{path}: scale {scale} given, but the model upscales x{desc.scale}")
        return desc
    return load_foreign_file(path, hints=hints)


# Our training checkpoints (img2img.training.state) are torch zip files whose pickle holds these
# keys; "exports" says how to rebuild each generator. Recognised here by that layout, because
# checkpoints/ may not import training.
TRAINING_FORMAT_PREFIX = "img2img-train/"
TRAINING_KEYS = ("format", "method", "step", "nets", "ema")
_TRAINING_PICKLE_MAX = 64 << 20


def is_training_checkpoint(path: Path) -> bool:
    """True when ``path`` looks like one of our training checkpoints, judged from its pickle alone.

    Reads only the zip directory and the (small, stored) pickle record, never tensor data, so any
    other torch file goes on to the foreign loaders untouched.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [i for i in archive.infolist() if i.filename.endswith("/data.pkl")]
            if len(pickles) != 1 or pickles[0].file_size > _TRAINING_PICKLE_MAX:
                return False
            if pickles[0].compress_type != zipfile.ZIP_STORED:
                return False
            return TRAINING_FORMAT_PREFIX.encode() in archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def load_training_checkpoint(path: Path, *, direction: str | None = None) -> ModelDescriptor:
    """The generator a training checkpoint holds: the EMA copy when the run kept one, as the
    run's exported model; ``direction`` picks ``g_ab`` (AtoB) or ``g_ba`` (BtoA) of a cycle run."""
    check_torch_zip(path)  # declared sizes against the file's, before torch unpacks anything
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a damaged file fails in several ways; name the file (never torch's advice)
        raise CheckpointError(
            f"{path}: cannot read training checkpoint ({type(e).__name__}: {unpickler_reason(e)})"
        ) from None
    if not isinstance(payload, dict) or any(k not in payload for k in TRAINING_KEYS):
        raise CheckpointError(f"{path}: not an img2img training checkpoint (expected keys {', '.join(TRAINING_KEYS)})")
    exports = payload.get("exports")
    if not exports:
        raise CheckpointError(
            f"{path}: a training checkpoint from an older img2img that does not record how to rebuild its "
            "generators; use the model file of its run directory (model.safetensors or g_ab/g_ba.safetensors)"
        )
    if len(exports) == 1:
        _check_single(path, direction, f"holds one generator ({exports[0]['file']})")
        chosen = exports[0]
    else:
        wanted = CYCLE_MODELS[direction or "AtoB"]
        found = [e for e in exports if f"{e['file']}{SUFFIX}" == wanted]
        if not found:
            raise CheckpointError(f"{path}: holds generators {', '.join(e['file'] for e in exports)}, none for {wanted}")
        chosen = found[0]
    net = chosen["net"]
    ema = payload["ema"].get(net)
    state = ema["module"] if ema is not None else payload["nets"][net]
    provenance = {"source": "img2img training checkpoint", "method": payload["method"], "step": payload["step"],
                  "net": net, "ema": ema is not None, "file": str(path), **dict(chosen.get("info") or {})}
    return build_descriptor(arch=chosen["arch"], kwargs=chosen["kwargs"], state=state,
                            value_range=(float(chosen["value_range"][0]), float(chosen["value_range"][1])),
                            provenance=provenance, source=str(path))


def resolve_source(source: str | os.PathLike[str], *, direction: str | None = None) -> Path:
    """The model file a source stands for (see the module docstring for the rules)."""
    if direction is not None and direction not in DIRECTIONS:
        raise CheckpointError(f"{source}: direction must be AtoB or BtoA, not {direction!r}")
    path = Path(source).expanduser()
    if path.is_dir():
        return resolve_run_dir(path, direction=direction)
    if path.is_file():
        if not is_training_checkpoint(path):  # which generator of those it holds: see load_training_checkpoint
            _check_single(path, direction, "is one model file")
        return path
    text = os.fspath(source)
    if not looks_like_name(text):
        raise CheckpointError(f"{source}: no such file or directory")
    if path.suffix.lower() in (".pth", ".pt", ".ckpt"):
        model = find_zoo_by_file(text)
        if model is None:
            raise CheckpointError(f"{source}: no such file or directory")
        if not is_cached(model):
            raise CheckpointError(
                f"{source}: no such file; it is the zoo model {model.name}: `img2img weights get {model.name}` "
                f"downloads and verifies it (or pass the name, {model.name}, which downloads on first use)"
            )
        found = ensure_zoo_file(model.name)  # verified again: it may have been replaced by hand
        _check_single(found, direction, "is one zoo model")
        return found
    try:
        found = find_bundled(text)
    except CheckpointError as e:
        model = find_zoo(text)
        if model is None:
            raise CheckpointError(f"{e}; published models: img2img weights list --available") from None
        found = ensure_zoo_file(model.name)
        _check_single(found, direction, f"is one zoo model ({cached_path(model).name})")
        return found
    _check_single(found, direction, "is one bundled model")
    return found


def resolve_run_dir(run_dir: Path, *, direction: str | None = None) -> Path:
    """The generator file inside a run directory or a reference checkpoint folder."""
    wanted = direction or "AtoB"
    cycle = {d: run_dir / name for d, name in CYCLE_MODELS.items() if (run_dir / name).is_file()}
    if cycle:
        if wanted not in cycle:
            raise CheckpointError(
                f"{run_dir}: has {', '.join(p.name for p in cycle.values())} but no {CYCLE_MODELS[wanted]}"
            )
        return cycle[wanted]
    if (run_dir / SINGLE_MODEL).is_file():
        _check_single(run_dir, direction, f"holds one generator ({SINGLE_MODEL})")
        return run_dir / SINGLE_MODEL
    pair = {d: _reference_file(run_dir, net) for d, net in REFERENCE_NETS.items()}
    if any(pair.values()):
        chosen = pair[wanted]
        if chosen is None:
            raise CheckpointError(
                f"{run_dir}: has no *_net_{REFERENCE_NETS[wanted]}.pth for direction {wanted}"
            )
        return chosen
    single = _reference_file(run_dir, REFERENCE_SINGLE)
    if single is not None:
        _check_single(run_dir, direction, f"holds one generator ({single.name})")
        return single
    present = sorted(p.name for p in run_dir.iterdir())[:5]
    raise CheckpointError(
        f"{run_dir}: no model in this directory (looked for {SINGLE_MODEL}, g_ab/g_ba{SUFFIX}, "
        f"latest_net_G.pth, latest_net_G_A/G_B.pth; found: {', '.join(present) or 'nothing'})"
    )


def convert(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    arch: str | None = None,
    scale: int | None = None,
    direction: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> ModelDescriptor:
    """Load ``source`` (any kind :func:`load_model` takes) and save it in our format at ``out``.

    The file's provenance records the source file, its format and its SHA-256, plus ``provenance``.
    Returns the descriptor that was saved.
    """
    path = resolve_source(source, direction=direction)
    out = Path(out)
    if out.exists() and out.resolve() == path.resolve():
        raise CheckpointError(f"{out}: is the input file; choose another output")
    desc = load_file(path, arch=arch, scale=scale, direction=direction)
    extra = {"source_file": path.name, "source_sha256": sha256_of(path), **(provenance or {})}
    save_model(desc, out, provenance=extra)
    return desc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reference_file(folder: Path, net: str) -> Path | None:
    """``latest_net_<net>.pth``, else the highest-numbered ``<epoch>_net_<net>.pth``, else None."""
    latest = folder / f"latest_net_{net}.pth"
    if latest.is_file():
        return latest
    rx = re.compile(rf"^(\d+)_net_{re.escape(net)}\.pth$")
    epochs = [(int(m.group(1)), p) for p in folder.iterdir() if (m := rx.match(p.name)) and p.is_file()]
    return max(epochs)[1] if epochs else None


def _check_single(where: Path, direction: str | None, what: str) -> None:
    if direction == "BtoA":
        raise CheckpointError(
            f"{where}: {what}, so there is no B->A generator (direction BtoA needs g_ab/g_ba or G_A/G_B files)"
        )
