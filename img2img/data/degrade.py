"""Super-resolution degradations: HR tensor in, LR tensor out.

Two models:

- :func:`bicubic_downscale` - the classic SR benchmark degradation: bicubic (a = -0.5, the kernel
  widened by the scale so it antialiases, as PIL and MATLAB's ``imresize`` do).
- :func:`degrade_realesrgan` - a second-order pipeline after Real-ESRGAN (Wang et al. 2021):
  twice (blur -> random resize -> Gaussian/Poisson noise -> JPEG), then a final resize to the LR
  size. Simplified: isotropic and anisotropic Gaussian kernels only (no generalised/plateau/sinc
  kernels). The default ranges are Real-ESRGAN's ``train_realesrgan_x4plus.yml``.
- :func:`degrade_photo` - a first-order mix for PSNR-oriented photo upscalers: a share of clean
  bicubic, the rest optional blur -> downscale -> noise only, JPEG only, or noise then JPEG, with
  low JPEG qualities drawn more often (the bundled real-world models, docs/data.md).

Tensors are float32 in [0, 1], shape (C, H, W) or (B, C, H, W); outputs are clamped to [0, 1] and
rounded to 8-bit levels like LR images stored as files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from img2img.image_io import pixels_to_tensor, tensor_to_pixels

DEGRADATIONS = ("bicubic", "realesrgan", "photo")


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(f"expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    return x, False


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit file."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize (C, H, W) or (B, C, H, W) to ``size`` = (h, w); bicubic/bilinear antialias when shrinking."""
    xb, single = _batched(x)
    if mode == "area":
        out = F.interpolate(xb, size=size, mode="area")
    else:
        out = F.interpolate(xb, size=size, mode=mode, align_corners=False, antialias=True)
    return out[0] if single else out


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR = antialiased bicubic downscale of ``hr`` by ``scale``, 8-bit quantised.

    ``hr``: (C, H, W) or (B, C, H, W) in [0, 1]; H and W must be multiples of ``scale`` so that
    ``lr`` side * scale == ``hr`` side exactly. Returns (..., C, H // scale, W // scale).
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}; crop it first")
    return quantize(resize(hr, (h // scale, w // scale), "bicubic"))


@dataclass(frozen=True)
class RealESRGANConfig:
    """Ranges of the second-order degradation (defaults: Real-ESRGAN x4plus training options).

    Noise sigmas are in 8-bit units (1..30 means 1/255..30/255); resize ranges are factors of the
    current size; probabilities of (up, down, keep) for the random resize.
    """

    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    aniso_prob: float = 0.36  # Real-ESRGAN: iso 0.45 / aniso 0.25 among its Gaussian kernel types
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)
    second_blur_prob: float = 0.8
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    jpeg_range2: tuple[int, int] = (30, 95)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """A normalised (size, size) Gaussian kernel with axes sigma_x, sigma_y rotated by theta radians."""
    r = (size - 1) / 2
    ys, xs = torch.meshgrid(
        torch.linspace(-r, r, size, dtype=torch.float64),
        torch.linspace(-r, r, size, dtype=torch.float64),
        indexing="ij",
    )
    c, s = math.cos(theta), math.sin(theta)
    u = c * xs + s * ys  # coordinates along the kernel's own axes
    v = -s * xs + c * ys
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).float()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of (B, C, H, W) ``x`` with ``kernel`` (k, k), reflect padding."""
    c = x.shape[1]
    pad = kernel.shape[-1] // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    weight = kernel.to(x).expand(c, 1, *kernel.shape)
    return F.conv2d(xp, weight, groups=c)


def _random_kernel(
    rng: np.random.Generator, cfg: RealESRGANConfig, sigma: tuple[float, float]
) -> torch.Tensor:
    size = int(rng.choice(cfg.kernel_sizes))
    if rng.random() < cfg.aniso_prob:
        sx, sy = rng.uniform(*sigma), rng.uniform(*sigma)
        theta = rng.uniform(-math.pi, math.pi)
    else:
        sx = sy = rng.uniform(*sigma)
        theta = 0.0
    return gaussian_kernel(size, sx, sy, theta)


def _random_resize(
    x: torch.Tensor,
    rng: np.random.Generator,
    probs: tuple[float, float, float],
    factor_range: tuple[float, float],
    base: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resize to ``base`` (default: the current size) times a random up/down/keep factor."""
    kind = rng.choice(3, p=np.asarray(probs) / sum(probs))
    if kind == 0:
        factor = rng.uniform(1.0, factor_range[1])
    elif kind == 1:
        factor = rng.uniform(factor_range[0], 1.0)
    else:
        factor = 1.0
    h, w = base or x.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == tuple(x.shape[-2:]):
        return x
    return resize(x, size, str(rng.choice(["area", "bilinear", "bicubic"])))


def _noise(
    x: torch.Tensor,
    rng: np.random.Generator,
    g: torch.Generator,
    cfg: RealESRGANConfig,
    sigma_range: tuple[float, float],
    poisson_range: tuple[float, float],
) -> torch.Tensor:
    gray = rng.random() < cfg.gray_noise_prob
    shape = (x.shape[0], 1, *x.shape[2:]) if gray else x.shape
    if rng.random() < cfg.gaussian_noise_prob:
        sigma = rng.uniform(*sigma_range) / 255.0
        noise = torch.randn(shape, generator=g) * sigma
    else:
        # Shot noise of an 8-bit sensor: Poisson counts at 255 levels, scaled by a random strength.
        src = x.mean(dim=1, keepdim=True) if gray else x
        src = src.clamp(0, 1)
        noise = (torch.poisson(src * 255.0, generator=g) / 255.0 - src) * rng.uniform(*poisson_range)
    return (x + noise).clamp(0.0, 1.0)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress each image of (B, C, H, W) ``x`` in [0, 1] at ``quality`` (OpenCV codec)."""
    out = []
    for img in x:
        pixels = tensor_to_pixels(img, np.uint8, (0.0, 1.0))
        if pixels.ndim == 3 and pixels.shape[2] == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # the codec's colour transform expects BGR
        ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a degradation step")
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if dec.ndim == 3:
            dec = cv2.cvtColor(dec, cv2.COLOR_BGR2RGB)
        else:
            dec = dec[..., None]
        out.append(pixels_to_tensor(dec, (0.0, 1.0)))
    return torch.stack(out).to(x)


def degrade_realesrgan(
    hr: torch.Tensor, scale: int, rng: np.random.Generator, config: RealESRGANConfig | None = None
) -> torch.Tensor:
    """A random second-order degradation of ``hr`` down to 1/scale of its size.

    ``hr``: (C, H, W) or (B, C, H, W) float32 in [0, 1] on the CPU, H and W multiples of ``scale``.
    Returns LR (..., C, H // scale, W // scale), 8-bit quantised. Every random choice comes from
    ``rng``, so one seed gives one degradation.
    """
    cfg = config or RealESRGANConfig()
    xb, single = _batched(hr)
    h, w = xb.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}; crop it first")
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    x = xb.float()
    # First order.
    x = blur(x, _random_kernel(rng, cfg, cfg.blur_sigma))
    x = _random_resize(x, rng, cfg.resize_prob, cfg.resize_range)
    x = _noise(x, rng, g, cfg, cfg.noise_range, cfg.poisson_scale_range)
    x = jpeg(x, int(rng.integers(cfg.jpeg_range[0], cfg.jpeg_range[1] + 1)))
    # Second order, relative to the LR target size as in Real-ESRGAN.
    if rng.random() < cfg.second_blur_prob:
        x = blur(x, _random_kernel(rng, cfg, cfg.blur_sigma2))
    target = (h // scale, w // scale)
    x = _random_resize(x, rng, cfg.resize_prob2, cfg.resize_range2, base=target)
    x = _noise(x, rng, g, cfg, cfg.noise_range2, cfg.poisson_scale_range2)
    quality = int(rng.integers(cfg.jpeg_range2[0], cfg.jpeg_range2[1] + 1))
    mode = str(rng.choice(["area", "bilinear", "bicubic"]))
    if rng.random() < 0.5:  # final resize and JPEG in either order, as in Real-ESRGAN
        x = jpeg(resize(x, target, mode), quality)
    else:
        x = resize(jpeg(x, quality), target, mode)
    x = quantize(x)
    return x[0] if single else x


@dataclass(frozen=True)
class PhotoDegradationConfig:
    """Ranges of :func:`degrade_photo`. Noise sigmas are in 8-bit units.

    clean_prob: share of plain :func:`bicubic_downscale` (the model must stay good on clean input).
    branch_probs: (noise only, JPEG only, noise then JPEG) for the rest.
    jpeg_range, jpeg_power: quality = low + (high - low) * u ** power, u uniform in [0, 1]; a power
        above 1 draws low qualities more often (power 2: about half the draws below q 50 for 30-95).
    blur_prob, blur_sigma: an optional Gaussian blur of the HR crop before downscaling, sigma in HR
        pixels for scale 4 (scaled by scale / 4), anisotropic with ``aniso_prob``.
    resize_modes, resize_probs: the downscaling kernel (all antialiased).
    gaussian_prob: Gaussian (else Poisson, shot noise) when noise is added; gray_noise_prob: the same
        noise in all channels.
    """

    clean_prob: float = 0.3
    branch_probs: tuple[float, float, float] = (0.35, 0.35, 0.3)
    noise_range: tuple[float, float] = (1.0, 20.0)
    poisson_scale_range: tuple[float, float] = (0.05, 2.5)
    gaussian_prob: float = 0.7
    gray_noise_prob: float = 0.3
    jpeg_range: tuple[int, int] = (30, 95)
    jpeg_power: float = 2.0
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.2, 2.0)
    aniso_prob: float = 0.3
    kernel_size: int = 13
    resize_modes: tuple[str, ...] = ("bicubic", "bilinear", "area")
    resize_probs: tuple[float, float, float] = (0.6, 0.2, 0.2)


def _photo_noise(x: torch.Tensor, rng: np.random.Generator, g: torch.Generator, cfg: PhotoDegradationConfig) -> torch.Tensor:
    gray = rng.random() < cfg.gray_noise_prob
    shape = (x.shape[0], 1, *x.shape[2:]) if gray else x.shape
    if rng.random() < cfg.gaussian_prob:
        return (x + torch.randn(shape, generator=g) * (rng.uniform(*cfg.noise_range) / 255.0)).clamp(0.0, 1.0)
    src = (x.mean(dim=1, keepdim=True) if gray else x).clamp(0, 1)
    noise = (torch.poisson(src * 255.0, generator=g) / 255.0 - src) * rng.uniform(*cfg.poisson_scale_range)
    return (x + noise).clamp(0.0, 1.0)


def degrade_photo(
    hr: torch.Tensor, scale: int, rng: np.random.Generator, config: PhotoDegradationConfig | None = None
) -> torch.Tensor:
    """A random first-order degradation of ``hr`` for photo upscalers (see PhotoDegradationConfig).

    ``hr``: (C, H, W) or (B, C, H, W) float32 in [0, 1] on the CPU, H and W multiples of ``scale``
    (a batch gets one draw). Returns LR (..., C, H // scale, W // scale), 8-bit quantised, every
    random choice from ``rng``.
    """
    cfg = config or PhotoDegradationConfig()
    xb, single = _batched(hr)
    h, w = xb.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale {scale}; crop it first")
    if rng.random() < cfg.clean_prob:
        x = bicubic_downscale(xb.float(), scale)
        return x[0] if single else x
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    x = xb.float()
    if rng.random() < cfg.blur_prob:
        sigma = tuple(s * scale / 4 for s in cfg.blur_sigma)
        if rng.random() < cfg.aniso_prob:
            sx, sy, theta = rng.uniform(*sigma), rng.uniform(*sigma), rng.uniform(-math.pi, math.pi)
        else:
            sx = sy = rng.uniform(*sigma)
            theta = 0.0
        x = blur(x, gaussian_kernel(cfg.kernel_size, sx, sy, theta))
    mode = str(rng.choice(list(cfg.resize_modes), p=np.asarray(cfg.resize_probs) / sum(cfg.resize_probs)))
    x = quantize(resize(x, (h // scale, w // scale), mode))
    branch = rng.choice(3, p=np.asarray(cfg.branch_probs) / sum(cfg.branch_probs))
    if branch in (0, 2):
        x = _photo_noise(x, rng, g, cfg)
    if branch in (1, 2):
        low, high = cfg.jpeg_range
        x = jpeg(x, round(low + (high - low) * rng.random() ** cfg.jpeg_power))
    x = quantize(x)
    return x[0] if single else x


def degrade(hr: torch.Tensor, scale: int, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """LR from HR by name: ``"bicubic"``, ``"realesrgan"`` or ``"photo"`` (shapes as in those functions)."""
    if kind == "bicubic":
        return bicubic_downscale(hr, scale)
    if kind == "realesrgan":
        return degrade_realesrgan(hr, scale, rng)
    if kind == "photo":
        return degrade_photo(hr, scale, rng)
    raise ValueError(f"unknown degradation '{kind}'; choose from {', '.join(DEGRADATIONS)}")
