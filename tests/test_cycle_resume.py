"""Resuming a cycle run is exact: N steps + resume N == 2N straight, image pools included."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from img2img.training.config import build_config
from img2img.training.loop import fit
from img2img.training.methods.cycle import Cycle, CycleConfig
from img2img.training.state import CheckpointError, checkpoint_path, load_checkpoint
from tests.helpers import BLUE, QUIET, RED, Unpaired, tinted

CPU = torch.device("cpu")
# Pool of 3 with batches of 2: full after two steps, then random swaps every step.
OPTIONS = dict(QUIET, image_size=32, generator="resnet", n_blocks=1, ngf=4, ndf=4, n_layers_d=2, batch_size=2,
               pool_size=3, steps=8, log_every=2)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


def make(**options) -> Cycle:
    torch.manual_seed(0)
    return Cycle(build_config(CycleConfig, ("test", {**OPTIONS, **options})))


def loader() -> DataLoader:
    # 3 batches an epoch: a stop after step 4 falls mid-epoch.
    data = Unpaired(tinted(range(6), RED, 32), tinted(range(10, 16), BLUE, 32))
    return DataLoader(data, batch_size=2, shuffle=True, drop_last=True)


def state(m: Cycle) -> dict[str, torch.Tensor]:
    out = {f"{n}.{k}": v.clone() for n, net in m.nets.items() for k, v in net.state_dict().items()}
    for side, pool in m.pools.items():
        out[f"pool_{side}"] = torch.stack(pool.images)
    return out


def assert_same(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> None:
    assert x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(y[k], x[k], rtol=0, atol=1e-6, msg=k)


def test_resume_equals_a_straight_run_pools_included(tmp_path) -> None:
    straight = make()
    fit(straight, train_loader=loader(), run_dir=tmp_path / "straight", device=CPU, progress=False)

    first = make()
    fit(first, train_loader=loader(), run_dir=tmp_path / "split", device=CPU, progress=False, stop_at=4)
    saved = load_checkpoint(checkpoint_path(tmp_path / "split"))["method_state"]["pools"]
    assert saved["a"]["images"].shape == saved["b"]["images"].shape == (3, 3, 32, 32)  # full pools saved

    torch.manual_seed(123)  # whatever the RNG holds before resuming must not matter
    resumed = make(seed=7)
    result = fit(resumed, train_loader=loader(), run_dir=tmp_path / "split", device=CPU, progress=False, resume=True)
    assert result.step == 8
    assert_same(state(straight), state(resumed))
    for name in ("g", "d"):
        a = straight.optimizers[name].state_dict()["state"][0]["exp_avg"]
        b = resumed.optimizers[name].state_dict()["state"][0]["exp_avg"]
        torch.testing.assert_close(b, a, rtol=0, atol=1e-7)
    for f in ("g_ab.safetensors", "g_ba.safetensors"):
        assert (tmp_path / "split" / f).is_file()


def test_the_pool_state_matters(tmp_path) -> None:
    """Guards the test above: resuming with other pool contents ends elsewhere."""
    straight = make()
    fit(straight, train_loader=loader(), run_dir=tmp_path / "straight", device=CPU, progress=False)
    fit(make(), train_loader=loader(), run_dir=tmp_path / "split", device=CPU, progress=False, stop_at=4)
    path = checkpoint_path(tmp_path / "split")
    payload = load_checkpoint(path)
    for pool in payload["method_state"]["pools"].values():
        pool["images"] = torch.zeros_like(pool["images"])
    torch.save(payload, path)
    resumed = make()
    fit(resumed, train_loader=loader(), run_dir=tmp_path / "split", device=CPU, progress=False, resume=True)
    diffs = [float((v - state(resumed)[k]).abs().max()) for k, v in state(straight).items() if k.startswith("d_")]
    assert max(diffs) > 1e-4


def test_resume_with_another_pool_size_is_a_clear_error(tmp_path) -> None:
    fit(make(steps=2), train_loader=loader(), run_dir=tmp_path, device=CPU, progress=False)
    with pytest.raises(CheckpointError, match="cyclegan state does not fit this run.*pool_size is 5"):
        fit(make(steps=4, pool_size=5), train_loader=loader(), run_dir=tmp_path, device=CPU, progress=False,
            resume=True)
