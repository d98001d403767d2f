"""The tiled engine: tile geometry, blending, tiled == whole, streaming output, OOM retry, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from img2img.checkpoints.descriptor import ModelDescriptor
from img2img.inference import Engine, InferenceError
from img2img.inference.tiling import axis_windows, plan_axis, tiled_forward
from img2img.networks import build
from tests.helpers import smooth_rgb


class ConvSR(nn.Module):
    """A norm-free conv net: 5 3x3 convs (receptive field radius 5), then pixel-shuffle x scale."""

    def __init__(self, scale: int, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(3):
            layers += [nn.Conv2d(16, 16, 3, padding=1), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(16, out_channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def descriptor(
    net: nn.Module, *, scale: int, value_range=(0.0, 1.0), multiple: int = 1, min_size: int = 1
) -> ModelDescriptor:
    return ModelDescriptor(
        net=net.eval(),
        arch="test",
        scale=scale,
        value_range=value_range,
        size_multiple=multiple,
        min_size=min_size,
    )


def whole_reference(net: nn.Module, x: torch.Tensor, *, scale: int, multiple: int) -> torch.Tensor:
    """Independent whole-image forward: reflect-pad right/bottom to the multiple, run, crop."""
    _, h, w = x.shape
    ph, pw = -h % multiple, -w % multiple
    padded = F.pad(x[None], (0, pw, 0, ph), mode="reflect") if ph or pw else x[None]
    with torch.no_grad():
        return net(padded)[0, :, : h * scale, : w * scale]


# ------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "length,tile,overlap,multiple",
    [(100, 32, 8, 1), (1000, 192, 16, 1), (96, 40, 16, 4), (64, 64, 8, 1), (257, 100, 20, 1)],
)
def test_axis_plan_covers_evenly_with_enough_overlap(
    length: int, tile: int, overlap: int, multiple: int
) -> None:
    length = -(-length // multiple) * multiple
    plan = plan_axis(length, tile=tile, overlap=overlap, multiple=multiple)
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.tile == length
    assert plan.tile <= max(tile, 0) or plan.count == 1
    assert all(s % multiple == 0 for s in plan.starts) and plan.tile % multiple == 0
    if plan.count > 1:
        assert min(plan.overlaps()) >= overlap
        steps = np.diff(plan.starts)
        # Even spread: no thin last tile, steps differ only by rounding to the multiple.
        assert steps.max() - steps.min() <= multiple


def test_axis_plan_shrinks_tiles_to_cut_recomputation_unless_fixed() -> None:
    adaptive = plan_axis(1000, tile=192, overlap=16, multiple=1)
    fixed = plan_axis(1000, tile=192, overlap=16, multiple=1, fixed=True)
    assert adaptive.count == fixed.count == 6
    assert fixed.tile == 192 and adaptive.tile < 192
    assert adaptive.count * adaptive.tile < fixed.count * fixed.tile


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_windows_are_a_partition_of_unity_and_smooth(scale: int) -> None:
    plan = plan_axis(150, tile=48, overlap=16)
    windows = axis_windows(plan, scale=scale)
    total = torch.zeros(plan.length * scale)
    for start, w in zip(plan.starts, windows, strict=True):
        total[start * scale : start * scale + plan.tile * scale] += w
    torch.testing.assert_close(total, torch.ones_like(total))
    # Inside the image each window rises from 0 (at the tile edge) and steps stay small: no hard cut.
    inner = windows[1]
    assert inner[0] == 0 and inner[-1] == 0 and inner.max() == 1
    assert inner.diff().abs().max() < 0.25 / scale


# ------------------------------------------------------------------------------- tiled == whole


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("tile", [36, 48])
def test_tiled_equals_whole_for_a_conv_net(scale: int, tile: int) -> None:
    net = ConvSR(scale).eval()
    x = torch.rand(3, 53, 71)  # odd sides, several tiles each way
    expected = whole_reference(net, x, scale=scale, multiple=1)
    out = Engine(descriptor(net, scale=scale), tile=tile, overlap=16)(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "scale,multiple,tile,size", [(4, 1, 32, (45, 59)), (2, 2, 64, (90, 118)), (1, 4, 128, (150, 170))]
)
def test_tiled_equals_whole_for_rrdbnet_with_pixel_unshuffle(
    scale: int, multiple: int, tile: int, size: tuple[int, int]
) -> None:
    # BasicSR's x2 / x1 RRDBNet fold the input with pixel-unshuffle: only shift-equivariant by
    # 2 / 4 pixels, so tiles must start on that grid. Default PyTorch init: outputs depend on the input.
    net = build("rrdbnet", scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    d = ModelDescriptor.from_net(net.eval(), arch="rrdbnet", kwargs={}, value_range=(0.0, 1.0))
    assert d.size_multiple == multiple
    x = torch.rand(3, *size)  # not multiples of 2 or 4: padded like the whole-image run
    expected = whole_reference(net, x, scale=scale, multiple=multiple)
    engine = Engine(d, tile=tile)  # default overlap: 16 px at the trunk's resolution
    rows, cols = engine.plan(*size, tile)
    assert rows.count > 1 and cols.count > 1
    out = engine(x)
    torch.testing.assert_close(out, expected, atol=2e-4, rtol=0)


def test_pixels_tiled_within_one_level_of_whole_at_default_overlap() -> None:
    net = ConvSR(2).eval()
    pixels = smooth_rgb(70, 90)
    x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    expected = (
        (whole_reference(net, x, scale=2, multiple=1).clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
    )
    out = Engine(descriptor(net, scale=2), tile=32)(pixels)  # default overlap
    assert out.dtype == np.uint8 and out.shape == (140, 180, 3)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_whole_image_mode_pads_to_the_multiple_and_crops() -> None:
    net = ConvSR(1).eval()
    x = torch.rand(3, 30, 41)
    expected = whole_reference(net, x, scale=1, multiple=8)
    out = Engine(descriptor(net, scale=1, multiple=8), tile=0)(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_image_smaller_than_min_size_is_padded() -> None:
    net = ConvSR(2).eval()
    out = Engine(descriptor(net, scale=2, multiple=4, min_size=16), tile=0)(torch.rand(3, 5, 7))
    assert out.shape == (3, 10, 14)


# ------------------------------------------------------------------------------- streaming memory


def test_rows_are_written_once_in_order_while_tiles_still_run() -> None:
    """Finished rows leave the float band before the last tile runs: the band is not the image."""
    plan_rows = plan_axis(200, tile=48, overlap=16)
    plan_cols = plan_axis(60, tile=48, overlap=16)
    calls = {"tiles": 0}
    written: list[tuple[int, int, int]] = []  # (first row, rows, tiles run so far)

    def run(x: torch.Tensor) -> torch.Tensor:
        calls["tiles"] += x.shape[0]
        return x.repeat_interleave(2, 2).repeat_interleave(2, 3)

    def read(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        return torch.ones(3, y1 - y0, x1 - x0)

    def write(y0: int, rows: torch.Tensor) -> None:
        written.append((y0, rows.shape[1], calls["tiles"]))
        torch.testing.assert_close(rows, torch.ones_like(rows))  # blended ones stay ones

    tiled_forward(run, read, write, rows=plan_rows, cols=plan_cols, scale=2, out_channels=3, batch=1)
    total = plan_rows.count * plan_cols.count
    starts = [w[0] for w in written]
    assert starts[0] == 0 and sum(w[1] for w in written) == 400
    assert all(a + n == b for (a, n, _), b in zip(written, starts[1:], strict=False))
    assert written[0][2] < total / 2
    assert max(n for _, n, _ in written) <= plan_rows.tile * 2


# ------------------------------------------------------------------------------- OOM and errors


class OomAboveSize(nn.Module):
    """Nearest x2 upscaling that raises torch.OutOfMemoryError for tiles over ``limit`` pixels."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.sizes: list[tuple[int, int]] = []
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[2:]))
        if x.shape[2] * x.shape[3] > self.limit:
            raise torch.OutOfMemoryError("fake: out of memory")
        return F.interpolate(x, scale_factor=2, mode="nearest") * self.weight


def test_out_of_memory_halves_the_tile_and_retries(caplog: pytest.LogCaptureFixture) -> None:
    net = OomAboveSize(limit=48 * 48)
    pixels = smooth_rgb(100, 90)
    with caplog.at_level(logging.WARNING, logger="img2img.inference"):
        out = Engine(descriptor(net, scale=2), tile=128, overlap=8)(pixels)
    np.testing.assert_array_equal(out, pixels.repeat(2, axis=0).repeat(2, axis=1))
    assert max(h * w for h, w in net.sizes) > 48 * 48  # it did fail first...
    assert "out of memory" in caplog.text and "retrying" in caplog.text  # ...and said so


def test_out_of_memory_at_the_smallest_tile_is_an_inference_error() -> None:
    with pytest.raises(InferenceError, match="out of memory"):
        Engine(descriptor(OomAboveSize(limit=4), scale=2), tile=64, overlap=8)(smooth_rgb(64, 64))


class FailsOnSecondTile(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise ValueError("boom in tile 2")
        return x


def test_an_error_inside_a_tile_propagates() -> None:
    with pytest.raises(ValueError, match="boom in tile 2"):
        Engine(descriptor(FailsOnSecondTile(), scale=1), tile=32, overlap=8)(smooth_rgb(64, 64))


def test_compiled_shapes_stay_constant_with_a_padded_last_batch() -> None:
    """With compile the tile side is fixed and the last batch padded: one input shape throughout."""
    shapes: list[tuple[int, ...]] = []

    class Recorder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(x.shape))
            return x

    engine = Engine(descriptor(Recorder(), scale=1), tile=32, overlap=8, batch=3, workers=1)
    engine.fixed_shape = True  # the geometry of compile mode, without paying for a compile here
    x = torch.rand(3, 70, 50)
    torch.testing.assert_close(engine(x), x)
    assert len(set(shapes)) == 1 and shapes[0] == (3, 3, 32, 32)


def test_auto_tile_from_free_memory() -> None:
    from img2img.inference.tile_policy import tile_for_memory

    # Half of 8 GiB for a batch of 4 at 16 KiB per pixel: sqrt(2**32 / 2**16) = 256 px.
    assert tile_for_memory(free_bytes=8 * 2**30, bytes_per_pixel=16 * 2**10, batch=4, multiple=4) == 256
    assert tile_for_memory(free_bytes=8 * 2**30, bytes_per_pixel=16 * 2**10, batch=4, multiple=96) == 192
    assert tile_for_memory(free_bytes=2**20, bytes_per_pixel=2**20, batch=1, multiple=1) == 128  # floor
    assert tile_for_memory(free_bytes=2**40, bytes_per_pixel=1, batch=1, multiple=1) == 2048  # ceiling


def test_auto_tile_on_cpu_by_model() -> None:
    conv = Engine(descriptor(ConvSR(4), scale=4))
    assert conv.overlap == 16 and conv.resolve_tile(1000, 1000) == 192
    resnet = Engine(
        ModelDescriptor.from_net(
            build("resnet", ngf=4, n_blocks=1), arch="resnet", kwargs={}, value_range=(-1, 1)
        )
    )
    assert resnet.overlap == 64
    assert resnet.resolve_tile(1000, 1000) == 0  # InstanceNorm on a CPU: whole image while it fits
    assert resnet.resolve_tile(3000, 3000) == 256  # else tiles of at least 4 overlaps
    unet = Engine(ModelDescriptor.from_net(build("unet", ngf=4), arch="unet", kwargs={}, value_range=(-1, 1)))
    assert unet.resolve_tile(3000, 3000) == 0  # receptive field as large as its input
