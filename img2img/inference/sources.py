"""Where tiles come from and where finished rows go: numpy pixels or float tensors.

A *source* hands the tiled forward pass input tiles, ``read(y0, y1, x0, x1)`` in padded input
coordinates (past the image's right and bottom edges by mirror reflection, the padding the
whole-image run would use), already converted to the model's channels. A *sink* takes finished
output rows, ``write(y0, rows)``, crops the padding away and stores them: quantised into a
preallocated uint8/uint16 array a few rows at a time (pixels), or into a float tensor.
Channel rules: gray into an RGB model is replicated; colour into a 1-channel model becomes
BT.601 luma; an RGB output for a gray input is written back as luma.
"""

from __future__ import annotations

import numpy as np
import torch

from img2img import image_io

QUANTISE_ROWS = 64  # output rows converted to pixels at a time: bounds the float temporaries


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside [0, size) back inside by mirror reflection without repeating the edge
    (numpy's and torch's "reflect" padding), for any distance outside."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * size - 2
    index = np.mod(index, period)
    return np.where(index < size, index, period - index)


def to_model_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, h, w) image tensor -> (``channels``, h, w): gray replicated, colour to luma."""
    if x.shape[0] == channels:
        return x
    if x.shape[0] == 1 and channels == 3:
        return x.expand(3, -1, -1)
    if x.shape[0] == 3 and channels == 1:
        return luma(x)
    raise ValueError(f"cannot feed a {x.shape[0]}-channel image to a {channels}-channel model")


def to_output_channels(y: torch.Tensor, channels: int) -> torch.Tensor:
    """Model output (C_out, h, w) -> ``channels`` (a gray input gets a gray output back)."""
    if y.shape[0] == channels:
        return y
    if channels == 1 and y.shape[0] == 3:
        return luma(y)
    raise ValueError(f"cannot write a {y.shape[0]}-channel output as {channels} channels")


def output_channels(in_channels: int, model_out_channels: int) -> int:
    """Channels written for an input of ``in_channels``: gray stays gray, else the model's colour."""
    return 1 if in_channels == 1 or model_out_channels == 1 else 3


def luma(x: torch.Tensor) -> torch.Tensor:
    """(3, h, w) -> (1, h, w) BT.601 luma; affine ranges are kept since the weights sum to 1."""
    w = torch.tensor(image_io.BT601_LUMA, dtype=x.dtype, device=x.device)
    return (x * w[:, None, None]).sum(dim=0, keepdim=True)


class PixelSource:
    """Tiles of an (H, W, C) uint8/uint16 array, converted one tile at a time (no float copy)."""

    def __init__(self, pixels: np.ndarray, *, value_range: tuple[float, float], channels: int) -> None:
        self.pixels, self.value_range, self.channels = pixels, value_range, channels
        self.height, self.width = pixels.shape[:2]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """(``channels``, y1 - y0, x1 - x0) float32 in the value range."""
        if 0 <= y0 and y1 <= self.height and 0 <= x0 and x1 <= self.width:
            patch = self.pixels[y0:y1, x0:x1]
        else:
            rows = reflect_index(np.arange(y0, y1), self.height)
            cols = reflect_index(np.arange(x0, x1), self.width)
            patch = self.pixels[rows[:, None], cols[None, :]]
        tensor = image_io.pixels_to_tensor(np.ascontiguousarray(patch), self.value_range)
        return to_model_channels(tensor, self.channels)


class PixelSink:
    """Quantises finished rows into ``out``, an (H * scale, W * scale, C) uint8/uint16 array."""

    def __init__(self, out: np.ndarray, *, value_range: tuple[float, float]) -> None:
        self.out, self.value_range = out, value_range
        self.height, self.width, self.channels = out.shape

    def write(self, y0: int, rows: torch.Tensor) -> None:
        """``rows``: (C_out, n, padded width) float, output rows y0 .. y0 + n (padding cropped here)."""
        stop_all = min(y0 + rows.shape[1], self.height)
        # A few rows at a time: quantising makes float temporaries the size of what it is given.
        for start in range(y0, stop_all, QUANTISE_ROWS):
            stop = min(start + QUANTISE_ROWS, stop_all)
            part = to_output_channels(rows[:, start - y0 : stop - y0, : self.width], self.channels)
            self.out[start:stop] = image_io.tensor_to_pixels(part, self.out.dtype, self.value_range).reshape(
                stop - start, self.width, self.channels
            )


class TensorSource:
    """Tiles of one (C, H, W) float tensor on the CPU, in the model's value range."""

    def __init__(self, image: torch.Tensor, *, channels: int) -> None:
        self.image, self.channels = image, channels
        self.height, self.width = image.shape[1:]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        rows = torch.from_numpy(reflect_index(np.arange(y0, y1), self.height))
        cols = torch.from_numpy(reflect_index(np.arange(x0, x1), self.width))
        return to_model_channels(self.image[:, rows][:, :, cols], self.channels)


class TensorSink:
    """Stores finished rows into ``out``, a (C, H * scale, W * scale) float tensor."""

    def __init__(self, out: torch.Tensor) -> None:
        self.out = out
        self.channels, self.height, self.width = out.shape

    def write(self, y0: int, rows: torch.Tensor) -> None:
        y1 = min(y0 + rows.shape[1], self.height)
        if y1 > y0:
            self.out[:, y0:y1] = to_output_channels(rows[:, : y1 - y0, : self.width], self.channels)
