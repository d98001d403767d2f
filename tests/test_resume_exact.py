"""Exact resume for every method: a run stopped and resumed ends with the weights of a straight run.

The matrix: each method (pix2pix, cyclegan, discogan, srgan) x each way a run stops:

- ``checkpoint``: stopped right at a checkpoint step (``stop_at`` = a multiple of ``checkpoint_every``);
- ``between``: stopped between checkpoints (the stop writes its own checkpoint);
- ``sigkill``: a separate process killed with SIGKILL while training the step after a checkpoint.

Then ``--resume`` to the end. Nets, optimiser states and EMA copies of the final checkpoint must equal
those of a run that never stopped within 1e-6. Tiny nets, 32-64 px images, 6 steps, one thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from img2img.training.run import train
from img2img.training.state import checkpoint_path, load_checkpoint
from tests.helpers import smooth_rgb

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread

REPO = Path(__file__).resolve().parents[1]
STEPS, EVERY = 6, 3
COMMON: dict[str, Any] = dict(
    steps=STEPS, checkpoint_every=EVERY, batch_size=2, num_workers=0, device="cpu", seed=0, log_every=1,
    sample_every=0, val_every=0, tensorboard=False, ema_decay=0.5,
)
# Tiny networks; every method keeps the default hflip augmentation, which draws from the training RNG.
METHODS: dict[str, dict[str, Any]] = {
    "pix2pix": dict(image_size=32, load_size=32, ngf=4, ndf=4, n_layers_d=2),
    "cyclegan": dict(image_size=32, load_size=32, generator="resnet", n_blocks=1, ngf=4, ndf=4, n_layers_d=2,
                     pool_size=3),
    "discogan": dict(image_size=64, load_size=64, ngf=4, ndf=4),
    "srgan": dict(image_size=16, scale=2, arch="msrresnet", num_feat=4, num_block=1, ndf=4, pretrain_steps=2,
                  perceptual="none"),
}


def _write(folder: Path, n: int, size: int, first: int, permute: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = smooth_rgb(size, size, seed=first + i)
        Image.fromarray(np.ascontiguousarray(img[..., [2, 0, 1]] if permute else img)).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """root/trainA + trainB (paired for pix2pix, unpaired for the cycle methods), root/train for SR."""
    root = tmp_path_factory.mktemp("resume_data")
    _write(root / "paired" / "trainA", 5, 40, 0)
    _write(root / "paired" / "trainB", 5, 40, 0, permute=True)
    _write(root / "unpaired32" / "trainA", 5, 36, 10)
    _write(root / "unpaired32" / "trainB", 5, 36, 20)
    _write(root / "unpaired64" / "trainA", 5, 64, 10)
    _write(root / "unpaired64" / "trainB", 5, 64, 20)
    _write(root / "sr" / "train", 5, 24, 30)
    return {"pix2pix": root / "paired", "cyclegan": root / "unpaired32", "discogan": root / "unpaired64",
            "srgan": root / "sr"}


def options(method: str, data: Path, out: Path) -> dict[str, Any]:
    return {**COMMON, **METHODS[method], "data": str(data), "out": str(out)}


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the final checkpoint's nets, optimisers and EMA copies, by a flat name."""
    payload = load_checkpoint(checkpoint_path(run_dir))
    assert payload["step"] == STEPS
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point():
                flat[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)

    for kind in ("nets", "optimizers", "ema"):
        walk(kind, payload[kind])
    return flat


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) if a[k].numel() else 0.0 for k in a)


_STRAIGHT: dict[str, dict[str, torch.Tensor]] = {}


def straight(method: str, datasets: dict[str, Path], tmp_path_factory) -> dict[str, torch.Tensor]:
    """The run that never stopped (computed once per method)."""
    if method not in _STRAIGHT:
        out = tmp_path_factory.mktemp(f"straight_{method}")
        train(method, options(method, datasets[method], out), progress=False)
        _STRAIGHT[method] = final_state(out)
    return _STRAIGHT[method]


def kill_during_step(method: str, opts: dict[str, Any], step: int) -> int:
    """Run ``method`` in a child process and SIGKILL it while it computes 0-based ``step``.

    The child says when it got there and waits; the kill lands with the checkpoint of the
    previous checkpoint step on disk. Returns the child's return code.
    """
    script = textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads(1)
        from img2img.training.methods import get_method
        from img2img.training.run import train
        cls = get_method({method!r})
        original = cls.train_step
        def train_step(self, ctx, batch):
            if ctx.step == {step}:
                print("reached", flush=True)
                sys.stdin.read()  # block here until killed
            return original(self, ctx, batch)
        cls.train_step = train_step
        train({method!r}, {opts!r}, progress=False)
        print("finished", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          env=env, text=True) as child:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line == "reached", line
        child.send_signal(signal.SIGKILL)
        return child.wait()


STOPS = [("checkpoint", EVERY), ("between", EVERY + 1)]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("how", "stop"), STOPS, ids=[s[0] for s in STOPS])
def test_stop_then_resume_equals_straight_run(method, how, stop, datasets, tmp_path, tmp_path_factory) -> None:
    expected = straight(method, datasets, tmp_path_factory)
    run = tmp_path / "run"
    first = train(method, options(method, datasets[method], run), progress=False, stop_at=stop)
    assert first.step == stop and load_checkpoint(checkpoint_path(run))["step"] == stop
    torch.manual_seed(1234)  # whatever the RNG holds before resuming must not matter
    result = train(method, options(method, datasets[method], run), progress=False, resume=True)
    assert result.step == STEPS
    assert max_diff(expected, final_state(run)) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_sigkill_then_resume_equals_straight_run(method, datasets, tmp_path, tmp_path_factory) -> None:
    expected = straight(method, datasets, tmp_path_factory)
    run = tmp_path / "run"
    code = kill_during_step(method, options(method, datasets[method], run), step=EVERY + 1)
    assert code == -signal.SIGKILL
    assert load_checkpoint(checkpoint_path(run))["step"] == EVERY  # what the kill left
    result = train(method, options(method, datasets[method], run), progress=False, resume=True)
    assert result.step == STEPS
    assert max_diff(expected, final_state(run)) <= 1e-6
