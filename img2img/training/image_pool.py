"""The history of generated images that CycleGAN's discriminators learn from (Shrivastava et al. 2017).

Showing a discriminator only the newest fakes lets the two networks chase each other; a pool of
earlier fakes steadies it. The behaviour follows the CycleGAN reference (``pool_size`` 50): while
the pool is filling, every fake is stored and passed through; once full, each fake is, with
probability 1/2, swapped for a random stored one (which is returned instead), else passed through.

The pool is part of the resumable training state (:meth:`ImagePool.state_dict`), and its random
choices come from the global torch CPU generator, which the training loop saves and restores, so
a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class ImagePool:
    """A fixed-size buffer of past generated images.

    pool_size: images kept; 0 disables the pool (``query`` returns its input).
    """

    def __init__(self, pool_size: int) -> None:
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, not {pool_size}")
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []  # each (C, H, W), detached

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Images for the discriminator: (B, C, H, W) in, (B, C, H, W) out (same device and dtype).

        Each output row is either the input row or an older image from the pool (see the module
        docstring). The result carries no autograd history.
        """
        images = images.detach()
        if self.pool_size == 0:
            return images
        # Decide on the CPU generator without touching the device (no sync, same draws on any device).
        coins = torch.rand(images.shape[0]).tolist()
        slots = torch.randint(0, self.pool_size, (images.shape[0],)).tolist()
        out = []
        for image, coin, slot in zip(images, coins, slots, strict=True):
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif coin < 0.5:
                older = self.images[slot].to(device=image.device, dtype=image.dtype)
                self.images[slot] = image.clone()
                out.append(older)
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """The stored images as one (N, C, H, W) tensor (empty pool: no tensor), on the CPU."""
        if not self.images:
            return {"pool_size": self.pool_size, "images": None}
        return {"pool_size": self.pool_size, "images": torch.stack(self.images).cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["pool_size"]) != self.pool_size:
            raise ValueError(f"the checkpoint's image pool holds up to {state['pool_size']} images, "
                             f"this run's pool_size is {self.pool_size}")
        images = state["images"]
        self.images = [] if images is None else [img.clone() for img in images]
