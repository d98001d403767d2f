"""Exponential moving average of a network's weights."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """A frozen copy of ``net`` whose parameters follow ``p_ema <- p_ema + (1 - d) (p - p_ema)``.

    The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates so the
    average does not stay anchored at the initial weights in short runs. Buffers (BatchNorm running
    statistics) are copied, not averaged. ``module`` is in eval mode and has no gradients.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in net.parameters()]
        if ema_params:
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), net.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
