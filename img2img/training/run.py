"""One training run from a method name and options: config, seeding, data, then :func:`fit`.

This is what ``img2img train <method>`` calls; Python users can call :func:`train` the same way::

    from img2img.training import train
    train("pix2pix", {"data": "facades", "out": "runs/facades", "steps": 2000, "ngf": 32})
"""

from __future__ import annotations

import os
import random
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from img2img.training import distributed
from img2img.training.config import ConfigError, TrainConfig, build_config, read_yaml, save_config
from img2img.training.loop import FitResult, check_fresh_run, fit, select_device
from img2img.training.method import Method
from img2img.training.methods import get_method
from img2img.training.resume import check_resume_changes
from img2img.training.state import checkpoint_path, load_checkpoint

CONFIG_NAME = "config.yaml"


def resolve_config(
    method_cls: type[Method],
    *,
    options: Mapping[str, Any],
    config_file: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> TrainConfig:
    """The typed config of a run: defaults < RUN_DIR/config.yaml (resume) < config_file < options.

    ``options`` are the command-line values that were given (``out`` among them for resuming).
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    out = options.get("out")
    if resume:
        if not out:
            raise ConfigError("--resume needs --out RUN_DIR")
        saved = Path(out) / CONFIG_NAME
        if not saved.is_file():
            raise ConfigError(f"{saved}: no saved config; is {out} a run directory?")
        layers.append((str(saved), read_yaml(saved)))
    if config_file is not None:
        layers.append((str(config_file), read_yaml(config_file)))
    layers.append(("command line", dict(options)))
    config = build_config(method_cls.config_class, *layers)
    ckpt = checkpoint_path(out) if out else None
    if resume and ckpt is not None and ckpt.is_file():  # before anything is written (fit reports a missing one)
        check_resume_changes(config, load_checkpoint(ckpt, mmap=True).get("config", {}), source=str(ckpt))
    if not config.data:
        raise ConfigError("no training data: pass --data DIR (or set data: in the config file)")
    if not config.out:
        raise ConfigError("no run directory: pass --out RUN_DIR (or set out: in the config file)")
    return config


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_loaders(method: Method, config: TrainConfig) -> tuple[Any, Any, Any]:
    """(train loader, validation loader or None, device-stage augmentation or None) for ``method``.

    The method says what its data need: the dataset kind (``method.dataset_kind``) and its
    kind-specific options (``method.dataset_options()``, e.g. ``scale``). Validation uses the ``val`` (then
    ``test``) split of ``val_data`` or ``data`` when it exists (``val_data`` may also be a folder
    without splits), with deterministic centre crops.
    """
    from img2img import data

    options: dict[str, Any] = {"image_size": config.image_size, "seed": config.seed, **method.dataset_options()}
    if config.preprocess:
        options["preprocess"] = config.preprocess
    if config.load_size:
        options["load_size"] = config.load_size
    kind = method.dataset_kind
    train_set = data.build_dataset(kind, config.data, split="train", **options)
    train_loader = data.make_loader(
        train_set, batch_size=config.batch_size, shuffle=True, num_workers=config.num_workers, seed=config.seed,
        sampler=distributed.train_sampler(len(train_set), seed=config.seed),  # None: one process, whole set
    )
    val_loader = None
    val_root = config.val_data or config.data
    splits = [s for s in ("val", "test") if data.has_split(val_root, s)]
    if not splits and config.val_data:
        splits = ["train"]  # an explicit validation folder without splits (e.g. a flat folder of HR images)
    if splits:
        val_set = data.build_dataset(kind, val_root, split=splits[0], train=False, **options)
        val_loader = data.make_loader(val_set, batch_size=config.batch_size, shuffle=False, num_workers=0)
    augment = data.DeviceAugment(config.augment, paired=kind != "unpaired") if config.augment else None
    return train_loader, val_loader, augment


def train(
    method: str,
    options: Mapping[str, Any],
    *,
    config_file: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> FitResult:
    """Train ``method`` (``"pix2pix"``, ...) with ``options`` (config keys); returns the FitResult.

    Writes the resolved config to ``RUN_DIR/config.yaml`` and everything else through :func:`fit`.
    ``stop_at``: stop after this global step with a checkpoint (``resume=True`` continues).
    Raises ConfigError (bad options/data), CheckpointError (bad resume), NonFiniteLossError.
    """
    method_cls = get_method(method)
    config = resolve_config(method_cls, options=options, config_file=config_file, resume=resume)
    # Under torchrun: join the process group, one device per process (docs/distributed.md).
    with distributed.session(config.device) as rank_device:
        device = rank_device if rank_device is not None else select_device(config.device)
        run_dir = Path(config.out)
        seed_everything(config.seed)
        instance = method_cls(config)  # initial weights come from the seed
        train_loader, val_loader, augment = build_loaders(instance, config)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            check_fresh_run(run_dir)  # before config.yaml of the existing run is overwritten

        def save_resolved_config() -> None:  # once the run (or the resume) has been accepted
            if distributed.is_main():
                save_config(config, run_dir / CONFIG_NAME)

        command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""
        return fit(
            instance,
            train_loader=train_loader,
            val_loader=val_loader,
            augment=augment,
            run_dir=run_dir,
            device=device,
            resume=resume,
            progress=progress,
            provenance={"command": command} if command else None,
            stop_at=stop_at,
            on_start=save_resolved_config,
        )
