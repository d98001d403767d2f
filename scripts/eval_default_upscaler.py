"""Held-out PSNR/SSIM of an upscaler against bicubic, and its CPU speed.

    python scripts/eval_default_upscaler.py MODEL --scale 4 [--photos DIR ...] [--threads 2] [--speed] [--json CARD]
    python scripts/eval_default_upscaler.py MODEL --scale 4 --conditions clean,jpeg,noise [--denoise S] ...

With ``--conditions`` (the real-world protocol of issue 16): LR = the HR photo reduced by PIL's
antialiased bicubic (``Image.resize``), then per condition: ``clean`` as is, ``jpeg`` saved as JPEG
quality 50 (PIL) and read back, ``noise`` plus Gaussian noise of sigma 10 (8-bit units, seeded per
photo), rounded to 8 bits. The gain is PSNR-Y of ours minus PSNR-Y of PIL's bicubic upscaling of
the same LR (BT.601, border ``scale``). ``--denoise S`` loads the model at that denoise strength
(``default``: its card's); ``--json CARD`` then adds the figures to CARD under
``real_world["denoise=S"]``, keeping the rest. Without ``--conditions``, the older protocol below:

MODEL is a bundled name (img2img-sr-x4), a .safetensors file or a run directory. For each photo
(default: the held-out skimage photos written by scripts/default_upscaler_data.py into DIR/val):
HR = the photo cropped to a multiple of the scale; LR = the training degradation (antialiased
bicubic, 8-bit, img2img.data.degrade.bicubic_downscale); two bicubic baselines: PIL's upscale
(a = -0.5, MATLAB's kernel) and torch's (a = -0.75, the kernel that made the LR, slightly better
here); the gain is measured against the better of the two per photo; ours = the model through the
tiled engine. Outputs are
rounded to 8 bits, then PSNR/SSIM on Y (BT.601 studio range) with a border crop of ``scale``
(img2img.metrics, the BasicSR convention). Prints a Markdown table per photo folder; ``--json``
also writes the figures as data (the model card's ``.json`` beside its ``.md``).
"""

from __future__ import annotations

import argparse
import io
import json
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from img2img import metrics
from img2img.checkpoints import load_model
from img2img.data.degrade import bicubic_downscale
from img2img.inference.engine import Engine


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def _to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8))


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def evaluate(model_source: str, *, scale: int, photos: list[Path]) -> list[dict[str, float | str]]:
    model = load_model(model_source, device="cpu")
    if model.scale != scale:
        raise SystemExit(f"{model_source}: the model upscales x{model.scale}, not x{scale}")
    engine = Engine(model, tile=0, device="cpu")
    rows: list[dict[str, float | str]] = []
    for path in photos:
        hr = _to_tensor(Image.open(path))
        h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
        hr = hr[..., :h, :w]
        lr = bicubic_downscale(hr, scale)
        bicubic_pil = _to_tensor(_to_pil(lr).resize((w, h), Image.Resampling.BICUBIC))
        bicubic_torch = _quantize(F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False))
        with torch.no_grad():
            ours = _quantize(engine.run_tensor(lr))
        row: dict[str, float | str] = {"photo": path.stem, "size": f"{w}x{h}"}
        for name, pred in (("pil", bicubic_pil), ("bicubic", bicubic_torch), ("ours", ours)):
            row[f"psnr_{name}"] = float(metrics.psnr(pred, hr, crop=scale, y_channel=True)[0])
            row[f"ssim_{name}"] = float(metrics.ssim(pred, hr, crop=scale, y_channel=True)[0])
        rows.append(row)
    return rows


CONDITIONS = ("clean", "jpeg", "noise")
JPEG_QUALITY = 50
NOISE_SIGMA = 10.0


def degraded_lr(hr: Image.Image, scale: int, condition: str, seed: int) -> Image.Image:
    """The LR of ``condition`` from an RGB HR whose sides are multiples of ``scale``."""
    lr = hr.resize((hr.width // scale, hr.height // scale), Image.Resampling.BICUBIC)
    if condition == "jpeg":
        buffer = io.BytesIO()
        lr.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if condition == "noise":
        pixels = np.asarray(lr, dtype=np.float64)
        noisy = pixels + np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, pixels.shape)
        return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
    if condition != "clean":
        raise SystemExit(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    return lr


def evaluate_conditions(
    model_source: str, *, scale: int, photos: list[Path], conditions: list[str], denoise: float | str | None
) -> dict[str, list[dict[str, float | str]]]:
    """Per condition, one row per photo: PSNR-Y of PIL bicubic and of ours, and the gain."""
    model = load_model(model_source, device="cpu", denoise=denoise)
    if model.scale != scale:
        raise SystemExit(f"{model_source}: the model upscales x{model.scale}, not x{scale}")
    engine = Engine(model, tile=0, device="cpu")
    out: dict[str, list[dict[str, float | str]]] = {c: [] for c in conditions}
    for path in photos:
        image = Image.open(path).convert("RGB")
        w, h = (image.width // scale) * scale, (image.height // scale) * scale
        hr_image = image.crop((0, 0, w, h))
        hr = _to_tensor(hr_image)
        for condition in conditions:
            lr = degraded_lr(hr_image, scale, condition, seed=zlib.crc32(path.stem.encode()))
            bicubic = _to_tensor(lr.resize((w, h), Image.Resampling.BICUBIC))
            with torch.no_grad():
                ours = _quantize(engine.run_tensor(_to_tensor(lr)))
            p_bic = float(metrics.psnr(bicubic, hr, crop=scale, y_channel=True)[0])
            p_ours = float(metrics.psnr(ours, hr, crop=scale, y_channel=True)[0])
            out[condition].append({"photo": path.stem, "size": f"{w}x{h}", "psnr_bicubic_pil": p_bic,
                                   "psnr_ours": p_ours, "gain": p_ours - p_bic})
    return out


def print_conditions(folder: Path, results: dict[str, list[dict[str, float | str]]]) -> dict[str, dict[str, float]]:
    """One Markdown table per folder: gain per photo and condition, mean and worst rows."""
    conditions = list(results)
    photos = [str(r["photo"]) for r in results[conditions[0]]]
    print(f"\n{folder}: PSNR-Y gain over PIL bicubic (dB)")
    print("| photo | " + " | ".join(f"{c} (bicubic / ours / gain)" for c in conditions) + " |")
    print("|---|" + "---|" * len(conditions))
    for i, photo in enumerate(photos):
        cells = [f"{results[c][i]['psnr_bicubic_pil']:.2f} / {results[c][i]['psnr_ours']:.2f} / "
                 f"{results[c][i]['gain']:+.2f}" for c in conditions]
        print(f"| {photo} | " + " | ".join(cells) + " |")
    summary = {}
    for c in conditions:
        gains = [float(r["gain"]) for r in results[c]]
        worst = int(np.argmin(gains))
        summary[c] = {"mean_gain": float(np.mean(gains)), "worst_gain": gains[worst], "worst_photo": photos[worst]}
    print("| **mean** | " + " | ".join(f"**{summary[c]['mean_gain']:+.2f}**" for c in conditions) + " |")
    print("| worst | " + " | ".join(f"{summary[c]['worst_gain']:+.2f} ({summary[c]['worst_photo']})"
                                    for c in conditions) + " |")
    return summary


def pictures(
    model_source: str, *, scale: int, photo: Path, conditions: list[str], denoise: float | str | None, out: Path,
    crop: int = 128, center: tuple[float, float] = (0.5, 0.5),
) -> None:
    """One small PNG: a row per condition of ``crop``-px HR crops, bicubic | ours | original."""
    engine = Engine(load_model(model_source, device="cpu", denoise=denoise), tile=0, device="cpu")
    image = Image.open(photo).convert("RGB")
    w, h = (image.width // scale) * scale, (image.height // scale) * scale
    hr = image.crop((0, 0, w, h))
    x = min(max(0, round(center[0] * w) - crop // 2) // scale * scale, w - crop)
    y = min(max(0, round(center[1] * h) - crop // 2) // scale * scale, h - crop)
    box = (x, y, x + crop, y + crop)
    sheet = Image.new("RGB", (3 * crop + 8, len(conditions) * (crop + 4) - 4), "white")
    for row, condition in enumerate(conditions):
        lr = degraded_lr(hr, scale, condition, seed=zlib.crc32(photo.stem.encode()))
        with torch.no_grad():
            ours = _to_pil(engine.run_tensor(_to_tensor(lr)))
        panels = (lr.resize((w, h), Image.Resampling.BICUBIC), ours, hr)
        for col, panel in enumerate(panels):
            sheet.paste(panel.crop(box), (col * (crop + 4), row * (crop + 4)))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    print(f"{out}: rows {', '.join(conditions)}; columns bicubic | ours | original; crop {box} of {photo.name}")


def speed(model_source: str, *, side: int, repeats: int = 2, denoise: float | str | None = None) -> float:
    """Best wall time in seconds of one side x side LR image through the tiled engine (tile auto)."""
    engine = Engine(load_model(model_source, device="cpu", denoise=denoise), tile="auto", device="cpu")
    x = torch.rand(1, 3, side, side)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            engine.run_tensor(x)
            best = min(best, time.perf_counter() - t)
    return best


def print_table(rows: list[dict[str, float | str]], scale: int) -> dict[str, float]:
    """The Markdown table of ``rows`` with a mean row; returns the means."""
    keys = ("psnr_pil", "psnr_bicubic", "psnr_ours", "gain", "ssim_bicubic", "ssim_ours")
    means = {k: float(np.mean([float(r[k]) for r in rows])) for k in keys}
    print(f"| photo (x{scale}) | size | PSNR-Y bicubic PIL (a=-0.5) | PSNR-Y bicubic torch (a=-0.75) | "
          "PSNR-Y ours | gain vs better bicubic | SSIM-Y bicubic torch | SSIM-Y ours |")
    print("|---|---|---|---|---|---|---|---|")
    for r in [*rows, {"photo": "**mean**", "size": "", **means}]:
        print(f"| {r['photo']} | {r['size']} | {r['psnr_pil']:.2f} | {r['psnr_bicubic']:.2f} | {r['psnr_ours']:.2f} | "
              f"{r['gain']:+.2f} | {r['ssim_bicubic']:.4f} | {r['ssim_ours']:.4f} |")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--scale", type=int, required=True)
    parser.add_argument("--photos", type=Path, nargs="+", default=[Path("runs/sr_data/val")],
                        help="folders of .png photos (default runs/sr_data/val); one table each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed", action="store_true", help="also time a 1-megapixel output")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--conditions", help="comma-separated, of clean, jpeg, noise: the real-world protocol")
    parser.add_argument("--denoise", help="denoise strength 0..1, or 'default' (the card's)")
    parser.add_argument("--pictures", type=Path, nargs=2, metavar=("PHOTO", "OUT_PNG"),
                        help="only write a bicubic | ours | original crop sheet of PHOTO, one row per condition")
    parser.add_argument("--center", type=float, nargs=2, default=(0.5, 0.5), help="crop centre, fractions of w, h")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    denoise = None if args.denoise is None else args.denoise if args.denoise == "default" else float(args.denoise)
    if args.pictures:
        pictures(args.model, scale=args.scale, photo=args.pictures[0], out=args.pictures[1], denoise=denoise,
                 conditions=(args.conditions or ",".join(CONDITIONS)).split(","), center=tuple(args.center))
        return
    if args.conditions:
        conditions = args.conditions.split(",")
        card = {"model": args.model, "scale": args.scale, "denoise": args.denoise, "protocol": (
            f"HR -> PIL antialiased bicubic downscale by {args.scale} -> LR; jpeg: LR saved at JPEG q{JPEG_QUALITY}; noise: "
            f"Gaussian sigma {NOISE_SIGMA:g} on the LR; PSNR-Y (BT.601), border {args.scale}; gain over PIL bicubic "
            "upscaling of the same LR"), "folders": {}}
        for folder in args.photos:
            photos = sorted(folder.glob("*.png"))
            if not photos:
                raise SystemExit(f"{folder}: no .png photos (run scripts/default_upscaler_data.py first)")
            results = evaluate_conditions(args.model, scale=args.scale, photos=photos, conditions=conditions,
                                          denoise=denoise)
            card["folders"][folder.name] = {"per_photo": results, "summary": print_conditions(folder, results)}
        if args.speed:
            side = 1024 // args.scale
            t = speed(args.model, side=side, denoise=denoise)
            card["seconds_1mp_output"] = {"threads": args.threads, "input": f"{side}x{side}", "seconds": round(t, 3)}
            print(f"\nCPU speed ({args.threads} threads): {side}x{side} -> 1024x1024 (1 MP output) in {t:.2f} s")
        if args.json:
            # Merged into the card's figures under "real_world", keyed by the strength: the clean
            # protocol's "folders" (and the card's "denoise" entry) stay as they are.
            document = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else {
                "model": args.model, "scale": args.scale}
            document.setdefault("real_world", {})[f"denoise={args.denoise}"] = card
            args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        return
    card: dict = {"model": args.model, "scale": args.scale, "metric": "PSNR/SSIM on Y (BT.601 studio range), "
                  f"border {args.scale} px, 8-bit outputs; gain vs the better bicubic", "folders": {}}
    for folder in args.photos:
        photos = sorted(folder.glob("*.png"))
        if not photos:
            raise SystemExit(f"{folder}: no .png photos (run scripts/default_upscaler_data.py first)")
        rows = evaluate(args.model, scale=args.scale, photos=photos)
        for r in rows:
            r["gain"] = float(r["psnr_ours"]) - max(float(r["psnr_pil"]), float(r["psnr_bicubic"]))
        print(f"\n{folder}:")
        card["folders"][folder.name] = {"per_photo": rows, "mean": print_table(rows, args.scale)}
    if args.speed:
        side = 1024 // args.scale
        t = speed(args.model, side=side)
        card["seconds_1mp_output"] = {"threads": args.threads, "input": f"{side}x{side}", "seconds": round(t, 3)}
        print(f"\nCPU speed ({args.threads} threads): {side}x{side} -> 1024x1024 (1 MP output) in {t:.2f} s")
    if args.json:
        kept = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else {}
        card.update({k: kept[k] for k in ("denoise", "real_world") if k in kept})
        args.json.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
