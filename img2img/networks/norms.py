"""Normalisation layers by name, as the pix2pix/CycleGAN reference builds them.

The names are ``"batch"``, ``"instance"`` and ``"none"``:

- ``batch``: ``BatchNorm2d(affine=True)`` with running statistics.
- ``instance``: ``InstanceNorm2d(affine=False, track_running_stats=False)``; it holds no tensors,
  so state dicts carry nothing for it, and it normalises every image with its own statistics.
- ``none``: ``nn.Identity`` placeholders, so module indices (and state-dict keys) stay where the
  reference puts them.

The reference gives a convolution a bias only when an InstanceNorm follows it (BatchNorm has its
own shift). With ``none`` the reference also leaves the bias out; we keep that rule so reference
files load without remapping.
"""

from __future__ import annotations

from torch import nn

NORMS: tuple[str, ...] = ("batch", "instance", "none")


def check_norm(norm: str) -> str:
    """Return ``norm`` if it is a known name, else raise ValueError listing the known ones."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")
    return norm


def norm_layer(norm: str, num_features: int) -> nn.Module:
    """A fresh normalisation layer for ``num_features`` channels (see module docstring)."""
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(num_features, affine=True)
    if norm == "instance":
        return nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
    return nn.Identity()


def conv_bias(norm: str) -> bool:
    """Whether a convolution followed by ``norm`` has a bias (reference rule: only for instance)."""
    return check_norm(norm) == "instance"


def has_instance_norm(net: nn.Module) -> bool:
    """True if any layer of ``net`` normalises with per-image statistics (InstanceNorm).

    Tiling must then take those statistics from the whole image, not from each tile.
    An InstanceNorm that tracks running statistics and is in eval mode uses stored
    statistics, but we still report it: the reference never runs it that way.
    """
    return any(
        isinstance(m, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)) for m in net.modules()
    )
