"""Sharded folder inference: `torchrun --nproc_per_node 2 -m img2img upscale SRC DST` on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from img2img.checkpoints import save_model
from img2img.inference import Job, RunReport
from img2img.inference.sharding import Shard, merge, take
from img2img.networks import registry
from tests.helpers import smooth_rgb

NAMES = ["e.png", "a.png", "d.png", "b.png", "c.png"]  # unsorted on purpose


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_take_deals_the_sorted_jobs_round_robin() -> None:
    jobs = [Job(Path(n), Path("out") / n) for n in NAMES]
    assert take(jobs, None) == jobs
    shards = [[j.src.name for j in take(jobs, Shard(rank=r, world_size=2, local_rank=r))] for r in (0, 1)]
    assert shards == [["a.png", "c.png", "e.png"], ["b.png", "d.png"]]
    three = [j.src.name for r in range(3) for j in take(jobs, Shard(rank=r, world_size=3, local_rank=r))]
    assert sorted(three) == sorted(NAMES) and len(three) == len(NAMES)  # each file exactly once
    report = RunReport(written=[Path("x")])
    assert merge(report, None) is report


@pytest.mark.slow
def test_sharded_upscale_writes_every_file_once(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i, name in enumerate(NAMES):
        Image.fromarray(smooth_rgb(12, 12, seed=i)).save(src / name)
    (src / "broken.png").write_bytes(b"not a png")  # one bad file: reported once, exit code 1 on every rank
    kwargs = {"scale": 2, "num_feat": 4, "num_block": 1}
    model = save_model(registry.build("msrresnet", **kwargs), tmp_path / "sr.safetensors", arch="msrresnet",
                       kwargs=kwargs, value_range=(0.0, 1.0), scale=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "img2img", "--device", "cpu", "upscale", str(src), str(dst), "--model", str(model), "--tile", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out  # broken.png failed on one rank: the job fails
    assert sorted(p.name for p in dst.iterdir()) == sorted(NAMES), out
    for name in NAMES:
        assert Image.open(dst / name).size == (24, 24)
    assert out.count("error: ") == 1 and "broken.png" in out, out
    # Rank 0 alone prints the merged summary; 5 written in all means no file was done twice.
    assert out.count("wrote ") == 1, out
    assert "wrote 5, failed 1" in out, out
