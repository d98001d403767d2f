"""img2img: image-to-image translation (pix2pix, CycleGAN, DiscoGAN, SRGAN, ESRGAN-family) on PyTorch.

The public Python API is re-exported here lazily, so `import img2img` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from img2img._version import __version__

__all__ = ["__version__", "ModelDescriptor", "load_model"]

if TYPE_CHECKING:  # pragma: no cover
    from img2img.checkpoints import ModelDescriptor, load_model


def __getattr__(name: str) -> Any:
    # Lazy re-exports: torch is only imported when the API is used.
    if name in ("ModelDescriptor", "load_model"):
        from img2img import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'img2img' has no attribute {name!r}")
