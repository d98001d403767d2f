"""The method interface: what a training method (pix2pix, CycleGAN, SRGAN, ...) gives the loop.

A method owns its networks, optimisers and learning-rate schedules and defines one
``train_step(ctx, batch)``; :func:`img2img.training.loop.fit` owns everything else (device,
precision, channels-last, checkpoints and exact resume, EMA, NaN guard, logging, samples,
validation, export). See docs/training.md for a worked example.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from img2img.training.config import TrainConfig


class LRSchedule(Protocol):
    """Anything with ``factor(step) -> float``: a multiplier of the base learning rate.

    :class:`img2img.training.schedules.Schedule` is the usual one; a method with phases may supply
    its own (it must be a pure function of the step so resuming restores it for free).
    """

    def factor(self, step: int) -> float: ...


@dataclass(frozen=True)
class Export:
    """One generator the run exports as ``RUN_DIR/<file>.safetensors`` (our format, with metadata).

    file: file stem: ``"model"`` for single-generator methods, ``"g_ab"`` / ``"g_ba"`` for cycle
        methods (what ``checkpoints.load_model(run_dir)`` looks for).
    net: key in ``Method.nets`` (the EMA copy is exported when EMA is on).
    arch, kwargs: registry name and keyword arguments that rebuild the network.
    value_range: range of the network's input and output tensors.
    scale: output side / input side.
    info: extra provenance (e.g. ``{"direction": "AtoB"}``), merged into the file's metadata.
    """

    file: str
    net: str
    arch: str
    kwargs: Mapping[str, Any]
    value_range: tuple[float, float] = (-1.0, 1.0)
    scale: int = 1
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """What a method's generator makes of a batch, for sample grids and validation metrics.

    All tensors are (B, C, H, W) float in [0, 1] on the training device. ``input`` may be smaller
    than ``output`` (super-resolution: it is resized for the grid). ``target`` is None when the data
    are unpaired (no metrics then). ``extra`` images (e.g. a cycle reconstruction) follow in the grid.
    """

    input: torch.Tensor
    output: torch.Tensor
    target: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class StepContext:
    """Given to ``train_step``: the step number, mixed precision and optimiser stepping.

    Use ``with ctx.autocast():`` around forward passes and loss computation, ``ctx.backward(loss)``
    instead of ``loss.backward()`` and ``ctx.step_optimizer("name")`` instead of ``optimizer.step()``: they
    apply the grad scaler (fp16), gradient clipping and ``zero_grad``. Several optimisers in one step
    are fine; the loop updates the grad scaler once after ``train_step`` returns.
    """

    def __init__(
        self,
        *,
        step: int,
        total_steps: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        scaler: torch.amp.GradScaler | None,
        grad_clip: float,
        optimizers: Mapping[str, torch.optim.Optimizer],
    ) -> None:
        self.step = step  # 0-based global step being computed
        self.total_steps = total_steps
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.scaler = scaler
        self.grad_clip = grad_clip
        self._optimizers = optimizers

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision region (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor, *, retain_graph: bool = False) -> None:
        """Backpropagate ``loss`` (scaled when fp16 uses a grad scaler)."""
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward(retain_graph=retain_graph)

    def step_optimizer(self, name: str) -> None:
        """Clip (when configured), step and zero the gradients of optimiser ``name``."""
        opt = self._optimizers[name]
        if self.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    def zero_grad(self, name: str) -> None:
        self._optimizers[name].zero_grad(set_to_none=True)


def adam(
    params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float] = (0.5, 0.999)
) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one (CPU, CUDA, MPS, ...).

    Same maths as the default implementation; on a 2-core CPU the fused step of a 54M-parameter
    U-Net takes 0.04 s instead of 0.28 s. Built on the CPU, it keeps working after ``Method.to``.
    """
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    fused = "cpu" in _get_fused_kernels_supported_devices()
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None)


def set_requires_grad(nets: Iterable[nn.Module], flag: bool) -> None:
    """Freeze (False) or unfreeze (True) ``nets``, e.g. the discriminator during the generator update."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class Method(ABC):
    """A training method: networks, optimisers, schedules and one ``train_step``.

    A subclass's docstring is the text of ``img2img train <name> --help`` (its first paragraph is
    the line ``img2img train --help`` lists; indented lines are shown as written). It sets the
    class attributes and, in ``__init__(config)``, fills:

    nets: every trained network by name (``"g"``, ``"d"``, ``"g_ab"``, ``"d_a"``, ...), built on the
        CPU; the loop moves them to the device and memory format, checkpoints and restores them.
    optimizers: by name (``"g"``, ``"d"``); one optimiser may cover several nets.
    schedules: optimiser name -> :class:`LRSchedule`; the loop sets each group's learning rate to
        its ``initial_lr`` (the rate the optimiser was built with) x ``factor(step)`` before every step.

    Class attributes:
        name: the method's CLI name (its key in ``methods.METHODS``).
        config_class: its typed config dataclass (a subclass of TrainConfig); its fields declared
            with ``option(help=...)`` are the flags of ``img2img train <name>``.
        dataset_kind: the data the method needs: ``"paired"``, ``"unpaired"`` or ``"sr"`` (see
            docs/data.md); ``dataset_options()`` adds what the kind needs from the config (e.g.
            ``scale``). An ``"sr"`` run's model is used with ``img2img upscale``, the others with
            ``img2img translate``.
        ema_nets: nets averaged when ``ema_decay > 0`` (the generators).
        val_y_channel, val_crop: validation PSNR/SSIM on the Y channel with this border crop
            (super-resolution convention: SRGAN crops ``scale`` pixels).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[TrainConfig]]
    dataset_kind: ClassVar[str] = "paired"
    ema_nets: ClassVar[tuple[str, ...]] = ()
    val_y_channel: ClassVar[bool] = False
    val_crop: int = 0

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedules: dict[str, LRSchedule] = {}
        self.total_steps = 0  # set by the loop before training starts

    @abstractmethod
    def train_step(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch`` (tensors on the device, in [0, 1]).

        Returns named scalar losses (0-dim tensors; detached or not) for logging and the NaN guard.
        """

    @abstractmethod
    def predict(self, batch: dict[str, torch.Tensor], nets: Mapping[str, nn.Module]) -> Prediction:
        """Run the generator(s) on ``batch`` without gradients, for samples and validation.

        ``nets`` maps names to the modules to use: the EMA copies where EMA is on, else the live
        nets; all are in eval mode.
        """

    @abstractmethod
    def exports(self) -> list[Export]:
        """The generators written to the run directory after training and at each checkpoint."""

    def setup(self, *, total_steps: int) -> None:
        """Called once by the loop when the run length is known, before training and before resume.

        The default builds no schedule; methods override to create ``self.schedules``.
        """
        self.total_steps = total_steps

    def initialise(self) -> None:
        """Called by the loop for a fresh run only (never on ``--resume``), after ``setup`` and
        before EMA copies are taken: e.g. start weights from a file. The default does nothing."""
        return None

    def dataset_options(self) -> dict[str, Any]:
        """Extra keyword arguments for ``img2img.data.build_dataset`` (e.g. ``{"scale": 4}`` for SR);
        the loop already passes ``image_size``, ``seed``, ``preprocess`` and ``load_size``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Method-specific resumable state (e.g. an image pool), tensors and plain types only."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (the default has no state and accepts none)."""
        if state:
            raise ValueError(f"method {self.name!r} keeps no state but the checkpoint holds {sorted(state)}")

    def to(self, device: torch.device, *, channels_last: bool = False) -> None:
        """Move every net to ``device`` (and channels-last memory format) in place.

        Parameters keep their identity, so optimisers built on the CPU stay valid.
        """
        for net in self.nets.values():
            net.to(device)
            if channels_last:
                net.to(memory_format=torch.channels_last)
