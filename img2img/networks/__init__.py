"""img2img.networks: pure ``nn.Module``s (no file I/O, no device choice) and their registry.

Build a network by name with ``build("resnet_9blocks", in_channels=1)``; see ``registry.py``
for the names and defaults and docs/networks.md for each family.
"""

from img2img.networks.init import init_weights
from img2img.networks.norms import has_instance_norm
from img2img.networks.registry import ARCHITECTURES, build, get_spec, known_names, resolve_kwargs

__all__ = [
    "ARCHITECTURES",
    "build",
    "get_spec",
    "has_instance_norm",
    "init_weights",
    "known_names",
    "resolve_kwargs",
]
