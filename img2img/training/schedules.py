"""Learning-rate schedules as pure functions of the step.

A schedule is a multiplier of an optimiser's base learning rate. Because it depends on the step
only, resuming needs no scheduler state: the step restores it. The loop applies
``base_lr * schedule.factor(step)`` to every parameter group before each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from img2img.training.config import TrainConfig


@dataclass(frozen=True)
class Schedule:
    """Multiplier of the base learning rate over ``[start, start + length)`` steps.

    kind: ``constant``; ``linear`` (1 until ``decay_start`` x length, then linear to 0 at the end,
        as the pix2pix/CycleGAN reference's "linear" policy); ``step`` (``gamma`` ** (t // every));
        ``cosine`` (half a cosine from 1 to ``min_factor``).
    start: first global step of this schedule (a later training phase starts later); before it
        the factor is 1.
    length: number of steps the schedule spans; after it the final value holds.
    """

    kind: str = "constant"
    length: int = 1
    start: int = 0
    decay_start: float = 0.5
    every: int = 0
    gamma: float = 0.1
    min_factor: float = 0.0

    def factor(self, step: int) -> float:
        """Multiplier for the 0-based global ``step``."""
        t = min(max(step - self.start, 0), self.length)
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            begin = int(round(self.decay_start * self.length))
            if t < begin:
                return 1.0
            return max(0.0, 1.0 - (t - begin) / max(self.length - begin, 1))
        if self.kind == "step":
            return self.gamma ** (t // max(self.every, 1))
        if self.kind == "cosine":
            return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t / self.length))
        raise ValueError(f"unknown schedule kind {self.kind!r}")


def schedule_from_config(config: TrainConfig, *, length: int, start: int = 0) -> Schedule:
    """The schedule the config's ``lr_*`` options describe, over ``length`` steps from ``start``."""
    return Schedule(
        kind=config.lr_schedule,
        length=max(length, 1),
        start=start,
        decay_start=config.lr_decay_start,
        every=config.lr_step_every,
        gamma=config.lr_gamma,
        min_factor=config.lr_min_factor,
    )
