"""Differentiable augmentation for discriminator inputs (DiffAugment, Zhao et al. 2020).

With few training images a discriminator memorises them; augmenting *both* the real and the fake
images it sees, with ops that let gradients flow back to the generator, keeps it honest without
leaking the augmentation into the generator's outputs. Our own implementation of the paper's three
policies:

- ``color``: brightness shift in [-1/4, 1/4] of the value span, saturation factor in [0, 2],
  contrast factor in [0.5, 1.5] (each per sample);
- ``translation``: integer shift of up to 1/8 of each side, the gap filled with the mid value;
- ``cutout``: a square of half the side at a random place set to the mid value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from img2img.data.device_augment import _rand

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _policy(policy: str | Sequence[str]) -> list[str]:
    names = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else list(policy)
    names = [n for n in names if n]
    for n in names:
        if n not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy '{n}'; choose from {', '.join(POLICIES)}")
    return names


def _randint(n: int, low: int, high: int, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """n integers uniform in [low, high] (inclusive)."""
    return (low + (_rand(n, g, device) * (high - low + 1)).floor()).long().clamp(max=high)


def _color(xs: list[torch.Tensor], g: torch.Generator | None, span: float) -> list[torch.Tensor]:
    n, dev = xs[0].shape[0], xs[0].device
    shift = ((_rand(n, g, dev) - 0.5) * (span / 2)).view(n, 1, 1, 1)
    saturation = (_rand(n, g, dev) * 2).view(n, 1, 1, 1)
    contrast = (_rand(n, g, dev) + 0.5).view(n, 1, 1, 1)
    out = []
    for x in xs:
        x = x + shift.to(x.dtype)
        mean_c = x.mean(dim=1, keepdim=True)
        x = (x - mean_c) * saturation.to(x.dtype) + mean_c
        mean_all = x.mean(dim=(1, 2, 3), keepdim=True)
        out.append((x - mean_all) * contrast.to(x.dtype) + mean_all)
    return out


def _translation(xs: list[torch.Tensor], g: torch.Generator | None, fill: float) -> list[torch.Tensor]:
    n, _, h, w = xs[0].shape
    dev = xs[0].device
    my, mx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy, dx = _randint(n, -my, my, g, dev), _randint(n, -mx, mx, g, dev)
    # Gather from a padded copy: output pixel (i, j) reads input (i - dy, j - dx).
    iy = torch.arange(h, device=dev)[None, :] + my - dy[:, None]  # (B, H) into the padded tensor
    ix = torch.arange(w, device=dev)[None, :] + mx - dx[:, None]  # (B, W)
    b = torch.arange(n, device=dev)[:, None, None]
    out = []
    for x in xs:
        padded = torch.nn.functional.pad(x, (mx, mx, my, my), value=fill)
        moved = padded.permute(0, 2, 3, 1)[b, iy[:, :, None], ix[:, None, :]]  # (B, H, W, C)
        out.append(moved.permute(0, 3, 1, 2))
    return out


def _cutout(xs: list[torch.Tensor], g: torch.Generator | None, fill: float) -> list[torch.Tensor]:
    n, _, h, w = xs[0].shape
    dev = xs[0].device
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy, cx = _randint(n, 0, h - 1, g, dev), _randint(n, 0, w - 1, g, dev)  # square centre, may overhang
    ys = torch.arange(h, device=dev)[None, :]
    xs_ = torch.arange(w, device=dev)[None, :]
    in_y = (ys >= (cy - ch // 2)[:, None]) & (ys < (cy - ch // 2 + ch)[:, None])  # (B, H)
    in_x = (xs_ >= (cx - cw // 2)[:, None]) & (xs_ < (cx - cw // 2 + cw)[:, None])  # (B, W)
    hole = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # (B, 1, H, W)
    return [torch.where(hole, torch.full_like(x, fill), x) for x in xs]


def diff_augment(
    x: torch.Tensor | Sequence[torch.Tensor],
    policy: str | Sequence[str] = "color,translation,cutout",
    *,
    generator: torch.Generator | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """DiffAugment ``x`` for a discriminator; differentiable with respect to ``x``.

    Args:
        x: (B, C, H, W) in ``value_range``, or a tuple/list of such tensors with equal B, H, W that
            share one parameter draw (a conditional discriminator's input and output images).
        policy: comma-separated ops from ``color``, ``translation``, ``cutout`` (empty: identity).
        generator: RNG for the draws (any device); None uses the tensors' device default RNG.
        value_range: the tensors' range; sets the brightness span and the mid value used as fill.

    Returns a tensor of x's shape, or a tuple when ``x`` was a sequence. Call it separately on the
    real and the fake batch (each call draws new parameters), as in the paper.
    """
    single = isinstance(x, torch.Tensor)
    xs = [x] if single else list(x)
    ref = xs[0]
    for t in xs[1:]:
        if t.shape[0] != ref.shape[0] or t.shape[-2:] != ref.shape[-2:]:
            raise ValueError(
                f"diff_augment tensors differ in batch or size: {tuple(ref.shape)} vs {tuple(t.shape)}"
            )
    lo, hi = value_range
    fill = (lo + hi) / 2
    for name in _policy(policy):
        if name == "color":
            xs = _color(xs, generator, hi - lo)
        elif name == "translation":
            xs = _translation(xs, generator, fill)
        else:
            xs = _cutout(xs, generator, fill)
    return xs[0] if single else tuple(xs)
