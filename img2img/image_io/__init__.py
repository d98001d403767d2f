"""Reading and writing image files: the one place that touches image bytes.

Pixels are decoded and encoded by OpenCV; Pillow only parses headers (size, EXIF orientation, ICC
profile), never pixels, except for 8-bit TIFFs with alpha.

An ``Image`` holds (H, W, C) pixels, C in {1, 3}, RGB order, uint8 or uint16, with the alpha channel
split off. ``pixels_to_tensor`` / ``tensor_to_pixels`` are the only conversions between those
pixels and the float (C, H, W) tensors the engine works in. Decisions are written up in
docs/image_io.md.

The private modules each do one job: ``_record`` (``Image``, ``ImageIOError``, suffixes, limits,
listing), ``_decode`` (bytes -> ``Image``), ``_encode`` (``Image`` -> file, atomically), ``_convert``
(pixels <-> tensors), ``_resize`` (the one resize rule). Import from ``img2img.image_io`` only.
"""

from img2img.atomic import (  # re-exported: the folder pipeline's names
    remove_stale_temporaries,
    temporary_name,
)
from img2img.image_io._convert import pixels_to_tensor, tensor_to_pixels
from img2img.image_io._decode import image_size, read_image
from img2img.image_io._encode import write_image
from img2img.image_io._record import (
    BT601_LUMA,
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    Image,
    ImageIOError,
    is_image_path,
    list_image_files,
)
from img2img.image_io._resize import resize_image, resize_pixels

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "Image",
    "ImageIOError",
    "BT601_LUMA",
    "image_size",
    "is_image_path",
    "list_image_files",
    "pixels_to_tensor",
    "read_image",
    "remove_stale_temporaries",
    "resize_image",
    "resize_pixels",
    "temporary_name",
    "tensor_to_pixels",
    "write_image",
]
