"""The one training loop every method shares: :func:`fit`.

A :class:`~img2img.training.method.Method` supplies networks, optimisers, schedules and
``train_step``; this module supplies the rest: device and precision, channels-last, learning
rates, EMA, the NaN/inf guard, logging, sample grids, validation, atomic checkpoints with exact
resume, and the export of the generators in our model format.

Exact resume: a checkpoint holds the nets, optimisers, grad scaler, EMA copies, the method's own
state, every RNG state and the data position, so a run stopped after step N and resumed produces
the same weights as one that never stopped (on the CPU, bit for bit; on GPUs up to the usual
non-determinism of cuDNN/atomics). The data pipeline draws its randomness from a separate RNG
stream whose state at the start of each epoch is saved; resuming mid-epoch replays that epoch's
loader from its start and skips the batches already used, so shuffling, worker seeds and
augmentations repeat exactly (see docs/training.md, "Data contract").
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from img2img import devices, metrics
from img2img.checkpoints import save_model
from img2img.checkpoints.format import SUFFIX
from img2img.data.errors import DataError
from img2img.training import distributed
from img2img.training.config import ConfigError, TrainConfig, config_to_dict
from img2img.training.ema import EMA
from img2img.training.method import Export, Method, StepContext
from img2img.training.monitor import RunMonitor, grid_image, save_png
from img2img.training.state import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    capture_rng,
    checkpoint_path,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)

Batch = dict[str, torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or weight; the message names it and the last good checkpoint."""


@dataclass
class FitResult:
    """How a run ended: completed steps, the last logged losses, where things are."""

    step: int
    total_steps: int
    run_dir: Path
    checkpoint: Path
    losses: dict[str, float]


def select_device(spec: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device that is absent is a ConfigError."""
    try:
        return devices.select_device(spec)
    except devices.DeviceUnavailable as e:
        raise ConfigError(str(e)) from None


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means fp32 (no autocast)."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if precision == "fp32":
        return None
    if device.type == "cpu":
        raise ConfigError(f"precision {precision} is for GPUs (slow or unsupported on the CPU); use fp32 or auto")
    return torch.bfloat16 if precision == "bf16" else torch.float16


class DataStream:
    """Endless batches from a DataLoader, epoch after epoch, with an exactly resumable position.

    Data loading draws from its own CPU RNG stream (torch, NumPy, Python), swapped in around every
    fetch, so shuffling and augmentation neither consume nor depend on the training RNG. The stream's
    state at the start of the current epoch and the number of batches already taken from it are
    the whole resumable state.
    """

    def __init__(self, loader: Any, *, seed: int) -> None:
        self.loader = loader
        self.epoch = 0
        self.index = 0  # batches taken in the current epoch
        self._iter: Iterator[Any] | None = None
        self._rng = _seeded_cpu_rng(seed)
        self._epoch_rng = self._rng

    @contextlib.contextmanager
    def _data_rng(self) -> Iterator[None]:
        training = capture_rng(devices=False)
        restore_rng(self._rng)
        try:
            yield
        finally:
            self._rng = capture_rng(devices=False)
            restore_rng(training)

    def _start_epoch(self, *, keep_skip: bool = False) -> None:
        self._epoch_rng = self._rng
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch") and not keep_skip:
            sampler.set_epoch(self.epoch)
        self._iter = iter(self.loader)

    def __next__(self) -> Any:
        with self._data_rng(), _one_line_data_errors():
            if self._iter is None:
                self._start_epoch()
            assert self._iter is not None
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch += 1
                self.index = 0
                self._start_epoch()
                try:
                    batch = next(self._iter)
                except StopIteration:
                    raise ConfigError("the training data loader yields no batches (empty dataset?)") from None
        self.index += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "index": self.index, "epoch_rng": self._epoch_rng}
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "state_dict"):
            state["sampler"] = sampler.state_dict()  # lets the sampler check the dataset is the same
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Re-create the saved epoch's iterator from its RNG state and move past the batches taken.

        A sampler with ``skip(n)`` (img2img.data.ResumableSampler, whose samples derive their random
        choices from their index and epoch) starts after them directly; otherwise they are fetched
        again and dropped.
        """
        self.epoch = int(state["epoch"])
        taken = int(state["index"])
        self._rng = state["epoch_rng"]
        sampler = getattr(self.loader, "sampler", None)
        if "sampler" in state and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict(state["sampler"])
        fast = hasattr(sampler, "skip") and getattr(self.loader, "batch_size", None) is not None
        with self._data_rng():
            if fast:
                sampler.set_epoch(self.epoch)
                sampler.skip(taken * self.loader.batch_size)
            self._start_epoch(keep_skip=fast)
            assert self._iter is not None
            for _ in range(0 if fast else taken):
                next(self._iter)
        self.index = taken


@contextlib.contextmanager
def _one_line_data_errors() -> Iterator[None]:
    """A DataError raised in a DataLoader worker process keeps its one-line message.

    The loader re-raises it in this process with the worker's whole traceback as the message
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); the message the
    data layer wrote is the traceback's last line.
    """
    try:
        yield
    except DataError as e:
        text = str(e).strip()
        if not (text.startswith("Caught ") and "Traceback" in text):
            raise
        last = text.splitlines()[-1]
        raise DataError(last.split(": ", 1)[1] if ": " in last else last) from None


def _seeded_cpu_rng(seed: int) -> dict[str, Any]:
    """A CPU RNG state (torch, NumPy, Python) derived from ``seed``, distinct from the training seed."""
    training = capture_rng(devices=False)
    data_seed = (seed * 1_000_003 + 0xDA7A) % (2**31)
    torch.manual_seed(data_seed)
    import random

    import numpy as np

    np.random.seed(data_seed)
    random.seed(data_seed)
    state = capture_rng(devices=False)
    restore_rng(training)
    return state


@contextlib.contextmanager
def _isolated_rng() -> Iterator[None]:
    """Run a block (validation, samples) without disturbing any CPU RNG the training uses."""
    state = capture_rng(devices=False)
    try:
        yield
    finally:
        restore_rng(state)


def _to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> Batch:
    out: Batch = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            fmt = torch.channels_last if channels_last and v.dim() == 4 else torch.contiguous_format
            out[k] = v.to(device, non_blocking=True, memory_format=fmt)
        else:
            out[k] = v
    return out


def _first_batch(loader: Any, max_images: int = 4) -> Batch | None:
    with _isolated_rng():
        for batch in loader:
            return {k: v[:max_images] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return None


def _all_finite(nets: Mapping[str, nn.Module]) -> str | None:
    """Name of the first net with a non-finite parameter, or None."""
    for name, net in nets.items():
        params = [p.detach() for p in net.parameters() if p.is_floating_point()]
        if params and not bool(torch.stack(torch._foreach_norm(params)).isfinite().all()):  # one sync
            return name
    return None


def _optimizer_state_finite(optimizers: Mapping[str, torch.optim.Optimizer]) -> tuple[str, str] | None:
    """(optimiser name, state entry) of the first non-finite float tensor in an optimiser's state
    (Adam's ``exp_avg`` / ``exp_avg_sq``), or None."""
    for name, opt in optimizers.items():
        entries: dict[str, list[torch.Tensor]] = {}
        for per_param in opt.state.values():
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0:
                    entries.setdefault(key, []).append(value.detach())
        for key, tensors in entries.items():
            # isfinite per tensor, not a norm: a norm of large finite values (1e30) overflows to inf
            if not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):  # one sync per entry
                return name, key
    return None


def check_fresh_run(run_dir: Path) -> None:
    """ConfigError when ``run_dir`` already holds a training checkpoint: a fresh run never overwrites one."""
    if checkpoint_path(run_dir).exists():
        raise ConfigError(f"{run_dir}: already holds a training checkpoint; pass --resume or choose another --out")


def fit(
    method: Method,
    *,
    train_loader: Any,
    run_dir: str | Path,
    device: torch.device,
    val_loader: Any = None,
    augment: Callable[[Batch], Batch] | None = None,
    resume: bool = False,
    progress: bool = True,
    provenance: Mapping[str, Any] | None = None,
    stop_at: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> FitResult:
    """Train ``method`` (its nets built, seeded and on the CPU) until ``config.steps`` steps are done.

    Args:
        method: the method; its ``config`` gives every option (see TrainConfig).
        train_loader: iterable of batches (dicts of (B, C, H, W) float tensors in [0, 1]); re-iterated
            each epoch. Its ``sampler.set_epoch(epoch)`` is called when present.
        run_dir: where checkpoints, exported models, log.jsonl and samples go.
        device: where to train (see :func:`select_device`).
        val_loader: optional batches for validation metrics and sample grids.
        augment: optional device-stage augmentation applied to each batch on the device.
        resume: continue from ``RUN_DIR/checkpoints/last.pt``.
        progress: show a progress bar.
        provenance: extra fields for the exported models' metadata (e.g. the command line).
        stop_at: stop (with a checkpoint) after this global step although the run is longer, e.g. to
            share a machine in time slices; ``--resume`` continues it as if never stopped.
        on_start: called once the run is accepted (a resume: its checkpoint restored), before the
            first file of the run is written; e.g. to save the resolved config only then.

    Returns a FitResult. Raises NonFiniteLossError when a loss, weight or optimiser state stops being finite (the
    last good checkpoint is kept), CheckpointError when resuming from an unusable checkpoint.
    """
    config: TrainConfig = method.config
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_path(run_dir)
    total = config.steps or config.epochs * _len_or_zero(train_loader)
    if total <= 0:
        raise ConfigError("give the run length: steps > 0 or epochs > 0")

    distributed.seed_rank(config.seed)  # ranks > 0: their own augmentation/dropout streams
    method.setup(total_steps=total)
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    method.to(device, channels_last=channels_last)
    autocast_dtype = resolve_precision(config.precision, device)
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None
    if not resume:
        method.initialise()  # e.g. generator weights from --init-from; a resumed run has its checkpoint
    emas = {name: EMA(method.nets[name], config.ema_decay) for name in method.ema_nets if config.ema_decay > 0}
    for opt in method.optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
    stream = DataStream(train_loader, seed=config.seed)

    step = 0
    if resume:
        step = _restore(ckpt_path, method, scaler, emas, stream)
    else:
        check_fresh_run(run_dir)
    if on_start is not None:
        on_start()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # torchrun: DDP wrappers, seen by train_step only; rank 0 alone writes (docs/distributed.md).
    ddp_nets = distributed.wrap_nets(method.nets, device, sync_bn=config.sync_bn)
    main = distributed.is_main()

    sample_batch = _first_batch(val_loader) if val_loader is not None and main else None
    monitor: Any = RunMonitor(run_dir, total_steps=total, start_step=step, progress=progress,
                              tensorboard=config.tensorboard) if main else distributed.QuietMonitor()
    saved_step = step if resume else -1
    losses: dict[str, float] = {}
    values: dict[str, float] = {}
    extra_provenance = dict(provenance or {})

    def save(at_step: int) -> None:
        nonlocal saved_step
        bad = _all_finite(method.nets)
        if bad is not None:
            raise NonFiniteLossError(
                f"step {at_step}: weights of {bad!r} are not finite; training stopped. "
                + _last_good(ckpt_path, saved_step)
            )
        bad = _optimizer_state_finite(method.optimizers)
        if bad is not None:  # diverged: e.g. squared gradients overflowed, though losses and weights are finite
            raise NonFiniteLossError(
                f"step {at_step}: the state of optimiser {bad[0]!r} ({bad[1]}) is not finite: training diverged "
                "and stopped. " + _last_good(ckpt_path, saved_step)
            )
        distributed.average_buffers(method.nets)
        ranks = distributed.gather({"rng": capture_rng(), "data": stream.state_dict(),
                                    "method_state": method.state_dict()})
        if not main:
            saved_step = at_step
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "method": method.name,
            "step": at_step,
            "total_steps": total,
            "nets": {k: v.state_dict() for k, v in method.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in method.optimizers.items()},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": {k: v.state_dict() for k, v in emas.items()},
            "method_state": method.state_dict(),
            "data": stream.state_dict(),
            "rng": capture_rng(),
            "config": config_to_dict(config),
            # How to rebuild each generator, so `--model RUN_DIR/checkpoints/last.pt` works
            # (img2img.checkpoints.loading reads this without importing training).
            "exports": [_export_record(e) for e in method.exports()],
        }
        if ranks is not None:
            payload["ranks"] = ranks  # every rank's RNG, data position and method state (pools), for --resume
        save_checkpoint(payload, ckpt_path)
        _export(method, emas, run_dir, step=at_step, total=total, extra=extra_provenance)
        saved_step = at_step

    def eval_nets() -> dict[str, nn.Module]:
        nets = {k: (emas[k].module if k in emas else v) for k, v in method.nets.items()}
        for net in nets.values():
            net.eval()
        return nets

    end = total if stop_at is None else min(stop_at, total)
    try:
        while step < end:
            batch = _to_device(next(stream), device, channels_last)
            if augment is not None:
                batch = augment(batch)
            if sample_batch is None:
                sample_batch = {k: v[:4].clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for name, schedule in method.schedules.items():
                factor = schedule.factor(step)
                for group in method.optimizers[name].param_groups:
                    group["lr"] = group["initial_lr"] * factor
            for net in method.nets.values():
                net.train()
            ctx = StepContext(step=step, total_steps=total, device=device, autocast_dtype=autocast_dtype,
                              scaler=scaler, grad_clip=config.grad_clip, optimizers=method.optimizers)
            with distributed.nets_for_step(method, ddp_nets):
                step_losses = method.train_step(ctx, batch)
            if scaler is not None:
                scaler.update()
            values = _finite_values(step_losses, step + 1, ckpt_path, saved_step)
            for name, ema in emas.items():
                ema.update(method.nets[name])
            step += 1
            monitor.step(step, values)

            if config.log_every and step % config.log_every == 0:
                losses = {k: v for k, v in monitor.flush_train(step, stream.epoch, _lrs(method)).items()
                          if k in values}
            # Samples every sample_every steps and at the last step, so a short run shows one too.
            sample_now = config.sample_every and (step % config.sample_every == 0 or step == total)
            if main and sample_now and sample_batch is not None:
                with torch.no_grad(), _isolated_rng():
                    pred = method.predict(_to_device(sample_batch, device, channels_last), eval_nets())
                save_png(grid_image(pred), run_dir / "samples" / f"step_{step:07d}.png")
            if main and config.val_every and val_loader is not None and step % config.val_every == 0:
                monitor.validation(step, _validate(method, val_loader, eval_nets(), device, channels_last))
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < end:
                save(step)
            if main and config.save_every and step % config.save_every == 0:
                _export(method, emas, run_dir, step=step, total=total, extra=extra_provenance, snapshot=True)
        if not losses:
            losses = {k: v for k, v in monitor.flush_train(step, stream.epoch, _lrs(method)).items() if k in values}
        if saved_step != step:
            save(step)
        distributed.barrier()  # every rank returns once rank 0's final files are written
    finally:
        monitor.close()
    return FitResult(step=step, total_steps=total, run_dir=run_dir, checkpoint=ckpt_path, losses=losses)


def _len_or_zero(loader: Any) -> int:
    try:
        return len(loader)
    except TypeError:
        return 0


def _lrs(method: Method) -> dict[str, float]:
    return {k: opt.param_groups[0]["lr"] for k, opt in method.optimizers.items()}


def _last_good(path: Path, saved_step: int) -> str:
    if saved_step < 0:
        return "No checkpoint was written yet."
    return (f"The last good checkpoint is kept: {path} (step {saved_step}); resume from it with a lower learning "
            "rate (--resume --lr ..., srgan: --lr-g/--lr-d; a resume applies the new rate).")


def _finite_values(losses: Mapping[str, torch.Tensor], step: int, path: Path, saved_step: int) -> dict[str, float]:
    """The losses as floats (one device sync); NonFiniteLossError when any is NaN/inf."""
    if not losses:
        return {}
    names = list(losses)
    stacked = torch.stack([torch.as_tensor(losses[k]).detach().float().reshape(()) for k in names])
    stacked = distributed.mean_across_ranks(stacked)  # every rank logs and guards the same values
    values = dict(zip(names, stacked.tolist(), strict=True))
    bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"step {step}: non-finite loss ({', '.join(bad)}); training stopped. " + _last_good(path, saved_step)
        )
    return values


@torch.no_grad()
def _validate(
    method: Method, loader: Any, nets: Mapping[str, nn.Module], device: torch.device, channels_last: bool
) -> dict[str, float]:
    """Mean PSNR/SSIM/L1 over up to ``val_batches`` batches (images without a target are skipped)."""
    config = method.config
    crop = method.val_crop
    sums: dict[str, float] = {}
    count = 0
    with _isolated_rng():
        for i, raw in enumerate(loader):
            if config.val_batches and i >= config.val_batches:
                break
            pred = method.predict(_to_device(raw, device, channels_last), nets)
            if pred.target is None:
                break
            per_image = metrics.image_metrics(pred.output.clamp(0, 1), pred.target, crop=crop,
                                              y_channel=method.val_y_channel)
            for k, v in per_image.items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            count += pred.output.shape[0]
    return {k: v / count for k, v in sums.items()} if count else {}


def _restore(
    path: Path, method: Method, scaler: torch.amp.GradScaler | None, emas: Mapping[str, EMA], stream: DataStream
) -> int:
    payload = distributed.rank_state(load_checkpoint(path), path)  # this rank's RNG and data position
    if payload.get("method") != method.name:
        raise CheckpointError(f"{path}: written by method {payload.get('method')!r}, not {method.name!r}")
    # The base rates this run's optimisers were built with (from its config, which a resume may
    # change); loading an optimiser's state would bring back the old ones.
    base_lrs = {name: [g["initial_lr"] for g in opt.param_groups] for name, opt in method.optimizers.items()}
    for kind, own in (("nets", method.nets), ("optimizers", method.optimizers), ("ema", emas)):
        saved = payload[kind]
        if set(saved) != set(own):
            raise CheckpointError(
                f"{path}: holds {kind} {sorted(saved)} but this run has {sorted(own)} (was ema_decay changed?)"
            )
        for name, obj in own.items():
            try:
                obj.load_state_dict(saved[name])
            except (RuntimeError, ValueError, KeyError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise CheckpointError(
                    f"{path}: {kind[:-1]} {name!r} does not match this run's configuration ({first})"
                ) from None
    for name, opt in method.optimizers.items():
        for group, lr in zip(opt.param_groups, base_lrs[name], strict=True):
            group["initial_lr"] = group["lr"] = lr  # scheduled optimisers get lr x factor before each step
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    method.load_state_dict(payload.get("method_state", {}))
    stream.load_state_dict(payload["data"])
    restore_rng(payload["rng"])
    return int(payload["step"])


def _export(
    method: Method,
    emas: Mapping[str, EMA],
    run_dir: Path,
    *,
    step: int,
    total: int,
    extra: Mapping[str, Any],
    snapshot: bool = False,
) -> None:
    """Write every exported generator in our model format: ``RUN_DIR/<file>.safetensors``, or with
    ``snapshot`` a numbered copy in ``RUN_DIR/snapshots/`` (see :func:`snapshot_path`).

    Saving rebuilds each network from the registry to prove the metadata fits, and building
    initialises weights from the global RNG: the export runs under an isolated RNG so it does not
    move the training RNG (a run that exported at a checkpoint step must continue exactly as one
    resumed from that checkpoint, whose RNG state was captured before the export).
    """
    exports = method.exports()
    with _isolated_rng():
        for exp in exports:
            net = emas[exp.net].module if exp.net in emas else method.nets[exp.net]
            provenance = {
                "source": "img2img train",
                "method": method.name,
                "net": exp.net,
                "ema": exp.net in emas,
                "step": step,
                "total_steps": total,
                "run_dir": str(run_dir.resolve()),
                "data": str(method.config.data),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "torch": torch.__version__,
                **dict(exp.info),
                **dict(extra),
            }
            path = (snapshot_path(run_dir, step, exp.file if len(exports) > 1 else None) if snapshot
                    else run_dir / f"{exp.file}{SUFFIX}")
            try:
                save_model(net, path, arch=exp.arch, kwargs=dict(exp.kwargs), scale=exp.scale,
                           value_range=exp.value_range, provenance=provenance)
            except OSError as e:
                raise CheckpointError(f"{path}: cannot write the model ({e.strerror or e})") from None


def _export_record(exp: Export) -> dict[str, Any]:
    """An Export as plain types (a checkpoint must load with ``weights_only=True``)."""
    return {"file": exp.file, "net": exp.net, "arch": exp.arch, "kwargs": dict(exp.kwargs),
            "value_range": [float(v) for v in exp.value_range], "scale": int(exp.scale), "info": dict(exp.info)}


def snapshot_path(run_dir: Path, step: int, file: str | None = None) -> Path:
    """``RUN_DIR/snapshots/step_000500.safetensors`` (``step_000500_g_ab.safetensors`` for ``file``
    of a method that exports several generators)."""
    name = f"step_{step:06d}" + (f"_{file}" if file else "")
    return run_dir / "snapshots" / f"{name}{SUFFIX}"
