"""The shared training loop, driven by a tiny in-test method (no registry, no files but the run dir)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from img2img.training.config import TrainConfig, build_config
from img2img.training.loop import DataStream, NonFiniteLossError, fit
from img2img.training.method import Export, Method, Prediction, StepContext, set_requires_grad
from img2img.training.schedules import schedule_from_config
from img2img.training.state import CheckpointError, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread


class NoisyPairs(Dataset):
    """Pairs where b = 1 - a, with augmentation noise drawn from the global torch RNG (as workers do)."""

    def __init__(self, n: int = 6, size: int = 8) -> None:
        g = torch.Generator().manual_seed(123)
        self.a = torch.rand(n, 3, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        a = (self.a[i] + 0.05 * torch.randn_like(self.a[i])).clamp(0, 1)
        return {"a": a, "b": 1 - a}


@dataclass
class ToyConfig(TrainConfig):
    lr: float = 1e-2
    poison_at: int = -1  # step at which the loss becomes NaN (tests the guard)
    poison_weight_at: int = -1  # step after which a discriminator weight is inf (losses still finite)
    poison_state_at: int = -1  # step after which g's Adam exp_avg_sq holds an inf (losses, weights finite)


class ToyMethod(Method):
    """A 1x1-conv 'generator' with dropout and a tiny 'discriminator': exercises two optimisers,
    RNG use inside the step, schedules, and method state."""

    name = "toy"
    config_class = ToyConfig
    ema_nets = ("g",)

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.nets = {
            "g": nn.Sequential(nn.Conv2d(3, 8, 1), nn.Dropout(0.2), nn.Conv2d(8, 3, 1)),
            "d": nn.Sequential(nn.Conv2d(6, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 1)),
        }
        self.optimizers = {
            name: torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.5, 0.999))
            for name, net in self.nets.items()
        }
        self.seen = 0  # method state carried through checkpoints

    def setup(self, *, total_steps: int) -> None:
        super().setup(total_steps=total_steps)
        self.schedules = {name: schedule_from_config(self.config, length=total_steps) for name in self.optimizers}

    def train_step(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        g, d = self.nets["g"], self.nets["d"]
        a, b = batch["a"] * 2 - 1, batch["b"] * 2 - 1
        with ctx.autocast():
            fake = g(a)
        set_requires_grad([d], True)
        with ctx.autocast():
            d_loss = d(torch.cat([a, fake.detach()], 1)).pow(2).mean() + (d(torch.cat([a, b], 1)) - 1).pow(2).mean()
        ctx.backward(d_loss)
        ctx.step_optimizer("d")
        set_requires_grad([d], False)
        with ctx.autocast():
            g_loss = (d(torch.cat([a, fake], 1)) - 1).pow(2).mean() + 10 * (fake - b).abs().mean()
        if ctx.step == self.config.poison_at:
            g_loss = g_loss * float("nan")
        ctx.backward(g_loss)
        ctx.step_optimizer("g")
        if ctx.step == self.config.poison_state_at:  # what a diverged run (e.g. lr 30) leaves: grad**2 overflowed
            self.optimizers["g"].state[g[0].weight]["exp_avg_sq"][0, 0, 0, 0] = float("inf")
        if ctx.step == self.config.poison_weight_at:
            with torch.no_grad():
                d[0].weight[0, 0, 0, 0] = float("inf")
        self.seen += a.shape[0]
        return {"g": g_loss.detach(), "d": d_loss.detach()}

    @torch.no_grad()
    def predict(self, batch, nets) -> Prediction:
        out = nets["g"](batch["a"] * 2 - 1)
        return Prediction(input=batch["a"], output=(out + 1) / 2, target=batch["b"])

    def exports(self) -> list[Export]:
        return []  # the export round trip is tested with pix2pix and the real model format

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state) -> None:
        self.seen = int(state["seen"])


def make_method(**options) -> ToyMethod:
    torch.manual_seed(options.get("seed", 0))
    base = dict(steps=12, batch_size=2, log_every=2, sample_every=0, val_every=0, checkpoint_every=0,
                tensorboard=False, ema_decay=0.9)
    return ToyMethod(build_config(ToyConfig, ("test", {**base, **options})))


def loader(shuffle: bool = True, num_workers: int = 0) -> DataLoader:
    return DataLoader(NoisyPairs(), batch_size=2, shuffle=shuffle, num_workers=num_workers, drop_last=True)


def weights(method: ToyMethod) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, net in method.nets.items() for k, v in net.state_dict().items()}


def test_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    cpu = torch.device("cpu")
    # 12 steps straight (3 batches an epoch: the stop at 7 falls mid-epoch).
    straight = make_method(checkpoint_every=7)
    fit(straight, train_loader=loader(), run_dir=tmp_path / "a", device=cpu, progress=False)

    # 7 steps, then a fresh process-like start: new method object, new loader, --resume.
    first = make_method()
    stopped = fit(first, train_loader=loader(), run_dir=tmp_path / "b", device=cpu, progress=False, stop_at=7)
    assert stopped.step == 7
    torch.manual_seed(999)  # whatever the RNG holds before resuming must not matter
    resumed = make_method(seed=5)
    result = fit(resumed, train_loader=loader(), run_dir=tmp_path / "b", device=cpu, progress=False, resume=True)

    assert result.step == 12
    w_straight, w_resumed = weights(straight), weights(resumed)
    assert w_straight.keys() == w_resumed.keys()
    for k in w_straight:
        torch.testing.assert_close(w_resumed[k], w_straight[k], rtol=0, atol=1e-6, msg=k)
    assert resumed.seen == straight.seen == 24
    ema_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["ema"]["g"]["module"]
    ema_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["ema"]["g"]["module"]
    for k in ema_a:
        torch.testing.assert_close(ema_b[k], ema_a[k], rtol=0, atol=1e-6)
    # Optimiser moments too (Adam exp_avg of the first generator weight).
    opt_a = straight.optimizers["g"].state_dict()["state"][0]["exp_avg"]
    opt_b = resumed.optimizers["g"].state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(opt_b, opt_a, rtol=0, atol=1e-7)
    # The log has each step interval once, even though the first run logged up to step 7.
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_interrupted_run_differs_without_resume_state(tmp_path) -> None:
    """Guards the test above: restarting from the weights alone (no RNG/data/optimiser state) differs."""
    cpu = torch.device("cpu")
    straight = make_method()
    fit(straight, train_loader=loader(), run_dir=tmp_path / "a", device=cpu, progress=False)
    restarted = make_method()
    fit(restarted, train_loader=loader(), run_dir=tmp_path / "b", device=cpu, progress=False, stop_at=7)
    restarted.config.steps = 5  # the remaining 5 steps as a new run: same weights, fresh everything else
    fit(restarted, train_loader=loader(), run_dir=tmp_path / "c", device=cpu, progress=False)
    diffs = [float((weights(straight)[k] - weights(restarted)[k]).abs().max()) for k in weights(straight)]
    assert max(diffs) > 1e-4


def test_data_stream_replays_the_epoch_exactly() -> None:
    """Mid-epoch restore gives the same batches (order and augmentation noise) as continuing."""
    torch.manual_seed(0)
    stream = DataStream(loader(), seed=3)
    for _ in range(4):  # into the second epoch
        next(stream)
    state = stream.state_dict()
    expected = [next(stream)["a"] for _ in range(5)]
    other = DataStream(loader(), seed=77)
    other.load_state_dict(state)
    got = [next(other)["a"] for _ in range(5)]
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_data_stream_leaves_training_rng_alone() -> None:
    torch.manual_seed(42)
    before = torch.get_rng_state()
    stream = DataStream(loader(), seed=0)
    for _ in range(5):
        next(stream)
    assert torch.equal(torch.get_rng_state(), before)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    method = make_method(poison_at=6, checkpoint_every=4)
    with pytest.raises(NonFiniteLossError, match=r"step 7: non-finite loss \(g=nan\).*step 4"):
        fit(method, train_loader=loader(), run_dir=tmp_path, device=torch.device("cpu"), progress=False)
    payload = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert payload["step"] == 4
    assert all(torch.isfinite(v).all() for v in payload["nets"]["g"].values())


def test_nan_guard_checks_weights_before_writing_a_checkpoint(tmp_path) -> None:
    method = make_method(poison_weight_at=3, checkpoint_every=4)
    with pytest.raises(NonFiniteLossError, match=r"step 4: weights of 'd' are not finite.*No checkpoint was written"):
        fit(method, train_loader=loader(), run_dir=tmp_path, device=torch.device("cpu"), progress=False)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_nan_guard_checks_the_optimiser_state(tmp_path) -> None:
    """A diverged run whose losses and weights are still finite but whose Adam state is not
    (issue: lr 30 exited 0 and exported) stops at the next checkpoint, keeping the last good one."""
    method = make_method(poison_state_at=5, checkpoint_every=4)
    with pytest.raises(NonFiniteLossError,
                       match=r"step 8: the state of optimiser 'g' \(exp_avg_sq\) is not finite.*kept: .*step 4\)"):
        fit(method, train_loader=loader(), run_dir=tmp_path, device=torch.device("cpu"), progress=False)
    assert all(torch.isfinite(p).all() for net in method.nets.values() for p in net.parameters())
    payload = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert payload["step"] == 4
    state = payload["optimizers"]["g"]["state"]
    assert all(torch.isfinite(v).all() for s in state.values() for v in s.values())


def test_schedule_sets_learning_rates_and_log_records_them(tmp_path) -> None:
    method = make_method(steps=10, lr_schedule="linear", lr_decay_start=0.5, log_every=1)
    fit(method, train_loader=loader(), run_dir=tmp_path, device=torch.device("cpu"), progress=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr_g"] for r in records]
    # The lr used at (0-based) step t is logged after it: 1e-2 * (1 - max(0, t - 5) / 5).
    expected = [1e-2 * (1 - max(0, t - 5) / 5) for t in range(10)]
    assert lrs == pytest.approx(expected)


def test_existing_run_needs_resume_and_mismatch_is_clear(tmp_path) -> None:
    cpu = torch.device("cpu")
    fit(make_method(steps=2), train_loader=loader(), run_dir=tmp_path, device=cpu, progress=False)
    with pytest.raises(Exception, match="already holds a training checkpoint; pass --resume"):
        fit(make_method(steps=4), train_loader=loader(), run_dir=tmp_path, device=cpu, progress=False)
    with pytest.raises(CheckpointError, match="holds ema"):
        fit(make_method(steps=4, ema_decay=0.0), train_loader=loader(), run_dir=tmp_path, device=cpu,
            progress=False, resume=True)


def test_samples_and_validation_written(tmp_path) -> None:
    method = make_method(steps=4, sample_every=2, val_every=2)
    val = DataLoader(NoisyPairs(n=3, size=16), batch_size=2)
    fit(method, train_loader=loader(), val_loader=val, run_dir=tmp_path, device=torch.device("cpu"), progress=False)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    from PIL import Image

    grid = Image.open(tmp_path / "samples" / "step_0000004.png")
    assert grid.size == (3 * 16, 2 * 16)  # input | output | target, one row per image
    vals = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines() if '"val"' in x]
    assert [v["step"] for v in vals] == [2, 4]
    assert set(vals[0]) >= {"psnr", "ssim", "l1"}


def test_data_stream_replay_with_worker_processes() -> None:
    """With workers, augmentation noise comes from worker seeds drawn at iter(): replay still matches."""
    stream = DataStream(loader(num_workers=2), seed=3)
    for _ in range(2):  # mid-epoch (3 batches an epoch)
        next(stream)
    state = stream.state_dict()
    expected = [next(stream)["a"] for _ in range(3)]
    other = DataStream(loader(num_workers=2), seed=0)
    other.load_state_dict(state)
    got = [next(other)["a"] for _ in range(3)]
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
