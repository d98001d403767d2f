"""What the page does to one image before the model: optional denoising.

Both work on ``image_io.Image`` records (pixels (H, W, C) uint8/uint16, alpha (H, W) or None).
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from img2img import image_io

# OpenCV's non-local means filter strength `h` at denoise = 1.0; 0 switches the filter off.
MAX_DENOISE_H = 15.0


def denoise(image: image_io.Image, strength: float) -> image_io.Image:
    """Non-local means denoising of the colour pixels (alpha untouched); ``strength`` in [0, 1].

    ValueError for a 16-bit image (OpenCV's filter takes 8-bit pixels only).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"denoise must be between 0 and 1, got {strength}")
    if strength == 0.0:
        return image
    if image.pixels.dtype != np.uint8:
        raise ValueError("denoise works on 8-bit images only; set it to 0 for this 16-bit image")
    h = MAX_DENOISE_H * strength
    if image.channels == 1:
        pixels = cv2.fastNlMeansDenoising(image.pixels[:, :, 0], None, h)[:, :, None]
    else:
        # OpenCV's colour filter works in its own BGR order.
        bgr = cv2.cvtColor(image.pixels, cv2.COLOR_RGB2BGR)
        pixels = cv2.cvtColor(cv2.fastNlMeansDenoisingColored(bgr, None, h, h), cv2.COLOR_BGR2RGB)
    return replace(image, pixels=np.ascontiguousarray(pixels))
