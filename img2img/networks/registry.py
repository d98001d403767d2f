"""The one explicit table from architecture name to builder and default keyword arguments.

No decorators and no import-time registration: to add an architecture, add a line to
``ARCHITECTURES``. CLI, training and checkpoint loading all build networks through here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn


class UnknownArchitectureError(KeyError):
    """Raised for a name that is not in ``ARCHITECTURES``; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture.

    builder: keyword-only function returning the ``nn.Module``.
    defaults: keyword arguments used when the caller gives none.
    role: ``"generator"`` or ``"discriminator"``.
    value_range: tensor range the network is trained in by default.
    summary: one line for `img2img weights list` and error messages.
    """

    builder: Callable[..., nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    role: str = "generator"
    value_range: tuple[float, float] = (-1.0, 1.0)
    summary: str = ""


ARCHITECTURES: dict[str, ArchSpec] = {}


def known_names() -> list[str]:
    return sorted(ARCHITECTURES)


def get_spec(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; known: {', '.join(known_names())}"
        ) from None


def resolve_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """Defaults of ``name`` updated with ``overrides`` (the exact kwargs the builder gets)."""
    return {**get_spec(name).defaults, **overrides}


def build(name: str, **overrides: Any) -> nn.Module:
    """Build architecture ``name`` with its defaults updated by ``overrides``."""
    return get_spec(name).builder(**resolve_kwargs(name, **overrides))
