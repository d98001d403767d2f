"""The CPU stage of augmentation (albumentations + OpenCV, runs in DataLoader workers).

Decoded pixels (H, W, C) uint8/uint16 -> channel conversion -> resize by policy -> small-image
handling -> crop -> optional CPU ops. Every image of a pair goes through one call, so they share
the same parameters. Random choices come from the ``np.random.Generator`` the dataset derives from
the sample key, never from global state.

The op names (``hflip``, ``vflip``, ``rot90``, ``color_jitter``, ``affine``) and their strengths
(:class:`AugmentParams`) are shared with the device stage (``device_augment.py``): the same list
from the training config can run here (CPU-only machines) or on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch

from img2img.data.errors import DataError
from img2img.image_io import pixels_to_tensor, resize_pixels, tensor_to_pixels

PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
SMALL = ("pad", "upscale")
OPS = ("hflip", "vflip", "rot90", "color_jitter", "affine")
NONE_MULTIPLE = 4  # preprocess="none" rounds sides to a multiple of 4, as the reference does


@dataclass(frozen=True)
class AugmentParams:
    """Strengths of the named ops, shared by the CPU and the device stage.

    flip_p: probability of each flip; rot90 draws k in {0, 1, 2, 3} uniformly.
    color_jitter: applied with probability color_p; brightness/contrast/saturation factors are drawn
        in [1 - x, 1 + x], hue as a fraction of a full turn in [-hue, hue] (torchvision's convention).
    affine: applied with probability affine_p; rotation in [-degrees, degrees], translation up to
        ``translate`` of the side, isotropic scale in ``scale``, shear in [-shear, shear] degrees;
        borders are filled by reflection.
    """

    flip_p: float = 0.5
    color_p: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05
    affine_p: float = 0.5
    degrees: float = 10.0
    translate: float = 0.05
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 5.0


def check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    """Validate op names (in order); raises DataError naming an unknown one."""
    for name in ops:
        if name not in OPS:
            raise DataError(f"unknown augmentation '{name}'; choose from {', '.join(OPS)}")
    return tuple(ops)


@dataclass(frozen=True)
class CropSpec:
    """How a decoded image becomes a training sample of side ``image_size``.

    preprocess (the reference's ``--preprocess``):
      resize_and_crop: resize to load_size x load_size, then crop image_size.
      crop: crop image_size at the original resolution.
      scale_width: resize so the width is load_size (height keeps the aspect ratio, at least image_size).
      scale_width_and_crop: scale_width, then crop image_size.
      none: no crop; sides rounded to a multiple of 4 (batch size 1 unless all images agree).
    small: what to do when an image is smaller than the crop: reflect-"pad" or "upscale" (bicubic).
    """

    image_size: int
    preprocess: str = "resize_and_crop"
    load_size: int | None = None
    small: str = "pad"

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS:
            raise DataError(f"unknown preprocess '{self.preprocess}'; choose from {', '.join(PREPROCESS)}")
        if self.small not in SMALL:
            raise DataError(f"unknown small-image policy '{self.small}'; choose from {', '.join(SMALL)}")
        if self.image_size < 1:
            raise DataError(f"image_size must be positive, got {self.image_size}")
        if self.load_size is not None and self.load_size < self.image_size and "crop" in self.preprocess:
            raise DataError(f"load_size {self.load_size} is smaller than image_size {self.image_size}")

    @property
    def load(self) -> int:
        """The resize target: load_size, or image_size * 286 / 256 (the reference's 286 for 256)."""
        return self.load_size if self.load_size is not None else round(self.image_size * 286 / 256)

    @property
    def crops(self) -> bool:
        return "crop" in self.preprocess


def resize_target(height: int, width: int, spec: CropSpec) -> tuple[int, int]:
    """(h, w) an image of ``height`` x ``width`` is resized to before cropping, per ``spec``."""
    if spec.preprocess == "resize_and_crop":
        return spec.load, spec.load
    if spec.preprocess in ("scale_width", "scale_width_and_crop"):
        if width == spec.load and height >= spec.image_size:
            return height, width
        return max(int(spec.load * height / width), spec.image_size), spec.load
    if spec.preprocess == "none":
        return (
            max(NONE_MULTIPLE, round(height / NONE_MULTIPLE) * NONE_MULTIPLE),
            max(NONE_MULTIPLE, round(width / NONE_MULTIPLE) * NONE_MULTIPLE),
        )
    return height, width


def to_channels(pixels: np.ndarray, channels: int | None) -> np.ndarray:
    """(H, W, C) pixels with C converted to ``channels``: 3 repeats gray, 1 takes BT.601 luma."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    c = pixels.shape[2]
    if channels is None or c == channels:
        return pixels
    if channels == 3 and c == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 1 and c == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[..., None]
    raise DataError(f"cannot convert {c} channels to {channels}")


def upscale_to(pixels: np.ndarray, side: int) -> np.ndarray:
    """Enlarge (H, W, C) so its shorter side is at least ``side``, keeping the aspect ratio."""
    h, w = pixels.shape[:2]
    factor = side / min(h, w)
    if factor <= 1:
        return pixels
    return resize_pixels(pixels, (max(side, int(np.ceil(h * factor))), max(side, int(np.ceil(w * factor)))))


def _albu_ops(ops: Sequence[str], params: AugmentParams) -> list[A.BasicTransform]:
    out: list[A.BasicTransform] = []
    for name in ops:
        if name == "hflip":
            out.append(A.HorizontalFlip(p=params.flip_p))
        elif name == "vflip":
            out.append(A.VerticalFlip(p=params.flip_p))
        elif name == "rot90":
            out.append(A.RandomRotate90(p=1.0))
        elif name == "color_jitter":
            out.append(
                A.ColorJitter(
                    brightness=(1 - params.brightness, 1 + params.brightness),
                    contrast=(1 - params.contrast, 1 + params.contrast),
                    saturation=(1 - params.saturation, 1 + params.saturation),
                    hue=(-params.hue, params.hue),
                    p=params.color_p,
                )
            )
        elif name == "affine":
            out.append(
                A.Affine(
                    rotate=(-params.degrees, params.degrees),
                    translate_percent=(-params.translate, params.translate),
                    scale=params.scale,
                    shear=(-params.shear, params.shear),
                    interpolation=cv2.INTER_LINEAR,
                    border_mode=cv2.BORDER_REFLECT_101,
                    p=params.affine_p,
                )
            )
    return out


class CpuStage:
    """Crop (and optionally augment) ``n_images`` images with one set of random parameters.

    ``__call__(images, rng, train)``: ``images`` is a list of (H, W, C) uint8/uint16 arrays of one
    size (after :meth:`prepare`); returns the list cropped to ``image_size`` (random crop when
    ``train``, centre crop otherwise; no crop when ``spec`` is None or does not crop) and, when
    ``train``, passed through the CPU ``ops``. ``same_size=False`` (an LR/HR pair) allows only the
    size-independent ops (flips, rot90, colour). Colour ops on uint16 images run in float32.
    """

    def __init__(
        self,
        spec: CropSpec | None,
        *,
        n_images: int = 1,
        ops: Sequence[str] = (),
        params: AugmentParams | None = None,
        same_size: bool = True,
    ) -> None:
        self.spec = spec
        self.n_images = n_images
        self.ops = check_ops(ops)
        if "rot90" in self.ops and spec is not None and not spec.crops:
            raise DataError("rot90 in the CPU stage needs square crops: use a preprocess that crops")
        if "affine" in self.ops and not same_size:
            raise DataError(
                "affine in the CPU stage needs images of one size (LR/HR files: use the device stage)"
            )
        params = params or AugmentParams()
        self._targets = {f"image{i}": "image" for i in range(1, n_images)}
        self._train: A.Compose | None = None
        self._eval: A.Compose | None = None
        if spec is not None and spec.crops:
            size = spec.image_size
            pad = (
                [A.PadIfNeeded(size, size, border_mode=cv2.BORDER_REFLECT_101)] if spec.small == "pad" else []
            )
            self._train = A.Compose([*pad, A.RandomCrop(size, size)], additional_targets=self._targets)
            self._eval = A.Compose([*pad, A.CenterCrop(size, size)], additional_targets=self._targets)
        self._ops = (
            A.Compose(
                _albu_ops(self.ops, params), additional_targets=self._targets, is_check_shapes=same_size
            )
            if self.ops
            else None
        )

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """The deterministic part for one image: resize by policy, then upscale small images if asked."""
        if self.spec is None:
            return pixels
        h, w = pixels.shape[:2]
        pixels = resize_pixels(pixels, resize_target(h, w, self.spec))
        if self.spec.crops and self.spec.small == "upscale":
            pixels = upscale_to(pixels, self.spec.image_size)
        return pixels

    def _run(self, compose: A.Compose, images: list[np.ndarray], seed: int) -> list[np.ndarray]:
        compose.set_random_seed(seed)
        kwargs = {"image": images[0], **{f"image{i}": im for i, im in enumerate(images[1:], start=1)}}
        out = compose(**kwargs)
        return [out["image"], *(out[f"image{i}"] for i in range(1, len(images)))]

    def __call__(
        self, images: list[np.ndarray], rng: np.random.Generator | None, train: bool
    ) -> list[np.ndarray]:
        if len(images) != self.n_images:
            raise ValueError(f"expected {self.n_images} images, got {len(images)}")
        use_rng = train and rng is not None
        if self._train is not None:
            compose = self._train if use_rng else self._eval
            images = self._run(compose, images, int(rng.integers(2**31)) if use_rng else 0)
        if self._ops is not None and use_rng:
            assert rng is not None
            images = self._apply_ops(images, int(rng.integers(2**31)))
        return images

    def _apply_ops(self, images: list[np.ndarray], seed: int) -> list[np.ndarray]:
        assert self._ops is not None
        if any(im.dtype == np.uint16 for im in images):
            # OpenCV's colour conversions take 8-bit or float images: run 16-bit data in float32.
            floats = [pixels_to_tensor(im, (0.0, 1.0)).permute(1, 2, 0).numpy() for im in images]
            out = self._run(self._ops, floats, seed)
            return [
                tensor_to_pixels(
                    torch.from_numpy(np.ascontiguousarray(o)).permute(2, 0, 1), im.dtype, (0.0, 1.0)
                )
                for o, im in zip(out, images, strict=True)
            ]
        return self._run(self._ops, images, seed)
