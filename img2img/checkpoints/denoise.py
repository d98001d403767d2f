"""Denoise strength: blend the weights of a clean-trained model and its real-world companion.

Real-ESRGAN's ``-dn`` idea: two models of the same architecture, one trained on clean bicubic
inputs (strength 0) and one on real-world degradations (noise, JPEG, blur; strength 1), and a
network whose every tensor is ``(1 - s) * clean + s * real_world``. Strength 0 and 1 return the two
models' tensors exactly, not through the arithmetic.

The pair is declared by the clean model's card, the JSON file beside the model file with the same
stem (``weights/img2img-sr-x4.json`` for ``weights/img2img-sr-x4.safetensors``)::

    {"denoise": {"companion": "img2img-sr-x4-rw", "default": 0.5}, ...}

``companion`` is a file stem in the same folder or a bundled name; ``default`` is the strength used
when the caller asks for the card's default (``img2img upscale`` without ``--denoise``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from img2img.checkpoints.bundled import find_bundled
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.errors import CheckpointError
from img2img.checkpoints.format import SUFFIX

CARD_KEY = "denoise"
DEFAULT = "default"  # ``denoise=DEFAULT``: the card's default strength, or the model as is without a pair


@dataclass(frozen=True)
class DenoisePair:
    """What a card declares: the real-world ``companion`` file and the ``default`` strength."""

    companion: Path
    default: float


def card_path(model_file: str | Path) -> Path:
    """The card (JSON) of a model file: same folder, same stem, ``.json``."""
    return Path(model_file).with_suffix(".json")


def denoise_pair(model_file: str | Path) -> DenoisePair | None:
    """The pair the card of ``model_file`` declares, or None (no card, or a card without ``denoise``)."""
    card = card_path(model_file)
    if not card.is_file():
        return None
    try:
        document = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{card}: not a readable JSON model card ({e})") from None
    block = document.get(CARD_KEY) if isinstance(document, dict) else None
    if block is None:
        return None
    companion, default = (block.get("companion"), block.get("default")) if isinstance(block, dict) else (None, None)
    if not isinstance(companion, str) or not isinstance(default, (int, float)) or not 0 <= default <= 1:
        raise CheckpointError(
            f"{card}: its {CARD_KEY!r} entry needs a 'companion' model name and a 'default' strength in [0, 1]"
        )
    beside = Path(model_file).parent / f"{companion}{SUFFIX}"
    return DenoisePair(beside if beside.is_file() else find_bundled(companion), float(default))


def check_strength(strength: float) -> float:
    if not isinstance(strength, (int, float)) or math.isnan(strength) or not 0 <= strength <= 1:
        raise CheckpointError(f"denoise strength must be a number from 0 to 1, not {strength!r}")
    return float(strength)


def resolve_strength(model_file: str | Path, denoise: float | str) -> tuple[float, DenoisePair] | None:
    """(strength, pair) to blend, or None to use the model as it is.

    ``denoise`` is a number in [0, 1] (the model's card must declare a companion) or ``DEFAULT``
    (the card's default strength; a model without a pair is used as it is).
    """
    pair = denoise_pair(model_file)
    if denoise == DEFAULT:
        return None if pair is None else (pair.default, pair)
    if isinstance(denoise, str):
        raise CheckpointError(f"denoise strength must be a number from 0 to 1 or {DEFAULT!r}, not {denoise!r}")
    strength = check_strength(denoise)
    if pair is None:
        raise CheckpointError(
            f"{model_file}: --denoise needs a model whose card ({card_path(model_file).name}) declares a "
            "real-world companion (a 'denoise' entry); this model has none, so it cannot blend"
        )
    return strength, pair


def blend(clean: ModelDescriptor, real_world: ModelDescriptor, strength: float, *, companion: str) -> ModelDescriptor:
    """``clean`` with its tensors set to ``(1 - strength) * clean + strength * real_world``.

    Both must be the same architecture with the same kwargs. Strength 0 and 1 copy one side's
    tensors exactly. Modifies and returns ``clean``.
    """
    strength = check_strength(strength)
    if (clean.arch, clean.kwargs) != (real_world.arch, real_world.kwargs):
        raise CheckpointError(
            f"{companion}: cannot blend {real_world.arch} {real_world.kwargs} into {clean.arch} {clean.kwargs}: "
            "a denoise pair must share the architecture and its sizes"
        )
    a, b = clean.net.state_dict(), real_world.net.state_dict()
    if strength == 0:
        mixed = a
    elif strength == 1:
        mixed = b
    else:
        mixed = {k: torch.lerp(a[k], b[k].to(a[k]), strength) if a[k].is_floating_point() else a[k] for k in a}
    clean.net.load_state_dict(mixed)
    clean.provenance = {**clean.provenance, "denoise": strength, "denoise_companion": companion}
    return clean
