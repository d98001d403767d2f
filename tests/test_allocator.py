"""`img2img.allocator.keep_freed_memory`: a tiled run stops page-faulting its memory back in."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from img2img.allocator import keep_freed_memory

# A second tiled run of a tiny x4 net on two tile threads, in a fresh process; prints its minor page faults.
_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    if sys.argv[1] == "keep":
        from img2img.allocator import keep_freed_memory
        assert keep_freed_memory()
    import numpy as np, torch
    from img2img.checkpoints import ModelDescriptor
    from img2img.inference import Engine
    from img2img.networks import build
    torch.set_num_threads(2)
    net = build("msrresnet", num_feat=16, num_block=1, scale=4).eval()
    desc = ModelDescriptor.from_net(net, arch="msrresnet", kwargs={}, value_range=(0, 1))
    engine = Engine(desc, tile=64, workers=2)
    pixels = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    engine(pixels)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    engine(pixels)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_a_second_tiled_run_reuses_its_memory() -> None:
    default, kept = _faults("default"), _faults("keep")
    # glibc's defaults fault in every tile's activations again (tens of thousands of pages here).
    assert kept * 10 < default, (kept, default)


def test_user_settings_are_left_alone(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert keep_freed_memory() is False
