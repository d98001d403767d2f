"""torchrun / DDP training on the CPU (gloo, 2 processes): gradient averaging, cyclegan run + resume.

The processes are started the way torchrun starts them: the same entry point with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment. Starting two Python
processes dominates the cost, so one spawn runs every 2-process job of this file in turn and the
tests below check its results.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from img2img.training import distributed
from img2img.training.config import ConfigError
from img2img.training.run import train
from img2img.training.state import CheckpointError
from tests.helpers import smooth_rgb

pytestmark = pytest.mark.slow

BASE = dict(image_size=32, num_workers=0, tensorboard=False, sample_every=0, val_every=0, checkpoint_every=0,
            log_every=1, load_size=32)
# pix2pix without randomness (no dropout, no augmentation) and without batch statistics, so a
# 2 x b split of a 2b batch must give the same averaged gradients. Not instance norm either: the
# conv biases in front of it get a gradient that is zero up to rounding, which Adam's
# normalisation turns into +-lr steps of random sign in both runs.
PIX2PIX = dict(BASE, ngf=8, ndf=8, norm="none", dropout=False, augment=[], steps=3)
# A constant learning rate: a 2-step run then a resume to 4 steps follows the same schedule as 4 steps.
CYCLE = dict(BASE, generator="resnet", n_blocks=1, ngf=4, ndf=4, pool_size=2, augment=["hflip"], batch_size=1,
             lr_schedule="constant")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_jobs(rank: int, world: int, jobs: list[tuple[str, dict, bool, int]]) -> None:
    """One torchrun-like process: each job is (method, options, resume, port) run through train()."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    for method, options, resume, port in jobs:
        os.environ["MASTER_PORT"] = str(port)  # a fresh rendezvous per run: each train() joins and leaves
        train(method, options, resume=resume, progress=False)


def nets(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    return {f"{net}.{k}": v for net, sd in ckpt["nets"].items() for k, v in sd.items()}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The 2-process jobs on a dataset of 8 pairs (trainA/trainB, B = A's channels permuted)."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "data"
    for side in "AB":
        (data / f"train{side}").mkdir(parents=True)
    for i in range(8):
        a = smooth_rgb(32, 32, seed=i)
        Image.fromarray(a).save(data / "trainA" / f"{i}.png")
        Image.fromarray(np.ascontiguousarray(a[..., [2, 0, 1]])).save(data / "trainB" / f"{i}.png")
    d = str(data)
    jobs = [
        ("pix2pix", dict(PIX2PIX, data=d, out=str(root / "p2p_2x2"), batch_size=2), False, free_port()),
        ("cyclegan", dict(CYCLE, data=d, out=str(root / "cyc_resumed"), steps=2), False, free_port()),
        ("cyclegan", dict(out=str(root / "cyc_resumed"), steps=4), True, free_port()),
        ("cyclegan", dict(CYCLE, data=d, out=str(root / "cyc_straight"), steps=4), False, free_port()),
    ]
    mp.start_processes(run_jobs, args=(2, jobs), nprocs=2, start_method="spawn")
    return root


def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(runs: Path) -> None:
    one = runs / "p2p_1x4"
    train("pix2pix", dict(PIX2PIX, data=str(runs / "data"), out=str(one), batch_size=4), progress=False)
    diff = max_abs_diff(nets(runs / "p2p_2x2"), nets(one))
    print(f"pix2pix, 3 steps: max |w(2 ranks x batch 2) - w(1 process x batch 4)| = {diff:.3g}")
    assert diff < 1e-6
    # A step really moves the weights by much more than that (the comparison is not vacuous).
    fresh = runs / "p2p_1x4_0"
    train("pix2pix", dict(PIX2PIX, data=str(runs / "data"), out=str(fresh), batch_size=4, steps=1), progress=False)
    assert max_abs_diff(nets(one), nets(fresh)) > 1e-4
    # Logged losses are means over both ranks: the same numbers as the one-process batch of 4.
    log2 = [json.loads(x) for x in (runs / "p2p_2x2" / "log.jsonl").read_text().splitlines()]
    log1 = [json.loads(x) for x in (one / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log2] == [1, 2, 3]  # one writer: no duplicated records
    for r2, r1 in zip(log2, log1, strict=True):
        assert r2["g_l1"] == pytest.approx(r1["g_l1"], rel=1e-5)


def test_cyclegan_two_ranks_run_and_resume_exactly(runs: Path) -> None:
    resumed, straight = runs / "cyc_resumed", runs / "cyc_straight"
    for name in ("g_ab.safetensors", "g_ba.safetensors", "config.yaml", "checkpoints/last.pt"):
        assert (resumed / name).is_file(), name
    ckpt = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 4 and len(ckpt["ranks"]) == 2
    # Per-rank seeds: the two ranks' training RNG streams differ.
    assert not torch.equal(ckpt["ranks"][0]["rng"]["torch"], ckpt["ranks"][1]["rng"]["torch"])
    assert [r["step"] for r in map(json.loads, (resumed / "log.jsonl").read_text().splitlines())] == [1, 2, 3, 4]
    # 2 steps + resume 2 steps == 4 steps: every rank's RNG, data shard position and pool came back.
    assert max_abs_diff(nets(resumed), nets(straight)) < 1e-6
    # Exported weights are the plain modules' (no DDP "module." prefix), equal to the checkpoint's.
    from safetensors.torch import load_file

    exported = load_file(resumed / "g_ab.safetensors")
    reference = {k.removeprefix("g_ab."): v for k, v in nets(resumed).items() if k.startswith("g_ab.")}
    assert exported.keys() == reference.keys()
    assert all(torch.equal(exported[k], reference[k]) for k in reference)


def test_a_distributed_checkpoint_resumes_only_with_as_many_processes(tmp_path: Path) -> None:
    payload = {"rng": {}, "data": {}, "ranks": [{"rng": {}, "data": {}, "method_state": {}}] * 2}
    with pytest.raises(CheckpointError, match="written by a run of 2 process\\(es\\); resume it with 2, not 1"):
        distributed.rank_state(payload, tmp_path / "last.pt")


def test_rank_device_choices() -> None:
    assert distributed.rank_device("cpu", 1) == torch.device("cpu")
    with pytest.raises(ConfigError, match="cuda:LOCAL_RANK"):
        distributed.rank_device("cuda:1", 0)
    with pytest.raises(ConfigError, match="MPS"):
        distributed.rank_device("mps", 0)
    if not torch.cuda.is_available():
        assert distributed.rank_device("auto", 0) == torch.device("cpu")


def test_without_torchrun_nothing_changes(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.env_info() is None and distributed.current() is None and distributed.is_main()
    assert distributed.train_sampler(10, seed=0) is None
    with distributed.session("cpu") as device:
        assert device is None


def test_torchrun_environment_is_read_once_for_training_and_inference(monkeypatch) -> None:
    """One reader (img2img.torchrun); each side reports a bad launch in its own error type."""
    from img2img.inference import sharding
    from img2img.inference.engine import InferenceError

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_info() == sharding._env_shard() == distributed.DistInfo(1, 2, 1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match=r"RANK 2 is outside \[0, WORLD_SIZE=2\)"):
        distributed.env_info()
    with pytest.raises(InferenceError, match=r"RANK 2 is outside"):
        sharding._env_shard()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="not integers"):
        distributed.env_info()
