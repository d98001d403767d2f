"""Rebuild a registry network from (architecture, kwargs) and fill it with a state dict.

Every loader ends here, so a file whose tensors do not fit the network it claims to be fails the
same way everywhere: one line naming the file, the architecture and a few missing or unexpected keys.

Nothing is allocated for a network before the file is known to fill it: the numbers in the kwargs
are first bounded by what the file holds (a block count cannot exceed the tensor count, a width
cannot exceed the largest tensor side), then the network is built on the meta device (shapes
only, no memory) and compared key by key, shape by shape and dtype kind by dtype kind. Only then
is the real network built, and its size is then the size of the file's tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.errors import CheckpointError
from img2img.networks import registry

# How many keys an error message quotes, so it stays one readable line.
_QUOTED_KEYS = 3

# Small numbers (scale 4, num_downs 8, n_layers 3 ...) are always plausible, whatever the file holds.
_ALWAYS_PLAUSIBLE = 16


class _SkipRandomInit(TorchFunctionMode):
    """Inside: in-place random initialisation does nothing.

    A network built only to compare shapes, or to be overwritten by a strict ``load_state_dict``,
    does not need random weights; on the meta device they would also import torch's compiler
    stack (seconds) for nothing.
    """

    SKIPPED = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.random_,
                         torch.Tensor.bernoulli_, torch.Tensor.exponential_, torch.Tensor.log_normal_})  # fmt: skip

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in self.SKIPPED:
            return args[0]
        return func(*args, **(kwargs or {}))


def build_descriptor(
    *,
    arch: str,
    kwargs: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    value_range: tuple[float, float],
    provenance: Mapping[str, Any],
    source: str,
) -> ModelDescriptor:
    """Build ``arch(**kwargs)`` on the CPU, load ``state`` strictly and return its descriptor in eval mode.

    ``source`` names the file in error messages. Tensors of another float dtype (e.g. fp16 release
    files) are copied into the float32 parameters; integer or bool tensors where the network has
    float ones are refused (casting them would give a network that computes nonsense).
    """
    what = f"{arch} {dict(kwargs)}"
    check_kwargs_plausible(arch, kwargs, state, source=source)
    shapes_only = _build(arch, kwargs, source=source, device="meta")
    check_state_fits(shapes_only.state_dict(), state, source=source, what=what)
    net = _build(arch, kwargs, source=source, device="cpu")
    net.load_state_dict(dict(state), strict=True)
    net.eval()
    return ModelDescriptor.from_net(
        net, arch=arch, kwargs=kwargs, value_range=value_range, provenance=provenance
    )


def _build(arch: str, kwargs: Mapping[str, Any], *, source: str, device: str) -> torch.nn.Module:
    try:
        with torch.device(device), _SkipRandomInit():
            return registry.build(arch, **kwargs)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{source}: cannot build {arch} with {dict(kwargs)}: {e}") from None


def check_kwargs_plausible(
    arch: str, kwargs: Mapping[str, Any], state: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Raise CheckpointError when a number in ``kwargs`` is too large for the tensors in ``state``.

    Every depth (blocks, layers, levels) of a registry network shows up as at least one tensor and
    every width as a tensor side, so no number may exceed the larger of the tensor count and the
    largest tensor side. This runs before anything is built, so metadata claiming a billion
    blocks costs nothing. The registry's own defaults are trusted (they are our code, not the file's).
    """
    try:
        defaults = registry.get_spec(arch).defaults
    except KeyError as e:
        raise CheckpointError(f"{source}: {e}") from None
    limit = max(_ALWAYS_PLAUSIBLE, len(state), *(max(t.shape, default=0) for t in state.values()))
    for key, value in kwargs.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or defaults.get(key) == value:
            continue
        if not abs(value) <= limit:
            raise CheckpointError(
                f"{source}: its {arch} has {key}={value}, but the file's {len(state)} tensors could only "
                f"fill a network with numbers up to {limit}; refusing to build it"
            )


def check_state_fits(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, source: str, what: str
) -> None:
    """Raise CheckpointError unless ``state`` has exactly the keys and shapes of ``expected``, and a
    floating-point tensor wherever ``expected`` has one (an integer counter such as BatchNorm's
    ``num_batches_tracked`` stays an integer)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    kind = [
        f"{k} {str(state[k].dtype).removeprefix('torch.')}"
        for k, v in expected.items()
        if k in state and state[k].is_floating_point() != v.is_floating_point()
    ]
    if not (missing or unexpected or wrong or kind):
        return
    parts = [
        f"{len(keys)} {label} ({quote_keys(keys)})"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape", wrong),
            ("of a non-float dtype where the network has float weights", kind),
        )
        if keys
    ]
    raise CheckpointError(f"{source}: weights do not fit {what}: {'; '.join(parts)}")


def quote_keys(keys: list[str], limit: int = _QUOTED_KEYS) -> str:
    """The first ``limit`` keys, comma-separated, with ``...`` when there are more."""
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
