"""Training methods: the one explicit table from method name to its class.

To add a method, add its module under ``methods/`` and one line here (no registration magic).
"""

from __future__ import annotations

from img2img.training.method import Method
from img2img.training.methods.cycle import Cycle, DiscoGAN
from img2img.training.methods.pix2pix import Pix2Pix
from img2img.training.methods.srgan import SRGAN

METHODS: dict[str, type[Method]] = {
    "pix2pix": Pix2Pix,
    "cyclegan": Cycle,
    "discogan": DiscoGAN,  # the cycle method with the DiscoGAN config preset
    "srgan": SRGAN,
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown training method {name!r}; known: {', '.join(sorted(METHODS))}") from None
