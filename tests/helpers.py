"""Helpers shared by several test modules (fixtures live in conftest.py): images made in code, and
the two tinted colour domains the cycle-consistency tests learn to map between."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

CPU = torch.device("cpu")


def smooth_rgb(height: int, width: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """A smooth, photo-like (H, W, 3) image: gradients plus low-frequency blobs."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        fy, fx, phase = g.uniform(0.5, 3.0), g.uniform(0.5, 3.0), g.uniform(0, 6.28)
        img[..., c] = 0.5 + 0.25 * np.sin(2 * np.pi * fy * y / height + phase) * np.cos(2 * np.pi * fx * x / width)
        img[..., c] += 0.2 * (x / max(width - 1, 1) - 0.5) * (c - 1)
    img += g.normal(0, 0.02, img.shape)
    img = np.clip(img, 0, 1)
    top = np.iinfo(dtype).max
    return np.round(img * top).astype(dtype)


# ------------------------------------------------------------- two colour domains (cycle, discogan)

QUIET = dict(tensorboard=False, sample_every=0, val_every=0, checkpoint_every=0, log_every=50)
RED = (1.0, 0.0, 0.0)
BLUE = (0.0, 0.0, 1.0)


def tinted(seeds, tint: tuple[float, float, float], size: int) -> torch.Tensor:
    """(N, 3, size, size) in [0, 1]: smooth photo-like images, 60 % image + 40 % a pure colour."""
    colour = torch.tensor(tint).view(3, 1, 1)
    images = [torch.from_numpy(smooth_rgb(size, size, seed=s)).permute(2, 0, 1).float() / 255 for s in seeds]
    return torch.stack([0.6 * img + 0.4 * colour for img in images])


class Unpaired(Dataset):
    """Domain a and domain b from different source images; each ``a`` meets a random ``b``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.a, self.b = a, b

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"a": self.a[i], "b": self.b[int(torch.randint(len(self.b), ()))]}


def red_minus_blue(x: torch.Tensor) -> float:
    """Mean R - B of (N, 3, H, W) images: +0.4 for the red domain, -0.4 for the blue one."""
    return float((x[:, 0] - x[:, 2]).mean())


def learn(method_cls, config_cls, *, size: int, steps: int, tmp_path, **options) -> dict[str, tuple[float, float]]:
    """Train on red-tinted a / blue-tinted b (different source images) and measure held-out images
    before and after: (mean R - B of g_ab(a), mean |g_ba(g_ab(a)) - a|) and the same for b."""
    from img2img.training.config import build_config  # here: modules that only need images stay light
    from img2img.training.loop import fit

    torch.manual_seed(0)
    train_a, train_b = tinted(range(0, 16), RED, size), tinted(range(100, 116), BLUE, size)
    test_a, test_b = tinted(range(200, 208), RED, size), tinted(range(300, 308), BLUE, size)
    c = build_config(config_cls, ("test", {**QUIET, "image_size": size, "steps": steps, "ngf": 8, "ndf": 8,
                                           **options}))
    m = method_cls(c)

    @torch.no_grad()
    def measure() -> dict[str, tuple[float, float]]:
        g_ab, g_ba = m.nets["g_ab"].eval(), m.nets["g_ba"].eval()  # as exported: eval mode
        fake_b = (g_ab(test_a * 2 - 1) + 1) / 2
        fake_a = (g_ba(test_b * 2 - 1) + 1) / 2
        rec_a = (g_ba(fake_b * 2 - 1) + 1) / 2
        rec_b = (g_ab(fake_a * 2 - 1) + 1) / 2
        return {"ab": (red_minus_blue(fake_b), float((rec_a - test_a).abs().mean())),
                "ba": (red_minus_blue(fake_a), float((rec_b - test_b).abs().mean()))}

    start = measure()
    loader = DataLoader(Unpaired(train_a, train_b), batch_size=c.batch_size, shuffle=True, drop_last=True)
    fit(m, train_loader=loader, run_dir=tmp_path, device=CPU, progress=False)
    end = measure()
    # Colour statistics of the domains themselves (the target of each direction).
    end["target"] = (red_minus_blue(test_b), red_minus_blue(test_a))
    return {"start": start, "end": end}


def check_learned(result: dict) -> None:
    start, end = result["start"], result["end"]
    rb_b, rb_a = end["target"]
    assert rb_a > 0.35 and rb_b < -0.35  # the domains really differ: red vs blue
    # g_ab(a) moved most of the way from a's colour to b's, and g_ba(b) the other way.
    assert (rb_a - end["ab"][0]) / (rb_a - rb_b) > 0.7, end
    assert (end["ba"][0] - rb_b) / (rb_a - rb_b) > 0.7, end
    # Reconstructions got much closer to the inputs.
    assert end["ab"][1] < 0.6 * start["ab"][1], (start, end)
    assert end["ba"][1] < 0.6 * start["ba"][1], (start, end)


def write_permuted_pairs(root, *, count: int, size: int, order=(2, 0, 1)):
    """``root/trainA`` and ``root/trainB``: ``count`` smooth RGB PNGs of ``size`` px, B = A with its
    channels in ``order`` (a paired task a tiny pix2pix can learn). Returns ``root``."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    for side in ("A", "B"):
        (root / f"train{side}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        a = smooth_rgb(size, size, seed=i)
        Image.fromarray(a).save(root / "trainA" / f"{i}.png")
        Image.fromarray(np.ascontiguousarray(a[..., list(order)])).save(root / "trainB" / f"{i}.png")
    return root


class Server:
    """A local HTTP server on 127.0.0.1 serving ``files`` (name -> bytes): Range requests answered
    with 206 unless ``honour_range`` is off; every request is recorded. ``close()`` stops it."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[dict] = []
        self.honour_range = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                rng = self.headers.get("Range")
                outer.requests.append({"path": self.path, "range": rng})
                data = outer.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and outer.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
