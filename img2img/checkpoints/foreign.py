"""Reference checkpoints: read safely, recognise the architecture from keys and shapes, remap keys.

Supported families (see ``docs/checkpoints.md`` for file names and the exact rules):

- junyanz/pytorch-CycleGAN-and-pix2pix: bare state dicts of ``ResnetGenerator`` and
  ``UnetGenerator`` (``latest_net_G.pth``, ``latest_net_G_A.pth``, the pretrained zoo's
  ``horse2zebra.pth``, ``facades_label2photo.pth`` ...); value range [-1, 1].
- BasicSR / Real-ESRGAN: ``{"params_ema": ...}`` / ``{"params": ...}`` of ``RRDBNet`` and
  ``MSRResNet`` (``RealESRGAN_x4plus.pth``, ``RealESRGAN_x2plus.pth``, ``ESRGAN_SRx4_DF2KOST_official-ff704c30.pth``);
  value range [0, 1].
- Real-ESRGAN's compact network: ``{"params": ...}`` of ``SRVGGNetCompact`` (one ``body.N`` list
  of convs and PReLUs: ``realesr-general-x4v3.pth``, ``realesr-general-wdn-x4v3.pth``,
  ``realesr-animevideov3.pth``); value range [0, 1].
- original ESRGAN: the 2018 ``model.0`` / ``model.1.sub.*`` layout and the later ``RRDB_trunk``
  layout of xinntao/ESRGAN's ``RRDB_ESRGAN_x4.pth``; both are remapped to BasicSR keys.

``FOREIGN_FORMATS`` is an explicit ordered list of (name, detect, load) entries: ``detect`` is a
pure predicate over ``{key: shape}``, ``load`` remaps keys (one function per family) and infers the
registry architecture and its kwargs from tensor shapes. The first entry whose ``detect`` is true
wins. Files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from img2img.checkpoints import filekind
from img2img.checkpoints.build import build_descriptor, quote_keys
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.errors import CheckpointError
from img2img.networks import has_instance_norm, registry

StateDict = dict[str, torch.Tensor]
Shapes = Mapping[str, tuple[int, ...]]

PM1 = (-1.0, 1.0)  # pix2pix / CycleGAN tensors
UNIT = (0.0, 1.0)  # BasicSR / ESRGAN tensors

# Wrappers around the state dict in release files, in order of preference: BasicSR saves the
# EMA weights as "params_ema" next to "params"; the EMA ones are the ones released to be used.
CONTAINER_KEYS = ("params_ema", "params", "state_dict")

# Lines of torch's weights-only refusal that name a global/class the pickle wanted built.
_REFUSED = re.compile(r"GLOBAL|global:|Can only build|class", re.IGNORECASE)

# Globals a state-dict pickle legitimately imports (what torch's weights-only unpickler allows for
# tensors and containers); anything else in a refused pickle is what we name in the error.
SAFE_GLOBALS = frozenset({
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state", "torch.FloatStorage", "torch.HalfStorage",
    "torch.DoubleStorage", "torch.BFloat16Storage", "torch.LongStorage", "torch.IntStorage",
    "torch.ByteStorage", "torch.BoolStorage", "torch.storage.UntypedStorage", "torch.Size",
    "torch.float32", "torch.float16", "torch.bfloat16", "torch._utils._rebuild_tensor",
})  # fmt: skip

# A torch ZIP checkpoint stores its records uncompressed: the declared sizes sum to about the file
# size. Allow some room for odd writers; refuse archives that would inflate beyond it.
MAX_ZIP_EXPANSION = 4
ZIP_SLACK_BYTES = 1 << 20

ZOO_HINT = "installing the optional zoo extra (pip install img2img[zoo]) adds spandrel's many architectures"


@dataclass(frozen=True)
class Hints:
    """What the caller knows better than the file: ``arch`` (a registry name) and ``scale``."""

    arch: str | None = None
    scale: int | None = None


@dataclass(frozen=True)
class Recognised:
    """What a format's ``load`` makes of a state dict: the registry network and the remapped tensors."""

    arch: str
    kwargs: dict[str, Any]
    value_range: tuple[float, float]
    state: StateDict


@dataclass(frozen=True)
class ForeignFormat:
    """One entry of the detection list.

    name: short id stored in provenance (``source_format``).
    title: what a user calls it, for messages.
    signature: the key that identifies it, quoted in the "matches nothing" error.
    archs: registry names this entry can produce (an ``arch=`` hint selects entries by it).
    detect: pure predicate over ``{key: shape}``.
    load: ``(state, hints) -> Recognised``; raises CheckpointError (without the file name) when
        the shapes contradict the hints or each other.
    """

    name: str
    title: str
    signature: str
    archs: tuple[str, ...]
    detect: Callable[[Shapes], bool]
    load: Callable[[StateDict, Hints], Recognised]


# --------------------------------------------------------------------------------------------
# Reading files safely


def read_state_dict(path: str | os.PathLike[str]) -> tuple[StateDict, str | None]:
    """Load a ``.pth``/``.pt``/``.ckpt`` file with ``weights_only=True`` and unwrap it.

    Returns (state dict with ``module.`` prefixes stripped, the container key used or None).
    Raises CheckpointError for a file that is plainly something else (an image, a web page), a ZIP
    archive whose declared sizes are absurd (checked in its central directory before torch
    unpacks anything), a pickle that would run code, a file torch cannot read, or a file that
    holds no tensors. Messages never pass on torch's advice to load with ``weights_only=False``.
    """
    head = filekind.model_file_head(path)
    if filekind.is_zip(head):
        check_torch_zip(path)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it was not written with; the outcome is what matters
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        wanted = pickle_globals(path) - SAFE_GLOBALS
        if wanted or _REFUSED.search(unpickler_reason(e)):
            named = ", ".join(sorted(wanted)[:3]) or unpickler_reason(e)
            raise CheckpointError(
                f"{path}: refused: its pickle asks for more than tensors and plain containers "
                f"and could run code, so it is not loaded (it wants {named}); {filekind.ACCEPTED}"
            ) from None
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint torch can read ({unpickler_reason(e)}); {filekind.ACCEPTED}"
        ) from None
    except Exception as e:  # a non-checkpoint file makes the unpickler fail in many ways; name the file
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint torch can read ({type(e).__name__}: {unpickler_reason(e)})"
        ) from None
    try:
        return unwrap_state_dict(obj)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def check_torch_zip(path: str | os.PathLike[str]) -> None:
    """Refuse a ZIP-format checkpoint before torch unpacks it, from its central directory alone.

    torch writes its records uncompressed, so the sizes the directory declares add up to about
    the file's own size. An archive that declares far more (a compressed "ZIP bomb": a small
    file that inflates to gigabytes in memory) or has no ``data.pkl`` record is refused.
    """
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: a damaged ZIP archive, not a readable checkpoint ({_one_line(e)})") from None
    if not any(e.filename == "data.pkl" or e.filename.endswith("/data.pkl") for e in entries):
        raise CheckpointError(
            f"{path}: is a ZIP archive without a data.pkl record, not a PyTorch checkpoint; {filekind.ACCEPTED}"
        )
    declared = sum(e.file_size for e in entries)
    if declared > MAX_ZIP_EXPANSION * size + ZIP_SLACK_BYTES:
        raise CheckpointError(
            f"{path}: refused: its ZIP directory declares {declared / 1e6:,.1f} MB of data in a "
            f"{size / 1e6:,.1f} MB file (torch stores checkpoints uncompressed; this looks like a ZIP bomb)"
        )


def pickle_globals(path: str | os.PathLike[str], limit_bytes: int = 64 << 20) -> set[str]:
    """``module.name`` of every global the file's pickle(s) import, found without unpickling.

    For a torch ZIP file, its ``data.pkl`` record (call :func:`check_torch_zip` first, which bounds
    its size). Scans opcodes only (``pickletools``), over the consecutive pickles a legacy torch file
    holds; stops at the first thing that is not a pickle. STACK_GLOBAL takes its names from the two
    strings pushed before it.
    """
    found: set[str] = set()
    with open(path, "rb") as f:
        data = f.read(limit_bytes)
    if filekind.is_zip(data):
        try:
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
                data = archive.read(name)[:limit_bytes]
        except (zipfile.BadZipFile, StopIteration, OSError, ValueError):
            return found
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        strings: list[str] = []
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name == "GLOBAL" and isinstance(arg, str):
                    found.add(arg.replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except (ValueError, EOFError, pickle.UnpicklingError, UnicodeDecodeError):
            break
    return found


def unwrap_state_dict(obj: Any) -> tuple[StateDict, str | None]:
    """Take the state dict out of a release-file container and strip DataParallel prefixes.

    ``{"params_ema": sd, "params": sd}`` -> the ``params_ema`` one; a bare ``{key: tensor}`` dict
    is returned as is. Errors carry no file name (callers add it).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a dict of tensors")
    used = None
    for key in CONTAINER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj, used = obj[key], key
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"holds no tensors (top-level keys: {quote_keys([str(k) for k in obj])})")
    others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise CheckpointError(
            f"is not a plain state dict: entries that are not tensors ({quote_keys(others)})"
        )
    return strip_prefix(state, "module."), used


def strip_prefix(state: StateDict, prefix: str) -> StateDict:
    """Remove ``prefix`` from every key when all keys have it (DataParallel's ``module.``)."""
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


# --------------------------------------------------------------------------------------------
# Shared shape helpers


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over all keys."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def _consecutive(indices: list[int], start: int, what: str) -> int:
    """len(indices), checking they are start, start+1, ...; a gap means a damaged or unknown file."""
    if indices != list(range(start, start + len(indices))):
        raise CheckpointError(f"{what} indices are not consecutive from {start}: {indices[:8]}")
    return len(indices)


def _check_hint_arch(hints: Hints, family: tuple[str, ...], detected: str) -> str:
    """The arch name to use: the hint when it names this family, else the detected one."""
    if hints.arch is None or hints.arch == detected:
        return detected
    if hints.arch not in family:
        raise CheckpointError(f"arch {hints.arch!r} given, but the file holds a {detected}")
    return hints.arch


def _drop_instance_norm_stats(state: StateDict) -> StateDict:
    """Drop InstanceNorm running stats that pre-0.4 PyTorch saved and the reference now ignores.

    Only called when the file uses instance norm (convs with bias, no norm weights), so every
    running_mean/var/num_batches_tracked in it belongs to an (affine-free) InstanceNorm.
    """
    stats = (".running_mean", ".running_var", ".num_batches_tracked")
    return {k: v for k, v in state.items() if not k.endswith(stats)}


def _norm_from(shapes: Shapes, *, conv: str, norm: str) -> str:
    """pix2pix/CycleGAN norm: BatchNorm has affine weights; InstanceNorm(affine=False) has none but
    its preceding conv has a bias (the reference's use_bias rule); "none" has neither."""
    if f"{norm}.weight" in shapes:
        return "batch"
    if f"{conv}.bias" in shapes:
        return "instance"
    return "none"


# --------------------------------------------------------------------------------------------
# junyanz pix2pix / CycleGAN: ResnetGenerator


_RESNET_FAMILY = ("resnet", "resnet_6blocks", "resnet_9blocks")
# Layers before the first residual block: pad, conv, norm, relu, then 2 x (conv, norm, relu).
_RESNET_FIRST_BLOCK = 10


def detect_junyanz_resnet(shapes: Shapes) -> bool:
    return "model.1.weight" in shapes and f"model.{_RESNET_FIRST_BLOCK}.conv_block.1.weight" in shapes


def infer_junyanz_resnet(shapes: Shapes) -> dict[str, Any]:
    """ResnetGenerator kwargs from shapes: ngf and in_channels from the 7x7 stem ``model.1``,
    n_blocks from the ``model.{i}.conv_block`` indices, norm from bias/BN keys, dropout from where
    the second block conv sits (``conv_block.5`` without dropout, ``conv_block.6`` with it), and
    out_channels from the output conv ``model.{17 + n_blocks}``."""
    ngf, in_channels = shapes["model.1.weight"][:2]
    n_blocks = _consecutive(
        _indices(shapes, r"model\.(\d+)\.conv_block\."), _RESNET_FIRST_BLOCK, "ResNet block"
    )
    first = f"model.{_RESNET_FIRST_BLOCK}.conv_block"
    dropout = len(shapes.get(f"{first}.6.weight", ())) == 4
    last = f"model.{_RESNET_FIRST_BLOCK + n_blocks + 7}.weight"
    if last not in shapes:
        raise CheckpointError(f"ResNet generator with {n_blocks} blocks but no output conv {last}")
    return {
        "in_channels": in_channels,
        "out_channels": shapes[last][0],
        "ngf": ngf,
        "n_blocks": n_blocks,
        "norm": _norm_from(shapes, conv="model.1", norm="model.2"),
        "dropout": dropout,
    }


def load_junyanz_resnet(state: StateDict, hints: Hints) -> Recognised:
    kwargs = infer_junyanz_resnet(shapes_of(state))
    _check_scale_one(hints)
    named = {6: "resnet_6blocks", 9: "resnet_9blocks"}.get(kwargs["n_blocks"], "resnet")
    arch = _check_hint_arch(hints, _RESNET_FAMILY, named)
    _check_family_depth(arch, kwargs, "n_blocks")
    if kwargs["norm"] == "instance":
        state = _drop_instance_norm_stats(state)
    return Recognised(arch, kwargs, PM1, state)


# --------------------------------------------------------------------------------------------
# junyanz pix2pix / CycleGAN: UnetGenerator


_UNET_FAMILY = ("unet", "unet_128", "unet_256")


def detect_junyanz_unet(shapes: Shapes) -> bool:
    return "model.model.0.weight" in shapes and "model.model.1.model.1.weight" in shapes


def infer_junyanz_unet(shapes: Shapes) -> dict[str, Any]:
    """UnetGenerator kwargs from shapes: the outermost block's down-conv ``model.model.0`` gives ngf
    and in_channels, its up-conv ``model.model.3`` (ConvTranspose: in, out, k, k) out_channels;
    num_downs counts the nested blocks (each middle block keeps its child at ``model.3``).
    Dropout leaves no tensors, so it is not in the file; it is off in eval mode anyway."""
    ngf, in_channels = shapes["model.model.0.weight"][:2]
    out_channels = shapes["model.model.3.weight"][1]
    prefix, num_downs = "model.model.1.", 2  # outermost block and its child
    while f"{prefix}model.3.model.1.weight" in shapes:
        prefix += "model.3."
        num_downs += 1
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "num_downs": num_downs,
        "ngf": ngf,
        "norm": _norm_from(shapes, conv="model.model.0", norm="model.model.1.model.2"),
        "dropout": False,
    }


def load_junyanz_unet(state: StateDict, hints: Hints) -> Recognised:
    kwargs = infer_junyanz_unet(shapes_of(state))
    _check_scale_one(hints)
    named = {7: "unet_128", 8: "unet_256"}.get(kwargs["num_downs"], "unet")
    arch = _check_hint_arch(hints, _UNET_FAMILY, named)
    _check_family_depth(arch, kwargs, "num_downs")
    if kwargs["norm"] == "instance":
        state = _drop_instance_norm_stats(state)
    return Recognised(arch, kwargs, PM1, state)


def _check_scale_one(hints: Hints) -> None:
    if hints.scale not in (None, 1):
        raise CheckpointError(
            f"scale {hints.scale} given, but pix2pix/CycleGAN generators keep the size (scale 1)"
        )


def _check_family_depth(arch: str, kwargs: dict[str, Any], depth_key: str) -> None:
    """A named variant (resnet_9blocks, unet_256 ...) must agree with the depth found in the file."""
    fixed = registry.get_spec(arch).defaults.get(depth_key)
    if arch not in ("resnet", "unet") and fixed != kwargs[depth_key]:
        raise CheckpointError(f"arch {arch!r} has {depth_key}={fixed}, but the file has {kwargs[depth_key]}")


# --------------------------------------------------------------------------------------------
# BasicSR / Real-ESRGAN RRDBNet (and the two older ESRGAN layouts remapped onto it)


_RRDB_FAMILY = ("rrdbnet",)
# conv_first input channels per output channel: scale 4 sees the image, 2 and 1 a pixel-unshuffle.
_UNSHUFFLE_CHANNELS = {4: 1, 2: 4, 1: 16}


def detect_basicsr_rrdbnet(shapes: Shapes) -> bool:
    return (
        "conv_first.weight" in shapes
        and "body.0.rdb1.conv1.weight" in shapes
        and "conv_up2.weight" in shapes
        and "conv_up3.weight" not in shapes  # x8 variants: not an img2img architecture
    )


def infer_rrdbnet(shapes: Shapes, scale: int | None = None) -> dict[str, Any]:
    """RRDBNet kwargs from BasicSR-layout shapes.

    num_feat and the folded input channels come from ``conv_first``; num_grow_ch from
    ``body.0.rdb1.conv1`` (not always 32 in the wild); num_block from the ``body.{i}`` indices.
    Scale: conv_first sees in_channels x 1 / 4 / 16 channels for x4 / x2 / x1 (pixel-unshuffle);
    with ``scale`` None it is read as 16 x out -> x1, 4 x out -> x2, else x4.
    """
    num_feat, folded = shapes["conv_first.weight"][:2]
    out_channels = shapes["conv_last.weight"][0]
    if scale is None:
        scale = 1 if folded == 16 * out_channels else 2 if folded == 4 * out_channels else 4
    if scale not in _UNSHUFFLE_CHANNELS:
        raise CheckpointError(f"RRDBNet supports scale 1, 2 or 4, not {scale}")
    factor = _UNSHUFFLE_CHANNELS[scale]
    if folded % factor:
        raise CheckpointError(f"conv_first has {folded} input channels, which is not a x{scale} RRDBNet")
    return {
        "in_channels": folded // factor,
        "out_channels": out_channels,
        "scale": scale,
        "num_feat": num_feat,
        "num_block": _consecutive(_indices(shapes, r"body\.(\d+)\.rdb1\.conv1\.weight$"), 0, "RRDB block"),
        "num_grow_ch": shapes["body.0.rdb1.conv1.weight"][0],
    }


def load_basicsr_rrdbnet(state: StateDict, hints: Hints) -> Recognised:
    arch = _check_hint_arch(hints, _RRDB_FAMILY, "rrdbnet")
    return Recognised(arch, infer_rrdbnet(shapes_of(state), hints.scale), UNIT, state)


def detect_esrgan_old(shapes: Shapes) -> bool:
    # The x4 layout: model.{0,1,3,6,8,10}; other upsampling depths do not fit our RRDBNet.
    top = set(_indices(shapes, r"model\.(\d+)\."))
    return "model.1.sub.0.RDB1.conv1.0.weight" in shapes and top == {0, 1, 3, 6, 8, 10}


_OLD_ESRGAN_TOP = {"model.0.": "conv_first.", "model.3.": "conv_up1.", "model.6.": "conv_up2.",
                   "model.8.": "conv_hr.", "model.10.": "conv_last."}  # fmt: skip
_OLD_ESRGAN_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")


def remap_esrgan_old(state: StateDict) -> StateDict:
    """Original ESRGAN (2018) keys -> BasicSR RRDBNet keys, key by key.

    ``model.0`` -> ``conv_first``; ``model.1.sub.{i}.RDB{j}.conv{k}.0`` -> ``body.{i}.rdb{j}.conv{k}``;
    ``model.1.sub.{num_block}`` (the trunk's closing conv) -> ``conv_body``; ``model.3`` ->
    ``conv_up1``; ``model.6`` -> ``conv_up2``; ``model.8`` -> ``conv_hr``; ``model.10`` -> ``conv_last``.
    """
    num_block = len(_indices(state, r"model\.1\.sub\.(\d+)\.RDB1\."))
    out: StateDict = {}
    for key, tensor in state.items():
        if m := _OLD_ESRGAN_RDB.match(key):
            i, j, k, kind = m.groups()
            new = f"body.{i}.rdb{j}.conv{k}.{kind}"
        elif key.startswith(trunk := f"model.1.sub.{num_block}."):
            new = "conv_body." + key[len(trunk) :]
        else:
            prefix = next((p for p in _OLD_ESRGAN_TOP if key.startswith(p)), None)
            if prefix is None:
                raise CheckpointError(f"unexpected key {key!r} in an old-layout ESRGAN file")
            new = _OLD_ESRGAN_TOP[prefix] + key[len(prefix) :]
        out[new] = tensor
    return out


def load_esrgan_old(state: StateDict, hints: Hints) -> Recognised:
    return load_basicsr_rrdbnet(remap_esrgan_old(state), hints)


def detect_esrgan_trunk(shapes: Shapes) -> bool:
    return (
        "RRDB_trunk.0.RDB1.conv1.weight" in shapes
        and "trunk_conv.weight" in shapes
        and "upconv2.weight" in shapes
    )


_TRUNK_NAMES = {"conv_first.": "conv_first.", "trunk_conv.": "conv_body.", "upconv1.": "conv_up1.",
                "upconv2.": "conv_up2.", "HRconv.": "conv_hr.", "conv_last.": "conv_last."}  # fmt: skip
_TRUNK_RDB = re.compile(r"RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)$")


def remap_esrgan_trunk(state: StateDict) -> StateDict:
    """xinntao/ESRGAN's ``RRDBNet_arch.py`` keys (``RRDB_trunk``, ``trunk_conv``, ``upconv1/2``,
    ``HRconv``) -> BasicSR RRDBNet keys, key by key."""
    out: StateDict = {}
    for key, tensor in state.items():
        if m := _TRUNK_RDB.match(key):
            i, j, k, kind = m.groups()
            new = f"body.{i}.rdb{j}.conv{k}.{kind}"
        else:
            prefix = next((p for p in _TRUNK_NAMES if key.startswith(p)), None)
            if prefix is None:
                raise CheckpointError(f"unexpected key {key!r} in an ESRGAN RRDB_trunk file")
            new = _TRUNK_NAMES[prefix] + key[len(prefix) :]
        out[new] = tensor
    return out


def load_esrgan_trunk(state: StateDict, hints: Hints) -> Recognised:
    return load_basicsr_rrdbnet(remap_esrgan_trunk(state), hints)


# --------------------------------------------------------------------------------------------
# BasicSR MSRResNet


_MSRRESNET_FAMILY = ("msrresnet",)


def detect_basicsr_msrresnet(shapes: Shapes) -> bool:
    return all(
        k in shapes for k in ("conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight")
    )


def infer_msrresnet(shapes: Shapes) -> dict[str, Any]:
    """MSRResNet kwargs: scale 4 has ``upconv2``; otherwise ``upconv1`` makes num_feat * s * s
    channels for the pixel shuffle, so s = 2 or 3."""
    num_feat, in_channels = shapes["conv_first.weight"][:2]
    if "upconv2.weight" in shapes:
        scale = 4
    else:
        ratio = shapes["upconv1.weight"][0] // num_feat
        scale = {4: 2, 9: 3}.get(ratio, 0)
        if not scale:
            raise CheckpointError(
                f"upconv1 makes {shapes['upconv1.weight'][0]} channels from {num_feat}: no x2/x3 shuffle"
            )
    return {
        "in_channels": in_channels,
        "out_channels": shapes["conv_last.weight"][0],
        "scale": scale,
        "num_feat": num_feat,
        "num_block": _consecutive(_indices(shapes, r"body\.(\d+)\.conv1\.weight$"), 0, "residual block"),
    }


def load_basicsr_msrresnet(state: StateDict, hints: Hints) -> Recognised:
    arch = _check_hint_arch(hints, _MSRRESNET_FAMILY, "msrresnet")
    kwargs = infer_msrresnet(shapes_of(state))
    if hints.scale is not None and hints.scale != kwargs["scale"]:
        raise CheckpointError(
            f"scale {hints.scale} given, but the file's MSRResNet upscales x{kwargs['scale']}"
        )
    return Recognised(arch, kwargs, UNIT, state)


# --------------------------------------------------------------------------------------------
# Real-ESRGAN SRVGGNetCompact


_SRVGG_FAMILY = ("srvgg_compact",)
_SRVGG_KEY = re.compile(r"body\.(\d+)\.(weight|bias)$")


def detect_srvgg_compact(shapes: Shapes) -> bool:
    # Only body.N keys, a 4-d conv at body.0 and a 1-d PReLU slope vector at body.1.
    return (
        len(shapes.get("body.0.weight", ())) == 4
        and len(shapes.get("body.1.weight", ())) == 1
        and all(_SRVGG_KEY.match(k) for k in shapes)
    )


def infer_srvgg_compact(shapes: Shapes) -> dict[str, Any]:
    """SRVGGNetCompact kwargs: num_feat and in_channels from ``body.0``; the last index L gives
    num_conv = (L - 2) / 2; the last conv makes out_channels * scale**2 channels, and out_channels
    equals in_channels (the network adds its upsampled input), so scale = sqrt(that / in_channels)."""
    num_feat, in_channels = shapes["body.0.weight"][:2]
    last = _consecutive(_indices(shapes, r"body\.(\d+)\."), 0, "body layer") - 1
    if last < 2 or last % 2:
        raise CheckpointError(f"SRVGGNetCompact body ends at index {last}: expected an even index >= 2")
    for i in range(0, last + 1):
        want = 4 if i % 2 == 0 else 1  # convs at even indices, PReLU slopes at odd ones
        if len(shapes.get(f"body.{i}.weight", ())) != want:
            raise CheckpointError(f"body.{i}.weight should be {'a conv' if want == 4 else 'a PReLU slope vector'}")
    made = shapes[f"body.{last}.weight"][0]
    scale = round((made / in_channels) ** 0.5)
    if scale < 1 or scale * scale * in_channels != made:
        raise CheckpointError(f"the last conv makes {made} channels: not {in_channels} x scale**2")
    return {
        "in_channels": in_channels,
        "out_channels": in_channels,
        "scale": scale,
        "num_feat": num_feat,
        "num_conv": (last - 2) // 2,
    }


def load_srvgg_compact(state: StateDict, hints: Hints) -> Recognised:
    arch = _check_hint_arch(hints, _SRVGG_FAMILY, "srvgg_compact")
    kwargs = infer_srvgg_compact(shapes_of(state))
    if hints.scale is not None and hints.scale != kwargs["scale"]:
        raise CheckpointError(f"scale {hints.scale} given, but the file's SRVGGNetCompact upscales x{kwargs['scale']}")
    return Recognised(arch, kwargs, UNIT, state)


# --------------------------------------------------------------------------------------------
# The ordered list. More specific signatures first: the ESRGAN layouts before BasicSR's.


FOREIGN_FORMATS: tuple[ForeignFormat, ...] = (
    ForeignFormat(
        "esrgan-old", "original ESRGAN (model.1.sub layout)", "model.1.sub.0.RDB1.conv1.0.weight",
        _RRDB_FAMILY, detect_esrgan_old, load_esrgan_old,
    ),
    ForeignFormat(
        "esrgan-trunk", "ESRGAN RRDBNet_arch.py (RRDB_trunk layout)", "RRDB_trunk.0.RDB1.conv1.weight",
        _RRDB_FAMILY, detect_esrgan_trunk, load_esrgan_trunk,
    ),
    ForeignFormat(
        "basicsr-rrdbnet", "BasicSR / Real-ESRGAN RRDBNet", "body.0.rdb1.conv1.weight",
        _RRDB_FAMILY, detect_basicsr_rrdbnet, load_basicsr_rrdbnet,
    ),
    ForeignFormat(
        "basicsr-msrresnet", "BasicSR MSRResNet", "body.0.conv1.weight + upconv1.weight",
        _MSRRESNET_FAMILY, detect_basicsr_msrresnet, load_basicsr_msrresnet,
    ),
    ForeignFormat(
        "realesrgan-srvgg", "Real-ESRGAN SRVGGNetCompact", "body.0.weight + body.1.weight (PReLU)",
        _SRVGG_FAMILY, detect_srvgg_compact, load_srvgg_compact,
    ),
    ForeignFormat(
        "junyanz-resnet", "pix2pix/CycleGAN ResnetGenerator", "model.10.conv_block.1.weight",
        _RESNET_FAMILY, detect_junyanz_resnet, load_junyanz_resnet,
    ),
    ForeignFormat(
        "junyanz-unet", "pix2pix/CycleGAN UnetGenerator", "model.model.0.weight",
        _UNET_FAMILY, detect_junyanz_unet, load_junyanz_unet,
    ),
)  # fmt: skip


def recognise(state: StateDict, hints: Hints = Hints()) -> tuple[ForeignFormat, Recognised] | None:
    """The first format (among those that can produce ``hints.arch``) that detects ``state``, loaded.

    Returns None when no entry detects it. Errors carry no file name (callers add it).
    """
    shapes = shapes_of(state)
    for fmt in FOREIGN_FORMATS:
        if hints.arch is not None and hints.arch not in fmt.archs:
            continue
        if fmt.detect(shapes):
            return fmt, fmt.load(state, hints)
    return None


def load_foreign_state(
    state: StateDict,
    *,
    source: str,
    hints: Hints = Hints(),
    provenance: Mapping[str, Any] | None = None,
) -> ModelDescriptor:
    """Descriptor for a foreign state dict (already unwrapped); ``source`` names it in errors.

    Order: our detectors; then, with ``hints.arch``, the registry network of that name with its
    defaults (and ``hints.scale``) loaded strictly; then spandrel when installed; else an error
    that lists a few keys found and the signatures expected.
    """
    try:
        found = recognise(state, hints)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    info = dict(provenance or {})
    if found is not None:
        fmt, rec = found
        return build_descriptor(
            arch=rec.arch,
            kwargs=rec.kwargs,
            state=rec.state,
            value_range=rec.value_range,
            provenance={**info, "file": source, "source_format": fmt.name},
            source=source,
        )
    if hints.arch is not None:
        return _load_as_hinted(state, hints, source=source, provenance=info)
    zoo = _load_with_spandrel(state, source=source, provenance=info)
    if zoo is not None:
        return zoo
    hint = "spandrel (installed) does not recognise it either" if _has_spandrel() else ZOO_HINT
    raise CheckpointError(f"{source}: {describe_mismatch(state)}; {hint}")


def load_foreign_file(path: str | os.PathLike[str], *, hints: Hints = Hints()) -> ModelDescriptor:
    """Read a reference ``.pth`` file safely and return its descriptor (see :func:`load_foreign_state`)."""
    state, container = read_state_dict(path)
    provenance = {"state_key": container} if container else {}
    return load_foreign_state(state, source=str(path), hints=hints, provenance=provenance)


def describe_mismatch(state: Mapping[str, torch.Tensor]) -> str:
    """One clause: what the file holds (a few keys with shapes) and what we look for."""
    sample = [f"{k} {tuple(v.shape)}" for k, v in list(state.items())[:4]]
    expected = "; ".join(f"{fmt.title} ({fmt.signature})" for fmt in FOREIGN_FORMATS)
    return (
        f"no known architecture matches its {len(state)} tensors (first: {', '.join(sample)}); "
        f"expected one of: {expected}"
    )


def _load_as_hinted(
    state: StateDict, hints: Hints, *, source: str, provenance: Mapping[str, Any]
) -> ModelDescriptor:
    """``arch=`` for a file no detector knows: the registry defaults, scale from the hint."""
    assert hints.arch is not None
    try:
        spec = registry.get_spec(hints.arch)
    except KeyError as e:
        raise CheckpointError(f"{source}: {e}") from None
    kwargs = registry.resolve_kwargs(hints.arch)
    if hints.scale is not None and "scale" in kwargs:
        kwargs["scale"] = hints.scale
    return build_descriptor(
        arch=hints.arch,
        kwargs=kwargs,
        state=state,
        value_range=spec.value_range,
        provenance={**provenance, "file": source, "source_format": "state-dict"},
        source=source,
    )


def _load_with_spandrel(
    state: StateDict, *, source: str, provenance: Mapping[str, Any]
) -> ModelDescriptor | None:
    """spandrel's descriptor wrapped into ours, or None when spandrel is not installed or knows nothing.

    The optional ``img2img[zoo]`` extra; imported here so img2img never needs it. Its models take
    and give [0, 1] tensors. They cannot be saved in our format (not in our registry).
    """
    try:
        import spandrel
    except ImportError:
        return None
    try:
        loaded = spandrel.ModelLoader(device="cpu").load_from_state_dict(
            spandrel.canonicalize_state_dict(state)
        )
    except spandrel.UnsupportedModelError:
        return None
    except Exception as e:  # spandrel's own loaders raise anything on odd files; name it and stop
        raise CheckpointError(
            f"{source}: spandrel recognised but could not load it ({_one_line(e)})"
        ) from None
    if not isinstance(loaded, spandrel.ImageModelDescriptor):
        raise CheckpointError(
            f"{source}: spandrel loads it as a {loaded.purpose} model, not an image-to-image one"
        )
    net = loaded.model.eval()
    size = loaded.size_requirements
    return ModelDescriptor(
        net=net,
        arch=f"spandrel:{loaded.architecture.id}",
        kwargs={},
        scale=int(loaded.scale),
        in_channels=int(loaded.input_channels),
        out_channels=int(loaded.output_channels),
        value_range=UNIT,
        size_multiple=int(size.multiple_of),
        min_size=max(int(size.minimum), 1),
        instance_norm=has_instance_norm(net),
        provenance={**provenance, "file": source, "source_format": f"spandrel:{loaded.architecture.id}"},
    )


def _has_spandrel() -> bool:
    return importlib.util.find_spec("spandrel") is not None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def unpickler_reason(e: BaseException) -> str:
    """torch's unpickling error without its advice (it suggests ``weights_only=False``, which would
    run whatever the file asks): the specific line after "WeightsUnpickler error:" when present."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    return _one_line(Exception(lines[0])) if lines else type(e).__name__
