"""Rebuild a registry network from (architecture, kwargs) and fill it with a state dict.

Every loader ends here, so a file whose tensors do not fit the network it claims to be fails the
same way everywhere: one line naming the file, the architecture and a few missing or unexpected keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.errors import CheckpointError
from img2img.networks import registry

# How many keys an error message quotes, so it stays one readable line.
_QUOTED_KEYS = 3


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
    files) are copied into the float32 parameters.
    """
    try:
        net = registry.build(arch, **kwargs)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot build {arch} with {dict(kwargs)}: {e}") from None
    check_state_fits(net.state_dict(), state, source=source, what=f"{arch} {dict(kwargs)}")
    net.load_state_dict(dict(state), strict=True)
    net.eval()
    return ModelDescriptor.from_net(
        net, arch=arch, kwargs=kwargs, value_range=value_range, provenance=provenance
    )


def check_state_fits(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, source: str, what: str
) -> None:
    """Raise CheckpointError unless ``state`` has exactly the keys and shapes of ``expected``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or wrong):
        return
    parts = [
        f"{len(keys)} {label} ({quote_keys(keys)})"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong))
        if keys
    ]
    raise CheckpointError(f"{source}: weights do not fit {what}: {'; '.join(parts)}")


def quote_keys(keys: list[str], limit: int = _QUOTED_KEYS) -> str:
    """The first ``limit`` keys, comma-separated, with ``...`` when there are more."""
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
