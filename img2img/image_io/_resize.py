"""Resizing pixels and ``Image`` records: area averaging to shrink, bicubic to enlarge.

The one resize rule of the package (training crops, the web page's output scale, ``--outscale``):
the area filter is the antialiased choice when shrinking; bicubic is smooth and sharp enough when
enlarging without the ringing of Lanczos on hard edges.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from img2img.image_io._record import Image


def resize_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) or (H, W) uint8/uint16/float32 pixels -> ``size`` = (height, width), same layout and dtype."""
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {width}x{height}: both sides must be at least 1 pixel")
    if pixels.shape[:2] == (height, width):
        return pixels
    shrink = height <= pixels.shape[0] and width <= pixels.shape[1]
    out = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return out[:, :, None] if out.ndim == 2 and pixels.ndim == 3 else out  # OpenCV drops a single channel


def resize_image(image: Image, size: tuple[int, int]) -> Image:
    """``image`` with colour and alpha resized to ``size`` = (height, width); other fields kept."""
    if (image.height, image.width) == tuple(size):
        return image
    alpha = None if image.alpha is None else resize_pixels(image.alpha, size)
    return replace(image, pixels=resize_pixels(image.pixels, size), alpha=alpha)
