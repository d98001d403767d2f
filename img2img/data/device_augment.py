"""The device stage of augmentation: random flips, 90-degree rotations, colour jitter and affine
warps on a whole batch, on the batch's device (Kornia's affine warp, our own parameter sampling).

Why not ``kornia.augmentation.AugmentationSequential``: with several data keys it shares one set of
parameters in pixels, which is right for a pix2pix pair but wrong for an LR/HR pair of different
sizes. Here every random parameter is drawn per sample in size-relative form (flip or not, k
quarter turns, colour factors, rotation/shear/scale and translation as a fraction of the side), and
turned into pixels for each tensor's own size. For an LR/HR pair that is exactly the same geometric
transform at both resolutions (pixel centres map as ``x_lr = (x_hr + 0.5) / scale - 0.5``, so the
centre-based affine matrix only has its translation divided by ``scale``).

No op syncs with the host: samples that skip an op get identity parameters, and the results are
selected with ``torch.where``.

Colour jitter is linear: brightness (multiply), contrast (blend with the image's mean luma), then
one per-sample 3x3 RGB matrix for saturation (blend with luma) and hue (a rotation around the gray
axis in YIQ space) - instead of Kornia's HSV round trip, which is far slower on a CPU (measured in
docs/benchmarks.md, "Input pipeline"). Being linear, it commutes with resizing, so an LR/HR pair
jittered with one draw stays consistent (up to clamping).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import kornia.geometry.transform as kt
import torch

from img2img import image_io
from img2img.data.augment import AugmentParams, check_ops


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """n uniform numbers in [0, 1) on ``device``, from ``generator`` or the device's default RNG."""
    if generator is None:
        return torch.rand(n, device=device)
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _uniform(
    n: int, lo: float, hi: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, generator, device)


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per sample: ``a`` where mask (B,) is true, else ``b``."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


class DeviceAugment:
    """Batch augmentation on the device with shared parameters for the images of a pair.

    Args:
        ops: op names applied in order: ``hflip``, ``vflip``, ``rot90``, ``color_jitter``, ``affine``.
            Empty means identity.
        paired: True: one draw of parameters per sample, shared by every image tensor of the batch
            (pix2pix ``a``/``b``, SR ``lr``/``hr``). False: each key gets its own draw (unpaired domains).
        params: strengths and probabilities (:class:`~img2img.data.augment.AugmentParams`).

    ``__call__(batch, generator=None) -> dict``: every 4-D float tensor (B, C, H, W) in [0, 1] of the
    batch is augmented; other entries (paths) pass through unchanged. Shared tensors must have the
    same batch size and aspect ratio. ``rot90`` turns square batches by k * 90 degrees and
    non-square ones by 0 or 180 degrees only (so shapes stay fixed). Colour ops skip saturation and
    hue on 1-channel tensors. ``generator`` (any device) makes the draws reproducible; ``None`` uses
    the default RNG of the tensors' device. Outputs stay in [0, 1].
    """

    def __init__(
        self, ops: Sequence[str] = ("hflip",), *, paired: bool = True, params: AugmentParams | None = None
    ):
        self.ops = check_ops(ops)
        self.paired = paired
        self.params = params or AugmentParams()

    def __repr__(self) -> str:
        return f"DeviceAugment(ops={list(self.ops)}, paired={self.paired})"

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        out = dict(batch)
        keys = [k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.dim() == 4]
        if not self.ops or not keys:
            return out
        groups = [keys] if self.paired else [[k] for k in keys]
        for group in groups:
            tensors = [batch[k] for k in group]
            _check_group(group, tensors)
            for op in self.ops:
                tensors = getattr(self, f"_{op}")(tensors, generator)
            out.update(zip(group, tensors, strict=True))
        return out

    # -- ops: each takes the group's tensors and returns them transformed with one parameter draw --

    def _flip(self, xs: list[torch.Tensor], g: torch.Generator | None, dim: int) -> list[torch.Tensor]:
        mask = _rand(xs[0].shape[0], g, xs[0].device) < self.params.flip_p
        return [_select(mask, x.flip(dim), x) for x in xs]

    def _hflip(self, xs: list[torch.Tensor], g: torch.Generator | None) -> list[torch.Tensor]:
        return self._flip(xs, g, -1)

    def _vflip(self, xs: list[torch.Tensor], g: torch.Generator | None) -> list[torch.Tensor]:
        return self._flip(xs, g, -2)

    def _rot90(self, xs: list[torch.Tensor], g: torch.Generator | None) -> list[torch.Tensor]:
        square = xs[0].shape[-1] == xs[0].shape[-2]
        u = _rand(xs[0].shape[0], g, xs[0].device)
        k = (u * 4).long().clamp(max=3) if square else (u * 2).long().clamp(max=1) * 2
        out = []
        for x in xs:
            y = x
            for turns in (1, 2, 3) if square else (2,):
                y = _select(k == turns, torch.rot90(x, turns, dims=(-2, -1)), y)
            out.append(y)
        return out

    def _color_jitter(self, xs: list[torch.Tensor], g: torch.Generator | None) -> list[torch.Tensor]:
        p, n, dev = self.params, xs[0].shape[0], xs[0].device
        on = _rand(n, g, dev) < p.color_p

        def factor(identity: float, spread: float) -> torch.Tensor:
            drawn = _uniform(n, identity - spread, identity + spread, g, dev)
            return torch.where(on, drawn, torch.full((n,), identity, device=dev))

        brightness = factor(1.0, p.brightness)
        contrast = factor(1.0, p.contrast)
        saturation = factor(1.0, p.saturation)
        hue = factor(0.0, p.hue) * (2 * math.pi)  # fraction of a turn -> radians
        # (B, 3, 3): hue rotation first, then saturation.
        rgb_matrix = _saturation_matrix(saturation) @ _hue_matrix(hue)
        return [_jitter(x, brightness, contrast, rgb_matrix) for x in xs]

    def _affine(self, xs: list[torch.Tensor], g: torch.Generator | None) -> list[torch.Tensor]:
        p, n, dev = self.params, xs[0].shape[0], xs[0].device
        on = _rand(n, g, dev) < p.affine_p
        zero = torch.zeros(n, device=dev)
        angle = torch.where(on, _uniform(n, -p.degrees, p.degrees, g, dev), zero)
        tx = torch.where(on, _uniform(n, -p.translate, p.translate, g, dev), zero)
        ty = torch.where(on, _uniform(n, -p.translate, p.translate, g, dev), zero)
        scale = torch.where(on, _uniform(n, p.scale[0], p.scale[1], g, dev), zero + 1)
        shear = math.radians(p.shear)
        sx = torch.where(on, _uniform(n, -shear, shear, g, dev), zero)
        sy = torch.where(on, _uniform(n, -shear, shear, g, dev), zero)
        out = []
        for x in xs:
            h, w = x.shape[-2:]
            f = dict(device=x.device, dtype=torch.float32)
            center = torch.tensor([(w - 1) / 2, (h - 1) / 2], **f).expand(n, 2)
            translations = torch.stack([tx * w, ty * h], dim=1).to(**f)
            matrix = kt.get_affine_matrix2d(
                translations,
                center,
                scale.to(**f)[:, None].expand(n, 2),
                angle.to(**f),
                sx.to(**f),
                sy.to(**f),
            )
            warped = kt.warp_affine(
                x.float(),
                matrix[:, :2],
                dsize=(h, w),
                mode="bilinear",
                padding_mode="reflection",
                align_corners=True,
            )
            out.append(_select(on, warped.to(x.dtype).clamp(0.0, 1.0), x))
        return out


# BT.601 luma and the YIQ transform: hue rotates the chroma plane (I, Q) around the gray axis.
_LUMA = image_io.BT601_LUMA  # YIQ's first row below is the same
_YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))


def _hue_matrix(angle: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) RGB matrices rotating hue by ``angle`` radians (B,) in YIQ space."""
    yiq = torch.tensor(_YIQ, dtype=torch.float32, device=angle.device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(angle.shape[0], 3, 3, device=angle.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    return torch.linalg.inv(yiq) @ rot @ yiq


def _saturation_matrix(factor: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) RGB matrices blending each pixel with its luma: factor 0 gray, 1 identity."""
    luma = torch.tensor(_LUMA, device=factor.device).expand(3, 3)  # every row: the luma weights
    f = factor.view(-1, 1, 1)
    return f * torch.eye(3, device=factor.device) + (1 - f) * luma


def _jitter(
    x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, rgb_matrix: torch.Tensor
) -> torch.Tensor:
    """Brightness (multiply), contrast (blend with the mean luma), then the RGB matrix (3-channel only)."""
    b = brightness.to(x.dtype).view(-1, 1, 1, 1)
    c = contrast.to(x.dtype).view(-1, 1, 1, 1)
    y = x * b
    gray = (
        torch.einsum("c,bchw->bhw", torch.tensor(_LUMA, device=x.device, dtype=x.dtype), y)
        if y.shape[1] == 3
        else y[:, 0]
    )
    y = y * c + (1 - c) * gray.mean(dim=(-2, -1)).view(-1, 1, 1, 1)
    if y.shape[1] == 3:
        y = torch.einsum("bij,bjhw->bihw", rgb_matrix.to(x.dtype), y)
    return y.clamp(0.0, 1.0)


def _check_group(keys: list[str], tensors: list[torch.Tensor]) -> None:
    ref = tensors[0]
    for key, x in zip(keys[1:], tensors[1:], strict=True):
        if x.shape[0] != ref.shape[0]:
            raise ValueError(f"batch '{key}' has {x.shape[0]} samples, '{keys[0]}' has {ref.shape[0]}")
        if x.shape[-1] * ref.shape[-2] != x.shape[-2] * ref.shape[-1]:
            raise ValueError(
                f"batch '{key}' ({x.shape[-2]}x{x.shape[-1]}) and '{keys[0]}' ({ref.shape[-2]}x{ref.shape[-1]}) "
                "differ in aspect ratio; shared augmentation needs the same geometry"
            )
