"""Typed training configuration: one dataclass per method, filled from YAML and CLI flags.

A YAML file only fills a dataclass: every key must be a field of the method's config class (an
unknown key is a one-line error naming the file and the key), values are checked against the
field's type, and the resolved config is written to ``RUN_DIR/config.yaml`` so a run can be
repeated or resumed exactly.

Precedence, lowest first: dataclass defaults < ``RUN_DIR/config.yaml`` (on ``--resume``) <
``--config FILE.yaml`` < command-line flags.

The config classes are the one source of each option's facts: declare a field with
:func:`option` to give it a fixed set of ``choices`` (checked here) and ``help`` text, which makes
it a flag of ``img2img train <method>`` (the CLI generates the flag, its type, choices and shown
default from the field). Every other field is reached with ``--set KEY=VALUE`` or a YAML file.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from torch import nn

from img2img.atomic import replacing
from img2img.networks import registry


class ConfigError(ValueError):
    """A bad configuration value or file; the message is one line naming the source and the reason."""


def option(
    default: Any,
    *,
    help: str | None = None,
    choices: tuple[Any, ...] = (),
    path: str = "",
    show_default: bool = True,
) -> Any:
    """A config field with metadata: ``dataclasses.field(default=default, metadata=...)``.

    help: one line for ``img2img train <method> --help``; a field with help is a command-line flag
        (``--name-with-dashes``), the others are reached with ``--set``.
    choices: the allowed values (checked by ``TrainConfig.validate``; a click.Choice on the CLI).
    path: ``"dir"`` or ``"file"``: the flag names a folder or a file.
    show_default: False when the flag's default is not the field's (e.g. ``--device``).
    """
    meta = {"help": help, "choices": tuple(choices), "path": path, "show_default": show_default}
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items() if v not in (None, (), "")})


def field_metadata(cls: type, name: str) -> dict[str, Any]:
    """The metadata of field ``name`` merged down ``cls``'s bases: a subclass that only changes a
    default (``image_size: int = 96``) keeps its base's help and choices; one that declares
    :func:`option` again overrides them key by key."""
    meta: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None:
            meta.update(f.metadata)
    return meta


@dataclass
class TrainConfig:
    """Options every method shares. Method configs subclass this and add their own fields.

    Data and run directory:
        data: dataset root (layout depends on the method, see docs/data.md).
        out: the run directory (checkpoints, exported model, logs, samples, config.yaml).
        val_data: validation root; empty means the ``val`` (then ``test``) split of ``data`` when present.
        image_size: training crop side in pixels (HR side for super-resolution).
        preprocess, load_size: how training images become crops (docs/data.md); empty / 0 = the
            dataset kind's default (pix2pix/CycleGAN: resize to image_size * 286/256, random crop).
        augment: device-stage augmentation ops on each batch (``hflip``, ``vflip``, ``rot90``,
            ``color_jitter``, ``affine``); the references flip horizontally. Empty: none.
        batch_size, num_workers: data loader settings.

    Length (give one; ``steps`` wins when both are set):
        steps: optimiser steps in total.
        epochs: passes over the training set, converted to steps once the dataset size is known.

    Device and numerics:
        seed: seeds Python, NumPy and torch; CPU runs are reproducible bit for bit.
        device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto`` (bf16 on CUDA when supported, else fp16 with a grad scaler; fp32 on
            CPU and MPS), ``fp32``, ``bf16`` or ``fp16``.
        channels_last: memory format of networks and batches; ``None`` picks per device (on for
            CUDA, off elsewhere, see docs/training.md for the CPU measurement).
        sync_bn: under torchrun, convert BatchNorm to SyncBatchNorm (statistics over the whole
            global batch; CUDA only). See docs/distributed.md.

    Learning-rate schedule (a multiplier of each optimiser's base rate, a pure function of the step):
        lr_schedule: ``constant``; ``linear`` (constant, then linear decay to 0 from
            ``lr_decay_start`` x steps, as the pix2pix/CycleGAN reference); ``step`` (x ``lr_gamma``
            every ``lr_step_every`` steps); ``cosine`` (to ``lr_min_factor``).

    Regularisation and safety:
        grad_clip: clip each optimiser's gradients to this global L2 norm; 0 disables.
        ema_decay: keep an exponential moving average of the generators' weights with this decay
            (e.g. 0.999); 0 disables. When on, samples, validation and the exported model use it.

    Intervals in steps (0 disables, except that a final checkpoint and export are always written):
        log_every, sample_every, val_every, checkpoint_every; val_batches caps validation batches.
        A sample grid is also written at the last step of the run.
        save_every: also export numbered model snapshots ``RUN_DIR/snapshots/step_NNNNNN.safetensors``.
        tensorboard: also write TensorBoard events when the ``tensorboard`` package is installed.

    ``resume_may_change`` lists the options a ``--resume`` may give new values (applied from the
    resumed step on); any other change is refused, since the checkpoint was made with the old value.
    """

    resume_may_change: ClassVar[tuple[str, ...]] = (
        "out", "steps", "epochs", "device", "num_workers", "lr_schedule", "lr_decay_start", "lr_step_every",
        "lr_gamma", "lr_min_factor", "log_every", "sample_every", "val_every", "val_batches", "checkpoint_every",
        "save_every", "tensorboard",
    )

    data: str = option("", help="Dataset root (see docs/data.md).", path="dir")
    out: str = option("", help="Run directory: checkpoints, model, logs.", path="dir")
    val_data: str = ""
    image_size: int = option(256, help="Training crop side in pixels.")
    preprocess: str = ""
    load_size: int = 0
    augment: tuple[str, ...] = ("hflip",)
    batch_size: int = option(1, help="Images per batch.")
    num_workers: int = option(2, help="Data loader worker processes.")
    steps: int = option(0, help="Optimiser steps in total.")
    epochs: int = option(0, help="Passes over the training set (when --steps is not given).")
    seed: int = option(0, help="Random seed (CPU runs repeat exactly).")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps (default: the global --device).",
                         show_default=False)
    precision: str = option("auto", help="Mixed precision on GPUs (auto: bf16, else fp16; fp32 on CPU).",
                            choices=("auto", "fp32", "bf16", "fp16"))
    channels_last: bool | None = None
    sync_bn: bool = False
    lr_schedule: str = option("linear", choices=("constant", "linear", "step", "cosine"))
    lr_decay_start: float = 0.5
    lr_step_every: int = 0
    lr_gamma: float = 0.1
    lr_min_factor: float = 0.0
    grad_clip: float = 0.0
    ema_decay: float = option(0.0, help="EMA of the generator weights, e.g. 0.999 (0: off).")
    log_every: int = 10
    sample_every: int = 500
    val_every: int = 1000
    val_batches: int = 16
    checkpoint_every: int = 1000
    save_every: int = option(0, help="Every N steps also export a numbered model snapshot, "
                                     "RUN_DIR/snapshots/step_NNNNNN.safetensors (each usable as --model); 0: off.")
    tensorboard: bool = True

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work; subclasses extend this.

        Checks every field declared with ``option(choices=...)``, then the shared fields.
        """
        for f in dataclasses.fields(self):
            choices = field_metadata(type(self), f.name).get("choices")
            if choices:
                check_choice(f.name, getattr(self, f.name), choices)
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, not {self.device!r}")
        for name in ("image_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("num_workers", "load_size", "steps", "epochs", "log_every", "sample_every", "val_every",
                     "val_batches", "checkpoint_every", "save_every", "lr_step_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        if not 0.0 <= self.lr_decay_start <= 1.0:
            raise ConfigError(f"lr_decay_start is a fraction of the run in [0, 1], not {self.lr_decay_start}")
        if self.lr_schedule == "step" and self.lr_step_every < 1:
            raise ConfigError("lr_schedule 'step' needs lr_step_every >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0, not {self.grad_clip}")


C = TypeVar("C", bound=TrainConfig)


def field_names(cls: type[TrainConfig]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping at the top of a YAML file (empty file -> {}); errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        reason = str(e).replace("\n", " ")
        raise ConfigError(f"{p}: not valid YAML ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of option: value at the top, got {type(data).__name__}")
    return data


def build_config(
    cls: type[C],
    *layers: tuple[str, Mapping[str, Any]],
) -> C:
    """Fill ``cls`` from its defaults updated by each ``(source, mapping)`` layer in order.

    ``source`` names where the layer came from (a file path, ``"command line"``) for error messages.
    Keys must be fields of ``cls``; values are checked (and ints widened to floats) per field type.
    Returns a validated instance.
    """
    hints = typing.get_type_hints(cls)
    known = field_names(cls)
    values: dict[str, Any] = {}
    for source, mapping in layers:
        for key, value in mapping.items():
            if key not in hints or key not in known:
                raise ConfigError(
                    f"{source}: unknown option {key!r} for {cls.__name__}; known: {', '.join(sorted(known))}"
                )
            values[key] = _coerce(source, key, value, hints[key])
    config = cls(**values)
    try:
        config.validate()
    except ConfigError as e:
        sources = ", ".join(s for s, m in layers if m) or "defaults"
        raise ConfigError(f"{sources}: {e}") from None
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain YAML/JSON types only (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    with replacing(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")


def probe_network(arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Network ``arch`` with ``kwargs`` built without weights (``registry.probe``), so a config can
    ask it for its size rules; the network's own ValueError becomes a ConfigError."""
    try:
        return registry.probe(arch, **kwargs)
    except ValueError as e:
        raise ConfigError(f"{arch}: {e}") from None


def check_fits(image_size: int, net: nn.Module, arch: str, role: str) -> None:
    """ConfigError unless ``image_size``-px crops meet ``net``'s ``size_multiple`` and ``min_size``."""
    multiple, smallest = getattr(net, "size_multiple", 1), getattr(net, "min_size", 1)
    if image_size % multiple:
        raise ConfigError(f"image_size {image_size} must be a multiple of {multiple} for {arch}")
    if image_size < smallest:
        raise ConfigError(f"image_size {image_size} is below the {smallest} px the {arch} {role} needs")


def _coerce(source: str, key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field type ``hint`` (bool, int, float, str, X | None, tuple)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(source, key, value, inner[0])
    ok: Any
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        if isinstance(value, str):  # PyYAML reads `1e-4` (no dot) as a string, as YAML 1.1 says
            value = _float_or_str(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:  # tuple[str, ...]: a YAML list, or one comma-separated string
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:  # a type this checker does not know: accept as given
        ok = True
    if not ok:
        want = "a list of strings" if origin is tuple else getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{source}: option {key!r} must be {want}, got {value!r}")
    return value


def _float_or_str(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text
