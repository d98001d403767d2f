"""Paired, unpaired and super-resolution datasets, and the :func:`build_dataset` factory.

Every sample is a dict of float32 tensors in [0, 1], shape (C, H, W), plus path strings:

- paired:   ``a``, ``b`` (same H, W), ``path_a``, ``path_b``
- unpaired: ``a``, ``b`` (independent draws), ``path_a``, ``path_b``
- sr:       ``lr`` (C, s / scale, s / scale), ``hr`` (C, s, s), ``path_lr``, ``path_hr``

Unreadable files are skipped: a :class:`BadImageWarning` names the file, the sample is taken from
the next readable entry, and the entry is remembered as bad (shared with worker processes, so
:meth:`ImageDataset.bad_entries` counts them all). Only when no entry is readable does loading stop
with a DataError.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from img2img.data.augment import AugmentParams, CpuStage, CropSpec, to_channels
from img2img.data.degrade import DEGRADATIONS, degrade
from img2img.data.errors import BadImageWarning, DataError
from img2img.data.files import list_images, match_by_stem
from img2img.data.loader import SampleKey
from img2img.image_io import ImageIOError, pixels_to_tensor, read_image

KINDS = ("paired", "unpaired", "sr")
T = TypeVar("T")


class _Entries:
    """A list of file entries (one path or a pair) with shared 'bad' flags."""

    def __init__(self, entries: Sequence[tuple[Path, ...]], folder: Path) -> None:
        self.entries = list(entries)
        self.folder = folder
        # A shared-memory tensor, so flags set in a worker process are seen by the main process.
        self.bad = torch.zeros(len(self.entries), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.entries)

    def first_good(self, start: int, load: Callable[[int], T]) -> T:
        """``load(i)`` for the first entry from ``start`` on (cyclically) that loads without error."""
        n = len(self.entries)
        first_error: Exception | None = None
        for step in range(n):
            i = (start + step) % n
            if self.bad[i]:
                continue
            try:
                return load(i)
            except (ImageIOError, DataError) as e:
                first_error = first_error or e
                if not self.bad[i]:
                    self.bad[i] = 1
                    count = int(self.bad.sum())
                    warnings.warn(
                        f"{e}; skipped ({count} of {n} unreadable so far)", BadImageWarning, stacklevel=2
                    )
        detail = f" (e.g. {first_error})" if first_error else ""
        raise DataError(f"{self.folder}: none of the {n} images could be read{detail}")

    def bad_entries(self) -> list[str]:
        return [str(self.entries[i][0]) for i in range(len(self.entries)) if self.bad[i]]


class ImageDataset(Dataset):
    """Shared machinery: the sample key -> RNG rule, reading, tensors, bad-file bookkeeping."""

    def __init__(self, root: Path, *, seed: int, train: bool, max_pixels: int | None) -> None:
        self.root = root
        self.seed = seed
        self.train = train
        self.max_pixels = max_pixels
        self._lists: list[_Entries] = []

    def _rng(self, key: SampleKey | int) -> tuple[int, np.random.Generator]:
        """(index, RNG for this sample). A SampleKey gives a reproducible RNG per (seed, epoch, index).

        A bare int (from a foreign sampler) has no epoch, so its RNG also takes a draw from the
        worker's Python RNG: crops vary between epochs, reproducibly for a fixed worker count.
        """
        if isinstance(key, SampleKey):
            return key.index, np.random.default_rng([self.seed, key.seed, key.epoch, key.index])
        index = int(key)
        return index, np.random.default_rng([self.seed, index, random.getrandbits(63)])

    def _read(self, path: Path, channels: int | None) -> np.ndarray:
        kwargs = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
        image = read_image(path, **kwargs)
        return to_channels(image.pixels, channels)

    @staticmethod
    def _tensor(pixels: np.ndarray) -> torch.Tensor:
        return pixels_to_tensor(np.ascontiguousarray(pixels), (0.0, 1.0))

    def bad_entries(self) -> list[str]:
        """Files skipped so far as unreadable (in this process and its DataLoader workers)."""
        return [p for lst in self._lists for p in lst.bad_entries()]


class PairedDataset(ImageDataset):
    """Aligned pairs: ``root/split/*`` (A|B side by side) or ``root/{split}A`` + ``root/{split}B`` by stem.

    A side-by-side image of width w gives A = columns [0, w//2), B = [w//2, 2*(w//2)). Both images
    of a pair get the same resize and crop (and CPU ops). Which side is the input is the
    training method's choice (pix2pix ``direction``), not the dataset's.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        train: bool = True,
        spec: CropSpec,
        channels_a: int | None = 3,
        channels_b: int | None = 3,
        cpu_augment: Sequence[str] = (),
        params: AugmentParams | None = None,
        seed: int = 0,
        max_pixels: int | None = None,
    ) -> None:
        root = Path(root)
        super().__init__(root, seed=seed, train=train, max_pixels=max_pixels)
        self.channels = (channels_a, channels_b)
        ab_dir, a_dir, b_dir = root / split, root / f"{split}A", root / f"{split}B"
        if ab_dir.is_dir():
            self.side_by_side = True
            self.items = _Entries([(p,) for p in list_images(ab_dir)], ab_dir)
        elif a_dir.is_dir() and b_dir.is_dir():
            self.side_by_side = False
            self.items = _Entries(match_by_stem(list_images(a_dir), list_images(b_dir)), a_dir)
        else:
            raise DataError(
                f"{root}: no paired data for split '{split}' (expected {ab_dir} or {a_dir} + {b_dir})"
            )
        self._lists = [self.items]
        self.stage = CpuStage(spec, n_images=2, ops=cpu_augment, params=params)

    def __len__(self) -> int:
        return len(self.items)

    def _load_pair(self, i: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        entry = self.items.entries[i]
        if self.side_by_side:
            pixels = self._read(entry[0], None)
            half = pixels.shape[1] // 2
            if half < 1:
                raise DataError(f"{entry[0]}: too narrow to hold A and B side by side")
            a = to_channels(pixels[:, :half], self.channels[0])
            b = to_channels(pixels[:, half : 2 * half], self.channels[1])
            pa = pb = str(entry[0])
        else:
            a = self._read(entry[0], self.channels[0])
            b = self._read(entry[1], self.channels[1])
            pa, pb = str(entry[0]), str(entry[1])
        a, b = self.stage.prepare(a), self.stage.prepare(b)
        if a.shape[:2] != b.shape[:2]:
            raise DataError(
                f"{pb}: {b.shape[0]}x{b.shape[1]} does not match its partner {pa} ({a.shape[0]}x{a.shape[1]}) "
                "after resizing; pairs must be aligned images of one size (or use preprocess=resize_and_crop)"
            )
        return a, b, pa, pb

    def __getitem__(self, key: SampleKey | int) -> dict[str, Any]:
        index, rng = self._rng(key)
        a, b, pa, pb = self.items.first_good(index, self._load_pair)
        a, b = self.stage([a, b], rng, self.train)
        return {"a": self._tensor(a), "b": self._tensor(b), "path_a": pa, "path_b": pb}


class UnpairedDataset(ImageDataset):
    """Two domains ``root/{split}A`` and ``root/{split}B`` of any lengths, sampled independently.

    Length is the longer domain's; sample i takes A[i mod len(A)] and, when training, a B image
    drawn at random from the sample's RNG (the reference's non-serial batches), else B[i mod len(B)].
    Each image gets its own crop and CPU ops.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        train: bool = True,
        spec: CropSpec,
        channels_a: int | None = 3,
        channels_b: int | None = 3,
        cpu_augment: Sequence[str] = (),
        params: AugmentParams | None = None,
        seed: int = 0,
        max_pixels: int | None = None,
    ) -> None:
        root = Path(root)
        super().__init__(root, seed=seed, train=train, max_pixels=max_pixels)
        a_dir, b_dir = root / f"{split}A", root / f"{split}B"
        if not (a_dir.is_dir() and b_dir.is_dir()):
            raise DataError(f"{root}: no unpaired data for split '{split}' (expected {a_dir} and {b_dir})")
        self.channels = (channels_a, channels_b)
        self.a = _Entries([(p,) for p in list_images(a_dir)], a_dir)
        self.b = _Entries([(p,) for p in list_images(b_dir)], b_dir)
        self._lists = [self.a, self.b]
        self.stage = CpuStage(spec, n_images=1, ops=cpu_augment, params=params)

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def _loader(self, entries: _Entries, channels: int | None) -> Callable[[int], tuple[np.ndarray, str]]:
        def load(i: int) -> tuple[np.ndarray, str]:
            path = entries.entries[i][0]
            return self.stage.prepare(self._read(path, channels)), str(path)

        return load

    def __getitem__(self, key: SampleKey | int) -> dict[str, Any]:
        index, rng = self._rng(key)
        b_index = int(rng.integers(len(self.b))) if self.train else index % len(self.b)
        a, pa = self.a.first_good(index % len(self.a), self._loader(self.a, self.channels[0]))
        b, pb = self.b.first_good(b_index, self._loader(self.b, self.channels[1]))
        (a,) = self.stage([a], rng, self.train)
        (b,) = self.stage([b], rng, self.train)
        return {"a": self._tensor(a), "b": self._tensor(b), "path_a": pa, "path_b": pb}


def _sr_folders(root: Path, split: str, scale: int, lr_dir: str | Path | None) -> tuple[Path, Path | None]:
    base = root / split if (root / split).is_dir() else root
    if base is root and split != "train":
        raise DataError(f"{root}: no '{split}' folder")
    hr_dir = base / "hr" if (base / "hr").is_dir() else base
    if lr_dir is not None:
        return hr_dir, Path(lr_dir)
    lr = base / f"lr_x{scale}"
    return hr_dir, lr if lr.is_dir() else None


class SRDataset(ImageDataset):
    """Super-resolution samples: HR crops of side ``image_size`` and LR crops of ``image_size // scale``.

    Layouts (``base`` = ``root/split`` when it exists, else ``root`` for the train split):
    ``base/hr/`` or ``base/`` itself holds the HR images; LR is made on the fly by ``degradation``
    unless ``base/lr_x{scale}/`` (or ``lr_dir``) holds LR files matched by stem (a DIV2K-style
    ``x4`` suffix on LR stems is ignored). With LR files, each HR must be ``scale`` times its LR
    (an HR up to ``scale - 1`` pixels larger is cut, as SR benchmarks' "mod crop"), and the crops are
    taken at LR position (y, x) and HR position (y * scale, x * scale), so LR crop * scale == HR crop.
    Small images are reflect-padded (LR/HR files) or handled by ``spec.small`` (HR only).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        train: bool = True,
        spec: CropSpec,
        scale: int = 4,
        degradation: str = "bicubic",
        lr_dir: str | Path | None = None,
        channels: int | None = 3,
        cpu_augment: Sequence[str] = (),
        params: AugmentParams | None = None,
        seed: int = 0,
        max_pixels: int | None = None,
    ) -> None:
        root = Path(root)
        super().__init__(root, seed=seed, train=train, max_pixels=max_pixels)
        if scale < 1:
            raise DataError(f"scale must be a positive integer, got {scale}")
        if spec.preprocess != "crop":
            raise DataError(
                f"super-resolution data is cropped, not resized: preprocess must be 'crop', got '{spec.preprocess}'"
            )
        if spec.image_size % scale:
            raise DataError(f"image_size (HR crop) {spec.image_size} is not a multiple of scale {scale}")
        if degradation not in DEGRADATIONS:
            raise DataError(f"unknown degradation '{degradation}'; choose from {', '.join(DEGRADATIONS)}")
        self.scale = scale
        self.degradation = degradation
        self.channels = channels
        self.spec = spec
        hr_dir, lr_folder = _sr_folders(root, split, scale, lr_dir)
        hr_files = list_images(hr_dir)
        if lr_folder is not None:
            pairs = match_by_stem(hr_files, list_images(lr_folder), b_strip_scale=scale)
            self.items = _Entries(pairs, hr_dir)
            self.stage = CpuStage(None, n_images=2, ops=cpu_augment, params=params, same_size=False)
        else:
            self.items = _Entries([(p,) for p in hr_files], hr_dir)
            self.stage = CpuStage(spec, n_images=1, ops=cpu_augment, params=params)
        self._lists = [self.items]

    @property
    def has_lr_files(self) -> bool:
        return len(self.items.entries[0]) == 2

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray | None, str, str]:
        """(HR pixels, LR pixels or None, HR path, LR path: the HR path when LR is made on the fly)."""
        entry = self.items.entries[i]
        hr = self.stage.prepare(self._read(entry[0], self.channels))
        if len(entry) == 1:
            return hr, None, str(entry[0]), str(entry[0])
        lr = self._read(entry[1], self.channels)
        (lh, lw), s = lr.shape[:2], self.scale
        if not (lh * s <= hr.shape[0] < (lh + 1) * s and lw * s <= hr.shape[1] < (lw + 1) * s):
            raise DataError(
                f"{entry[1]}: LR {lh}x{lw} times scale {s} does not match HR {entry[0]} ({hr.shape[0]}x{hr.shape[1]})"
            )
        return hr[: lh * s, : lw * s], lr, str(entry[0]), str(entry[1])

    def _crop_pair(
        self, hr: np.ndarray, lr: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        s, size = self.scale, self.spec.image_size // self.scale
        lh, lw = lr.shape[:2]
        if lh < size or lw < size:
            ph, pw = max(0, size - lh), max(0, size - lw)
            # BORDER_REFLECT mirrors whole pixels, so padding LR by p and HR by p * scale stays aligned.
            lr = _pad(lr, ph, pw)
            hr = _pad(hr, ph * s, pw * s)
            lh, lw = lr.shape[:2]
        if self.train:
            y, x = int(rng.integers(lh - size + 1)), int(rng.integers(lw - size + 1))
        else:
            y, x = (lh - size) // 2, (lw - size) // 2
        return hr[y * s : (y + size) * s, x * s : (x + size) * s], lr[y : y + size, x : x + size]

    def __getitem__(self, key: SampleKey | int) -> dict[str, Any]:
        index, rng = self._rng(key)
        if not self.train:
            # Evaluation is deterministic, including a random degradation model: one draw per image.
            rng = np.random.default_rng([self.seed, index])
        hr, lr, path_hr, path_lr = self.items.first_good(index, self._load)
        if lr is None:
            (hr,) = self.stage([hr], rng, self.train)
            hr_t = self._tensor(hr)
            lr_t = degrade(hr_t, self.scale, self.degradation, rng)
        else:
            hr, lr = self._crop_pair(hr, lr, rng)
            hr, lr = self.stage([hr, lr], rng, self.train)
            hr_t, lr_t = self._tensor(hr), self._tensor(lr)
        return {"lr": lr_t, "hr": hr_t, "path_lr": path_lr, "path_hr": path_hr}


def _pad(pixels: np.ndarray, ph: int, pw: int) -> np.ndarray:
    out = cv2.copyMakeBorder(pixels, 0, ph, 0, pw, cv2.BORDER_REFLECT)
    return out[..., None] if out.ndim == 2 else out


def has_split(root: str | Path, split: str) -> bool:
    """True when ``root`` has data for ``split`` in any layout (``root/split`` or ``root/{split}A``)."""
    root = Path(root)
    return (root / split).is_dir() or (root / f"{split}A").is_dir()


def build_dataset(
    kind: str,
    root: str | Path,
    *,
    split: str = "train",
    train: bool | None = None,
    image_size: int,
    scale: int = 4,
    preprocess: str | None = None,
    load_size: int | None = None,
    small: str = "pad",
    channels: int | None = 3,
    channels_a: int | None = None,
    channels_b: int | None = None,
    cpu_augment: Sequence[str] = (),
    params: AugmentParams | None = None,
    degradation: str = "bicubic",
    lr_dir: str | Path | None = None,
    seed: int = 0,
    max_pixels: int | None = None,
) -> ImageDataset:
    """The dataset of ``kind`` (``"paired"``, ``"unpaired"``, ``"sr"``) under ``root`` (see docs/data.md).

    ``train=None`` means ``split == "train"``: random crops and CPU ops; otherwise centre crops.
    ``preprocess=None`` means ``resize_and_crop`` (paired/unpaired) or ``crop`` (sr).
    ``channels_a``/``channels_b`` default to ``channels``. Raises DataError for a bad layout or option.
    """
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind '{kind}'; choose from {', '.join(KINDS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    train = split == "train" if train is None else train
    if preprocess is None:
        preprocess = "crop" if kind == "sr" else "resize_and_crop"
    spec = CropSpec(image_size=image_size, preprocess=preprocess, load_size=load_size, small=small)
    ca = channels if channels_a is None else channels_a
    cb = channels if channels_b is None else channels_b
    common: dict[str, Any] = dict(
        split=split,
        train=train,
        spec=spec,
        cpu_augment=cpu_augment,
        params=params,
        seed=seed,
        max_pixels=max_pixels,
    )
    if kind == "paired":
        return PairedDataset(root, channels_a=ca, channels_b=cb, **common)
    if kind == "unpaired":
        return UnpairedDataset(root, channels_a=ca, channels_b=cb, **common)
    return SRDataset(root, scale=scale, degradation=degradation, lr_dir=lr_dir, channels=channels, **common)
