"""Image quality metrics as pure tensor functions: PSNR, SSIM, L1 (RGB or Y), optional LPIPS.

Every function takes ``pred`` and ``target`` of shape (B, C, H, W), float, values in [0, 1] (any
device), and returns one value per image, shape (B,). The super-resolution convention of BasicSR
(and the SR papers) is ``y_channel=True, crop=scale``: PSNR/SSIM on the Y channel of studio-range
YCbCr (ITU-R BT.601), ``scale`` pixels cropped from every border. Used by validation during
training and by ``img2img eval``.
"""

from __future__ import annotations

import importlib.util

import kornia
import torch

# BT.601 studio-range luma from RGB in [0, 1]: Y = 16 + 65.481 R + 128.553 G + 24.966 B, in [16, 235].
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0

SSIM_WINDOW = 11  # Gaussian window of sigma 1.5 (Wang et al. 2004), valid region only


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Y of studio-range YCbCr (BT.601) of RGB ``x`` (B, 3, H, W) in [0, 1].

    Returns (B, 1, H, W) scaled to [0, 1] by 255, i.e. in [16/255, 235/255]; a 1-channel input is
    returned unchanged (already luminance).
    """
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y needs 1 or 3 channels, got shape {tuple(x.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x * w).sum(dim=1, keepdim=True) + _Y_OFFSET) / 255.0


def _prepare(pred: torch.Tensor, target: torch.Tensor, crop: int, y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got shape {tuple(pred.shape)}")
    pred, target = pred.float(), target.float()
    if crop > 0:
        if pred.shape[-1] <= 2 * crop or pred.shape[-2] <= 2 * crop:
            raise ValueError(f"border crop {crop} leaves nothing of a {pred.shape[-2]}x{pred.shape[-1]} image")
        pred = pred[..., crop:-crop, crop:-crop]
        target = target[..., crop:-crop, crop:-crop]
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return pred, target


def mse(pred: torch.Tensor, target: torch.Tensor, *, crop: int = 0, y_channel: bool = False) -> torch.Tensor:
    """Mean squared error per image, shape (B,)."""
    pred, target = _prepare(pred, target, crop, y_channel)
    return (pred - target).pow(2).flatten(1).mean(dim=1)


def psnr(pred: torch.Tensor, target: torch.Tensor, *, crop: int = 0, y_channel: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, shape (B,): ``10 log10(1 / MSE)``.

    Identical images give ``inf`` (callers that average should say so, not cap silently).
    """
    err = mse(pred, target, crop=crop, y_channel=y_channel)
    return 10.0 * torch.log10(1.0 / err)


def ssim(pred: torch.Tensor, target: torch.Tensor, *, crop: int = 0, y_channel: bool = False) -> torch.Tensor:
    """Structural similarity per image, shape (B,), in [-1, 1]; 1 for identical images.

    Gaussian window 11x11, sigma 1.5, constants K1=0.01, K2=0.03 for data range 1, mean of the map
    over the valid region and over channels (as scikit-image with ``gaussian_weights=True``).
    Images need sides of at least 11 pixels after cropping.
    """
    pred, target = _prepare(pred, target, crop, y_channel)
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs sides >= {SSIM_WINDOW} px, got {pred.shape[-2]}x{pred.shape[-1]}")
    ssim_map = kornia.metrics.ssim(pred, target, SSIM_WINDOW, max_val=1.0, eps=0.0, padding="valid")
    return ssim_map.flatten(1).mean(dim=1)


def l1(pred: torch.Tensor, target: torch.Tensor, *, crop: int = 0, y_channel: bool = False) -> torch.Tensor:
    """Mean absolute error per image, shape (B,), in [0, 1]."""
    pred, target = _prepare(pred, target, crop, y_channel)
    return (pred - target).abs().flatten(1).mean(dim=1)


def image_metrics(
    pred: torch.Tensor, target: torch.Tensor, *, crop: int = 0, y_channel: bool = False
) -> dict[str, torch.Tensor]:
    """PSNR, SSIM and L1 per image (each (B,)) with one convention; SSIM omitted below 11 px."""
    out = {
        "psnr": psnr(pred, target, crop=crop, y_channel=y_channel),
        "l1": l1(pred, target, crop=crop, y_channel=y_channel),
    }
    side = min(pred.shape[-2:]) - 2 * max(crop, 0)
    if side >= SSIM_WINDOW:
        out["ssim"] = ssim(pred, target, crop=crop, y_channel=y_channel)
    return out


def lpips_available() -> tuple[bool, str]:
    """Whether LPIPS can be computed here, and a note saying why not when it cannot."""
    if importlib.util.find_spec("lpips") is None:
        return False, "LPIPS skipped: the 'lpips' package is not installed (pip install lpips)"
    return True, ""


class LPIPS:
    """LPIPS distance (Zhang et al. 2018) through the ``lpips`` package, AlexNet variant.

    Call with ``pred``, ``target`` (B, 3, H, W) in [0, 1]; returns (B,). Building it raises
    RuntimeError with a one-line reason when the package or its backbone weights are unavailable.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        ok, note = lpips_available()
        if not ok:
            raise RuntimeError(note)
        import lpips  # optional dependency

        try:
            self.net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
        except Exception as e:  # weights download fails offline: report, do not hide
            raise RuntimeError(f"LPIPS skipped: cannot load its weights ({type(e).__name__}: {e})") from None

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(pred * 2 - 1, target * 2 - 1).flatten()

