"""Training: one loop (:func:`img2img.training.loop.fit`) for every method; see docs/training.md.

``train(method, options)`` runs a whole training from a method name and config keys (what
``img2img train`` calls); it is imported lazily so importing a submodule stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from img2img.training.run import train

        return train
    raise AttributeError(f"module 'img2img.training' has no attribute {name!r}")
