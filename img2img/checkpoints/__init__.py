"""Model files: our safetensors format, foreign reference checkpoints, bundled names, and the model descriptor.

``load_model(source)`` turns a bundled name, a model file or a run directory into a
:class:`ModelDescriptor`; ``save_model(model, path)`` writes our ``.safetensors`` format.
See docs/checkpoints.md.
"""

from img2img.checkpoints.bundled import (
    BundledModel,
    cache_dir,
    default_upscaler_name,
    find_bundled,
    list_bundled,
    search_dirs,
)
from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.checkpoints.errors import CheckpointError
from img2img.checkpoints.foreign import FOREIGN_FORMATS, Hints, recognise
from img2img.checkpoints.format import FORMAT_VERSION, read_metadata, save_model
from img2img.checkpoints.loading import convert, load_file, load_model, resolve_source

__all__ = [
    "FORMAT_VERSION",
    "FOREIGN_FORMATS",
    "BundledModel",
    "CheckpointError",
    "Hints",
    "ModelDescriptor",
    "cache_dir",
    "convert",
    "default_upscaler_name",
    "find_bundled",
    "list_bundled",
    "load_file",
    "load_model",
    "read_metadata",
    "recognise",
    "resolve_source",
    "save_model",
    "search_dirs",
]
