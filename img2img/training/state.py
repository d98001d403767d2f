"""The resumable training state on disk: RNG capture/restore and atomic checkpoint files.

A checkpoint is one torch file, ``RUN_DIR/checkpoints/last.pt``, holding only tensors and plain
Python types so it loads with ``torch.load(weights_only=True)``:

    {"format": "img2img-train/1", "method": str, "step": int,
     "nets": {name: state_dict}, "optimizers": {name: state_dict}, "scaler": state_dict | None,
     "ema": {name: {"updates": int, "module": state_dict}}, "rng": {...}, "data": {...},
     "method_state": {...}, "config": {...}}
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

# One error type for unusable checkpoint files, training or model: a one-line message naming the file.
from img2img.atomic import replacing
from img2img.checkpoints.errors import CheckpointError

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "capture_rng", "checkpoint_path", "load_checkpoint",
           "restore_rng", "save_checkpoint"]

CHECKPOINT_FORMAT = "img2img-train/1"


def checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def capture_rng(*, devices: bool = True) -> dict[str, Any]:
    """Every random generator the training touches, as tensors and plain types.

    ``devices=False`` captures only the CPU generators (torch, NumPy, Python), what data loading uses.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "internal": list(py_state[1])},
    }
    if devices and torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    if devices and hasattr(torch, "mps") and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (device generators only where the device exists)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and hasattr(torch, "mps") and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    A crash mid-write leaves the previous checkpoint intact; a failed write (e.g. a full disk)
    removes the temp file and raises CheckpointError naming the file and the reason.
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with replacing(p) as tmp, open(tmp, "wb") as f:
            torch.save(payload, f)
    except OSError as e:  # e.g. the disk is full
        kept = f"the previous checkpoint {p.name} is kept" if p.exists() else "no checkpoint was kept"
        raise CheckpointError(f"{p}: cannot write the training checkpoint ({e.strerror or e}); {kept}") from None


def load_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on the CPU).

    ``mmap=True`` leaves the tensors in the file until used: cheap when only the config is read.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no training checkpoint to resume from")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{p}: cannot read training checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not an img2img training checkpoint (expected format {CHECKPOINT_FORMAT})")
    return payload
