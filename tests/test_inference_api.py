"""The engine's extension points: injected runners, the per-batch progress hook, the CPU tile pool."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.inference import Engine, InferenceError, Runner, TorchRunner
from img2img.inference.tile_pool import TilePool
from img2img.networks import build
from tests.helpers import smooth_rgb

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny nets, one intra-op thread

class SmallSR(nn.Module):
    """Two 3x3 convs and a pixel-shuffle x2: outputs depend on the input and on tile edges."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def small_sr() -> ModelDescriptor:
    return ModelDescriptor(net=SmallSR().eval(), arch="small", scale=2, value_range=(0.0, 1.0))


class Recording:
    """A runner that is not torch's: runs the net by hand and records every batch it is given."""

    def __init__(self, net: nn.Module, *, fixed_shape: bool = False) -> None:
        self.net, self.device, self.fixed_shape = net, torch.device("cpu"), fixed_shape
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(batch.shape))
        with torch.no_grad():
            return self.net(batch).double()  # any float dtype: the engine makes it float32


def test_an_injected_runner_gets_every_batch_and_gives_torchs_result() -> None:
    model = small_sr()
    pixels = smooth_rgb(50, 70)
    expected = Engine(model, tile=32, overlap=8, batch=3)(pixels)
    runner = Recording(model.net)
    assert isinstance(runner, Runner) and isinstance(TorchRunner(model.net, device=torch.device("cpu")), Runner)
    engine = Engine(model, tile=32, overlap=8, batch=3, runner=runner)
    np.testing.assert_array_equal(engine(pixels), expected)
    plan = engine.plan_for(50, 70)
    assert plan.count > 3
    assert len(runner.shapes) == math.ceil(plan.count / 3)
    assert sum(s[0] for s in runner.shapes) == plan.count
    assert {s[1:] for s in runner.shapes} == {(3, plan.rows.tile, plan.cols.tile)}


def test_a_fixed_shape_runner_always_gets_one_shape() -> None:
    model = small_sr()
    runner = Recording(model.net, fixed_shape=True)
    x = torch.rand(3, 70, 50)
    out = Engine(model, tile=32, overlap=8, batch=4, runner=runner)(x)
    assert out.shape == (3, 140, 100)
    assert len(set(runner.shapes)) == 1 and runner.shapes[0] == (4, 3, 32, 32)


def test_runner_settings_are_not_given_twice() -> None:
    model = small_sr()
    with pytest.raises(ValueError, match="runner's settings"):
        Engine(model, runner=Recording(model.net), device="cpu")
    with pytest.raises(ValueError, match="workers"):
        Engine(model, runner=Recording(model.net), workers=2)


def test_instance_norm_tiles_need_the_torch_runner_whole_images_do_not() -> None:
    net = build("resnet", ngf=4, n_blocks=1).eval()
    model = ModelDescriptor.from_net(net, arch="resnet", kwargs={}, value_range=(-1.0, 1.0))
    x = torch.rand(3, 64, 64) * 2 - 1
    with pytest.raises(InferenceError, match="torch runner"):
        Engine(model, tile=40, overlap=16, runner=Recording(net))(x)
    whole = Engine(model, tile=0, runner=Recording(net))(x)
    torch.testing.assert_close(whole, Engine(model, tile=0)(x))


# ------------------------------------------------------------------------------- progress


def progress_calls(engine: Engine, image) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    engine(image, progress=lambda done, total: calls.append((done, total)))
    return calls


def assert_monotone_to_the_end(calls: list[tuple[int, int]]) -> None:
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and len(set(dones)) == len(dones)
    assert calls[-1][0] == calls[-1][1]


def test_progress_counts_the_tile_plan_batch_by_batch() -> None:
    engine = Engine(small_sr(), tile=32, overlap=8, batch=2)
    calls = progress_calls(engine, smooth_rgb(60, 90))
    plan = engine.plan_for(60, 90)
    assert plan.count == plan.rows.count * plan.cols.count > 4
    assert_monotone_to_the_end(calls)
    assert {total for _, total in calls} == {plan.count}
    assert len(calls) == math.ceil(plan.count / 2)
    assert [d for d, _ in calls][:2] == [2, 4]


def test_progress_covers_every_pass_over_the_image() -> None:
    # Alpha through the model: a second pass over the same plan, counted in one total from the start.
    engine = Engine(small_sr(), tile=32, overlap=8, batch=1, alpha="model")
    rgba = np.dstack([smooth_rgb(40, 40), smooth_rgb(40, 40)[:, :, 0]])
    calls = progress_calls(engine, rgba)
    count = engine.plan_for(40, 40).count
    assert_monotone_to_the_end(calls)
    assert {total for _, total in calls} == {2 * count} and len(calls) == 2 * count
    # A batch of tensors: each image's tiles.
    calls = progress_calls(engine, torch.rand(3, 3, 40, 40))
    assert_monotone_to_the_end(calls)
    assert calls[-1] == (3 * count, 3 * count)


def test_progress_counts_instance_norm_measuring_passes() -> None:
    net = build("resnet", ngf=4, n_blocks=1).eval()
    model = ModelDescriptor.from_net(net, arch="resnet", kwargs={}, value_range=(-1.0, 1.0))
    engine = Engine(model, tile=40, overlap=16, batch=2)
    calls = progress_calls(engine, torch.rand(3, 64, 64) * 2 - 1)
    count, layers = engine.plan_for(64, 64).count, len(engine.norm_layers)
    assert count > 1 and layers > 1
    assert_monotone_to_the_end(calls)
    assert calls[-1][1] == count * (1 + layers)


class OomAboveSize(nn.Module):
    """Nearest x2 that raises torch.OutOfMemoryError for tiles over ``limit`` pixels."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.failed, self.ran = limit, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] * x.shape[3] > self.limit:
            self.failed += 1
            raise torch.OutOfMemoryError("fake: out of memory")
        self.ran += x.shape[0]
        return F.interpolate(x, scale_factor=2, mode="nearest")


def test_progress_stays_monotone_through_an_out_of_memory_retry() -> None:
    # Tiles of 64 px fit, 128 px do not: the first plan fails at its first tile, the retry runs them all.
    net = OomAboveSize(64 * 64)
    engine = Engine(ModelDescriptor(net=net, arch="t", scale=2), tile=128, overlap=8, batch=1)
    calls = progress_calls(engine, smooth_rgb(200, 120))
    assert net.failed == 1 and net.ran > engine.plan_for(200, 120).count
    assert_monotone_to_the_end(calls)
    assert calls[-1] == (net.ran, net.ran)


def test_plan_for_reports_what_the_engine_runs() -> None:
    engine = Engine(small_sr(), tile=48, overlap=16)
    plan = engine.plan_for(100, 130)
    rows, cols = plan  # unpacks like the old (rows, cols) pair
    assert (rows.count, cols.count) == (3, 4) and plan.overlap >= 16
    assert "3 x 4 tiles" in plan.describe() and "overlap" in plan.describe()
    assert Engine(small_sr(), tile=0).plan_for(100, 130).count == 1


# ------------------------------------------------------------------------------- CPU tile pool


def test_the_tile_pool_runs_on_one_core_per_thread_and_restores_the_default() -> None:
    torch.set_num_threads(2)
    pool = TilePool(2)
    try:
        assert torch.get_num_threads() == 2  # the process default is back after start-up
        seen = pool.map(lambda x: (torch.get_num_threads(), x.shape[0]), torch.zeros(4, 1))
        assert seen == [(1, 1)] * 4  # one sample per call, each on a one-core thread
        def fails(x: torch.Tensor) -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            pool.map(fails, torch.zeros(2, 1))
    finally:
        pool.close()
    assert torch.get_num_threads() == 2


def test_two_cpu_workers_give_the_one_worker_result() -> None:
    torch.set_num_threads(2)
    model = small_sr()
    pixels = smooth_rgb(50, 70)
    pooled = Engine(model, tile=32, overlap=8, workers=2)
    assert pooled.workers == 2 and pooled.batch == 2
    np.testing.assert_array_equal(pooled(pixels), Engine(model, tile=32, overlap=8, workers=1, batch=2)(pixels))


def test_a_pil_image_gives_a_pil_image_equal_to_the_array_path() -> None:
    import PIL.Image

    engine = Engine(small_sr(), tile=32, overlap=8)
    pixels = smooth_rgb(20, 24)
    out = engine(PIL.Image.fromarray(pixels))
    assert isinstance(out, PIL.Image.Image) and out.size == (48, 40) and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), engine(pixels))


def test_a_read_only_array_runs_without_any_warning() -> None:
    import warnings

    engine = Engine(small_sr(), tile=32, overlap=8)
    pixels = smooth_rgb(20, 24)
    frozen = pixels.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = engine(frozen)
    np.testing.assert_array_equal(out, engine(pixels))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_float_array_in_0_1_gives_floats_matching_the_16_bit_path(dtype: type) -> None:
    engine = Engine(small_sr(), tile=32, overlap=8)
    as16 = smooth_rgb(20, 24).astype(np.uint16) * 257  # 8-bit values spread over the 16-bit range
    out = engine((as16 / 65535.0).astype(dtype))
    assert out.dtype == dtype and out.shape == (40, 48, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out, engine(as16) / 65535.0, atol=1e-6)


def test_an_unsupported_input_names_the_accepted_types() -> None:
    with pytest.raises(TypeError, match="numpy array.*PIL image.*tensor, got list"):
        Engine(small_sr(), tile=32, overlap=8)([[0, 1]])
