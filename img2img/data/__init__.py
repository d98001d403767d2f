"""img2img.data: datasets, the two augmentation stages, SR degradations and dataset tools.

See docs/data.md. The public names:

- :func:`build_dataset`, :func:`has_split`, :class:`PairedDataset`, :class:`UnpairedDataset`,
  :class:`SRDataset` - samples are dicts of float32 (C, H, W) tensors in [0, 1] plus path strings;
- :func:`make_loader`, :class:`ResumableSampler`, :class:`SampleKey` - seeded, resumable loading;
- :class:`CpuStage`, :class:`CropSpec`, :class:`AugmentParams` - the CPU stage (albumentations);
- :class:`DeviceAugment` (Kornia, on the batch's device) and :func:`diff_augment` (DiffAugment);
- :func:`bicubic_downscale`, :func:`degrade_realesrgan`, :func:`degrade` - HR -> LR;
- :class:`DataError`, :class:`BadImageWarning`.
"""

from img2img.data.augment import OPS, PREPROCESS, AugmentParams, CpuStage, CropSpec
from img2img.data.datasets import (
    ImageDataset,
    PairedDataset,
    SRDataset,
    UnpairedDataset,
    build_dataset,
    has_split,
)
from img2img.data.degrade import RealESRGANConfig, bicubic_downscale, degrade, degrade_realesrgan
from img2img.data.device_augment import DeviceAugment
from img2img.data.diffaugment import diff_augment
from img2img.data.errors import BadImageWarning, DataError
from img2img.data.loader import ResumableSampler, SampleKey, make_loader

__all__ = [
    "OPS",
    "PREPROCESS",
    "AugmentParams",
    "BadImageWarning",
    "CpuStage",
    "CropSpec",
    "DataError",
    "DeviceAugment",
    "ImageDataset",
    "PairedDataset",
    "RealESRGANConfig",
    "ResumableSampler",
    "SRDataset",
    "SampleKey",
    "UnpairedDataset",
    "bicubic_downscale",
    "build_dataset",
    "degrade",
    "degrade_realesrgan",
    "diff_augment",
    "has_split",
    "make_loader",
]
