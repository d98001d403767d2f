"""img2img.image_io: formats, depths, channels, orientation, ICC, errors, atomic writes, tensor edges.

Expected values come from independent writers/readers (Pillow, tifffile, plain OpenCV calls) or from
numpy formulas, never from image_io itself, except where a round trip is the property under test.
"""

from __future__ import annotations

import io
import os
import pickle
import stat
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import tifffile
import torch
from PIL import ImageCms, ImageOps

from img2img.image_io import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    Image,
    ImageIOError,
    is_image_path,
    pixels_to_tensor,
    read_image,
    resize_image,
    resize_pixels,
    tensor_to_pixels,
    write_image,
)
from tests.helpers import smooth_rgb

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
# Only the header's colour-space signature matters to image_io: an sRGB profile relabelled GRAY/CMYK.
GRAY_ICC = SRGB_ICC[:16] + b"GRAY" + SRGB_ICC[20:]
CMYK_ICC = SRGB_ICC[:16] + b"CMYK" + SRGB_ICC[20:]


def make_image(layout: str, dtype=np.uint8, height: int = 20, width: int = 28, seed: int = 0) -> Image:
    """gray | rgb | rgba | gray_alpha test images with smooth content and a distinct alpha ramp."""
    rgb = smooth_rgb(height, width, seed=seed, dtype=dtype)
    top = np.iinfo(dtype).max
    alpha = (np.linspace(0, top, height * width).reshape(height, width) + seed).astype(dtype)
    alpha[0, 0] = 0  # fully transparent pixel with a non-zero colour: premultiplication would show
    colour = rgb[:, :, 1:2] if layout.startswith("gray") else rgb
    return Image(colour, alpha if layout in ("rgba", "gray_alpha") else None)


def noise_free_rgb(height: int, width: int) -> np.ndarray:
    """Smooth (H, W, 3) uint8 without smooth_rgb's pixel noise, so lossy codecs stay within a level or two."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([0.2 + 0.6 * x, 0.5 + 0.3 * np.sin(3 * y), 0.8 - 0.5 * x * y], axis=2)
    return np.round(img * 255).astype(np.uint8)


def to_uint8_reference(arr: np.ndarray) -> np.ndarray:
    return np.round(arr.astype(np.float64) * 255 / 65535).astype(np.uint8)


def pil_bytes(im: PIL.Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def turn(a: np.ndarray, orientation: int) -> np.ndarray:
    """What EXIF orientation k asks a viewer to do to the stored pixels, in np.rot90/np.flip terms."""
    return {
        1: lambda x: x,
        2: lambda x: np.flip(x, 1),
        3: lambda x: np.rot90(x, 2),
        4: lambda x: np.flip(x, 0),
        5: lambda x: np.flip(np.rot90(x, -1), 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: np.flip(np.rot90(x, 1), 1),
        8: lambda x: np.rot90(x, 1),
    }[orientation](a)


def exif_bytes(orientation: int) -> bytes:
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# --------------------------------------------------------------------------- basics


def test_constants_and_is_image_path():
    assert SUPPORTED_SUFFIXES == {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
    assert DEFAULT_MAX_PIXELS >= 100_000_000
    assert is_image_path("a/b/photo.JPG") and is_image_path(Path("x.TiFf")) and is_image_path("y.webp")
    assert (
        not is_image_path("anim.gif") and not is_image_path(".x.png.1a2b.tmp") and not is_image_path("README")
    )


def test_image_record_validates_and_reports_shape():
    img = make_image("rgba", np.uint16, height=5, width=7)
    assert (img.bit_depth, img.height, img.width, img.channels) == (16, 5, 7, 3)
    assert make_image("gray").channels == 1 and make_image("gray").bit_depth == 8
    with pytest.raises(ValueError, match="pixels"):
        Image(np.zeros((4, 4), np.uint8), None)  # must be (H, W, C)
    with pytest.raises(ValueError, match="pixels"):
        Image(np.zeros((4, 4, 4), np.uint8), None)  # alpha travels separately
    with pytest.raises(ValueError, match="uint8 or uint16"):
        Image(np.zeros((4, 4, 3), np.float32), None)
    with pytest.raises(ValueError, match="alpha"):
        Image(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint16))
    strided = Image(np.zeros((4, 6, 3), np.uint8)[:, ::2], None)
    assert strided.pixels.flags.c_contiguous


def test_error_names_file_and_pickles(tmp_path):
    err = ImageIOError(tmp_path / "a.png", "no such file")
    assert str(err) == f"{tmp_path / 'a.png'}: no such file"
    assert err.path == tmp_path / "a.png" and err.reason == "no such file"
    again = pickle.loads(pickle.dumps(err))  # DataLoader workers send errors between processes
    assert str(again) == str(err) and again.path == err.path and again.reason == err.reason


# --------------------------------------------------------------------------- round trips


LOSSLESS_CASES = [
    (suffix, dtype, layout)
    for suffix in (".png", ".tif")
    for dtype in (np.uint8, np.uint16)
    for layout in ("gray", "rgb", "rgba", "gray_alpha")
    # 16-bit gray+alpha TIFF is stored as RGBA: test_tiff_16bit_gray_alpha_is_stored_as_rgba
    if (suffix, dtype, layout) != (".tif", np.uint16, "gray_alpha")
]


@pytest.mark.parametrize("suffix, dtype, layout", LOSSLESS_CASES)
def test_lossless_round_trip(tmp_path, suffix, dtype, layout):
    img = make_image(layout, dtype, seed=3)
    path = tmp_path / f"img{suffix}"
    write_image(path, img)
    back = read_image(path)
    assert back.pixels.dtype == dtype and back.pixels.shape == img.pixels.shape
    np.testing.assert_array_equal(back.pixels, img.pixels)
    if img.alpha is None:
        assert back.alpha is None
    else:
        np.testing.assert_array_equal(back.alpha, img.alpha)
    assert back.path == path and back.pixels.flags.c_contiguous
    assert back.alpha is None or back.alpha.flags.c_contiguous


def test_tiff_16bit_gray_alpha_is_stored_as_rgba(tmp_path):
    img = make_image("gray_alpha", np.uint16)
    write_image(tmp_path / "ga.tif", img)
    back = read_image(tmp_path / "ga.tif")
    np.testing.assert_array_equal(back.pixels, np.repeat(img.pixels, 3, axis=2))
    np.testing.assert_array_equal(back.alpha, img.alpha)


@pytest.mark.parametrize("layout", ["gray", "rgb", "rgba"])
def test_bmp_round_trip_8bit(tmp_path, layout):
    img = make_image(layout)
    write_image(tmp_path / "x.bmp", img)
    back = read_image(tmp_path / "x.bmp")
    np.testing.assert_array_equal(back.pixels, img.pixels)
    assert (back.alpha is None) == (img.alpha is None)
    if img.alpha is not None:
        np.testing.assert_array_equal(back.alpha, img.alpha)


def test_bmp_with_unused_fourth_byte_has_no_alpha(tmp_path):
    bgra = np.dstack([smooth_rgb(8, 9)[:, :, ::-1], np.zeros((8, 9), np.uint8)])
    ok, buf = cv2.imencode(".bmp", bgra)
    assert ok
    (tmp_path / "x.bmp").write_bytes(buf.tobytes())
    back = read_image(tmp_path / "x.bmp")
    assert back.alpha is None
    np.testing.assert_array_equal(back.pixels, smooth_rgb(8, 9))


def test_jpeg_round_trip_is_close(tmp_path):
    img = Image(noise_free_rgb(48, 64), None)
    write_image(tmp_path / "x.jpg", img, quality=95)
    back = read_image(tmp_path / "x.jpg")
    assert back.pixels.shape == img.pixels.shape and back.pixels.dtype == np.uint8
    err = np.abs(back.pixels.astype(int) - img.pixels.astype(int))
    assert err.mean() < 2.0
    low = tmp_path / "low.jpg"
    write_image(low, img, quality=10)
    assert low.stat().st_size < (tmp_path / "x.jpg").stat().st_size  # quality reaches the encoder


def test_jpeg_keeps_gray_and_drops_alpha(tmp_path):
    img = Image(noise_free_rgb(32, 32), make_image("rgba", height=32, width=32).alpha)
    write_image(tmp_path / "a.jpg", img)
    back = read_image(tmp_path / "a.jpg")
    assert back.alpha is None and back.pixels.shape == (32, 32, 3)
    assert np.abs(back.pixels.astype(int) - img.pixels.astype(int)).mean() < 2.0
    write_image(tmp_path / "g.jpg", make_image("gray_alpha", height=32, width=32))
    gray = read_image(tmp_path / "g.jpg")
    assert gray.pixels.shape == (32, 32, 1) and gray.alpha is None


def test_16bit_to_8bit_formats_rounds(tmp_path):
    values = np.array([0, 128, 129, 385, 386, 32767, 32896, 65407, 65408, 65535], np.uint16)
    pixels = np.repeat(values[None, :, None], 3, axis=2)
    write_image(tmp_path / "x.bmp", Image(pixels, None))  # BMP is lossless: the conversion is exact
    back = read_image(tmp_path / "x.bmp")
    assert back.pixels.dtype == np.uint8
    np.testing.assert_array_equal(back.pixels, to_uint8_reference(pixels))

    img16 = Image(noise_free_rgb(48, 64).astype(np.uint16) * 257 + 100, None)
    write_image(tmp_path / "x.jpg", img16)
    jpeg = read_image(tmp_path / "x.jpg")
    assert jpeg.pixels.dtype == np.uint8 and jpeg.bit_depth == 8
    assert np.abs(jpeg.pixels.astype(int) - to_uint8_reference(img16.pixels).astype(int)).mean() < 2.0


def test_webp_keeps_alpha_at_8bit_and_stores_gray_as_rgb(tmp_path):
    img = Image(noise_free_rgb(32, 40).astype(np.uint16) * 257, make_image("rgba", np.uint16, 32, 40).alpha)
    write_image(tmp_path / "x.webp", img, quality=95)
    back = read_image(tmp_path / "x.webp")
    assert back.pixels.dtype == np.uint8 and back.alpha is not None
    assert np.abs(back.pixels.astype(int) - to_uint8_reference(img.pixels).astype(int)).mean() < 3.0
    assert np.abs(back.alpha.astype(int) - to_uint8_reference(img.alpha).astype(int)).max() <= 2
    write_image(tmp_path / "g.webp", make_image("gray", height=32, width=40))
    assert read_image(tmp_path / "g.webp").pixels.shape == (32, 40, 3)


# --------------------------------------------------------------------------- other writers / readers


def test_channel_order_matches_pillow_both_ways(tmp_path):
    rgba = np.dstack([smooth_rgb(12, 10, seed=5), np.arange(120, dtype=np.uint8).reshape(12, 10)])
    (tmp_path / "pil.png").write_bytes(pil_bytes(PIL.Image.fromarray(rgba), "PNG"))
    ours = read_image(tmp_path / "pil.png")
    np.testing.assert_array_equal(ours.pixels, rgba[:, :, :3])
    np.testing.assert_array_equal(ours.alpha, rgba[:, :, 3])

    write_image(tmp_path / "ours.png", Image(rgba[:, :, :3], rgba[:, :, 3]))
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "ours.png")), rgba)
    write_image(tmp_path / "ours.tif", Image(rgba[:, :, :3], rgba[:, :, 3]))
    with PIL.Image.open(tmp_path / "ours.tif") as im:  # alpha is declared (ExtraSamples), not unlabelled
        assert im.mode == "RGBA" and im.tag_v2.get(338) == (2,)
        np.testing.assert_array_equal(np.asarray(im), rgba)


def test_16bit_channel_order_and_values_match_opencv_and_tifffile(tmp_path):
    img = make_image("rgba", np.uint16, seed=7)
    write_image(tmp_path / "x.png", img)
    bgra = cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgra[:, :, 2::-1], img.pixels)
    np.testing.assert_array_equal(bgra[:, :, 3], img.alpha)
    rgba = np.dstack([img.pixels, img.alpha])
    tifffile.imwrite(tmp_path / "tf.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    back = read_image(tmp_path / "tf.tif")
    np.testing.assert_array_equal(back.pixels, img.pixels)
    np.testing.assert_array_equal(back.alpha, img.alpha)


def test_third_party_8bit_rgba_tiff_is_not_premultiplied(tmp_path):
    img = make_image("rgba")
    tifffile.imwrite(
        tmp_path / "t.tif", np.dstack([img.pixels, img.alpha]), photometric="rgb", extrasamples=["unassalpha"]
    )
    back = read_image(tmp_path / "t.tif")
    np.testing.assert_array_equal(back.pixels, img.pixels)  # OpenCV alone would premultiply these
    np.testing.assert_array_equal(back.alpha, img.alpha)


def test_own_gray_alpha_png_is_a_standard_png(tmp_path):
    img8 = make_image("gray_alpha")
    write_image(tmp_path / "ga8.png", img8)
    with PIL.Image.open(tmp_path / "ga8.png") as im:
        assert im.mode == "LA"
        np.testing.assert_array_equal(np.asarray(im), np.dstack([img8.pixels, img8.alpha]))
    img16 = make_image("gray_alpha", np.uint16)
    write_image(tmp_path / "ga16.png", img16)
    bgra = cv2.imread(str(tmp_path / "ga16.png"), cv2.IMREAD_UNCHANGED)
    assert bgra.dtype == np.uint16
    np.testing.assert_array_equal(bgra[:, :, 0], img16.pixels[:, :, 0])
    np.testing.assert_array_equal(bgra[:, :, 3], img16.alpha)


def test_pillow_written_modes(tmp_path):
    gray = smooth_rgb(10, 12)[:, :, 0]
    (tmp_path / "l.png").write_bytes(pil_bytes(PIL.Image.fromarray(gray), "PNG"))
    np.testing.assert_array_equal(read_image(tmp_path / "l.png").pixels, gray[:, :, None])

    gray16 = gray.astype(np.uint16) * 257 + 3
    (tmp_path / "i16.png").write_bytes(pil_bytes(PIL.Image.fromarray(gray16), "PNG"))
    back16 = read_image(tmp_path / "i16.png")
    assert back16.pixels.dtype == np.uint16
    np.testing.assert_array_equal(back16.pixels, gray16[:, :, None])

    bits = (gray > 128).astype(np.uint8) * 255
    (tmp_path / "one.png").write_bytes(pil_bytes(PIL.Image.fromarray(bits).convert("1"), "PNG"))
    np.testing.assert_array_equal(read_image(tmp_path / "one.png").pixels, bits[:, :, None])

    rgb = smooth_rgb(10, 12, seed=2)
    palette = PIL.Image.fromarray(rgb).quantize(16)
    expected = np.asarray(palette.convert("RGB"))
    (tmp_path / "p.png").write_bytes(pil_bytes(palette, "PNG"))
    pal = read_image(tmp_path / "p.png")
    assert pal.alpha is None
    np.testing.assert_array_equal(pal.pixels, expected)
    (tmp_path / "pt.png").write_bytes(pil_bytes(palette, "PNG", transparency=0))
    palt = read_image(tmp_path / "pt.png")
    np.testing.assert_array_equal(palt.pixels, expected)
    np.testing.assert_array_equal(palt.alpha, np.where(np.asarray(palette) == 0, 0, 255))

    la = np.dstack([gray, 255 - gray])
    (tmp_path / "la.tif").write_bytes(pil_bytes(PIL.Image.fromarray(la), "TIFF"))
    la_back = read_image(tmp_path / "la.tif")
    np.testing.assert_array_equal(la_back.pixels, gray[:, :, None])
    np.testing.assert_array_equal(la_back.alpha, 255 - gray)


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_comes_out_rgb_without_alpha(tmp_path, fmt):
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[:4, :4], rgb[:4, 4:8], rgb[:4, 8:], rgb[4:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)
    cmyk = PIL.Image.fromarray(rgb).convert("CMYK")
    path = tmp_path / f"cmyk.{fmt.lower()}"
    path.write_bytes(pil_bytes(cmyk, fmt, quality=100))
    back = read_image(path)
    assert back.alpha is None and back.pixels.shape == (8, 12, 3)
    assert np.abs(back.pixels.astype(int) - rgb.astype(int)).max() <= 3


# --------------------------------------------------------------------------- resizing


def test_resize_image_keeps_layout_and_metadata_and_uses_the_named_filters():
    gray = Image(pixels=np.full((4, 6, 1), 100, np.uint8), alpha=np.full((4, 6), 7, np.uint8), dpi=(300.0, 300.0))
    out = resize_image(gray, (8, 12))
    assert out.pixels.shape == (8, 12, 1) and out.alpha.shape == (8, 12) and out.dpi == (300.0, 300.0)
    assert (out.pixels == 100).all() and (out.alpha == 7).all()
    rgb = smooth_rgb(30, 40, dtype=np.uint16)
    np.testing.assert_array_equal(resize_pixels(rgb, (15, 20)), cv2.resize(rgb, (20, 15), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(resize_pixels(rgb, (45, 60)), cv2.resize(rgb, (60, 45), interpolation=cv2.INTER_CUBIC))
    assert resize_image(gray, (4, 6)) is gray
    with pytest.raises(ValueError, match="at least 1 pixel"):
        resize_pixels(rgb, (0, 5))


# --------------------------------------------------------------------------- EXIF and DPI


def camera_exif(orientation: int) -> bytes:
    """An EXIF block as a camera writes one: orientation, make, model (Pillow's serialisation)."""
    exif = PIL.Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0110] = orientation, "TestMake", "Model 7"
    return exif.tobytes()


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_exif_carried_with_orientation_reset(tmp_path, suffix):
    source = PIL.Image.fromarray(smooth_rgb(20, 32))
    (tmp_path / "in.jpg").write_bytes(pil_bytes(source, "JPEG", exif=camera_exif(6)))
    img = read_image(tmp_path / "in.jpg")
    assert img.exif is not None and img.pixels.shape[:2] == (32, 20)  # turned upright on reading
    write_image(tmp_path / f"out{suffix}", img)
    with PIL.Image.open(tmp_path / f"out{suffix}") as im:  # an independent reader
        tags = dict(im.getexif())
        assert im.size == (20, 32)
    assert tags[0x010F] == "TestMake" and tags[0x0110] == "Model 7"
    assert tags[0x0112] == 1  # upright pixels: a viewer must not turn them again
    back = read_image(tmp_path / f"out{suffix}")
    np.testing.assert_array_equal(back.pixels.shape, img.pixels.shape)


def test_exif_orientation_set_by_a_caller_is_still_written_as_1(tmp_path):
    img = make_image("rgb")
    img.exif = camera_exif(8)[6:]  # TIFF-structured bytes, as Image.exif holds them
    write_image(tmp_path / "x.png", img)
    with PIL.Image.open(tmp_path / "x.png") as im:
        assert im.getexif()[0x0112] == 1
    np.testing.assert_array_equal(read_image(tmp_path / "x.png").pixels, img.pixels)


def test_unreadable_exif_is_dropped_not_fatal(tmp_path):
    img = make_image("rgb")
    img.exif = b"not a TIFF structure"
    write_image(tmp_path / "x.jpg", img)
    with PIL.Image.open(tmp_path / "x.jpg") as im:
        assert "exif" not in im.info


@pytest.mark.parametrize(
    ("suffix", "layout"),
    [(".jpg", "rgb"), (".png", "rgb"), (".png", "gray_alpha"), (".tif", "rgb"), (".tif", "gray_alpha"),
     (".bmp", "rgb")],
)
def test_dpi_carried(tmp_path, suffix, layout):
    img = make_image(layout)
    img.dpi = (300.0, 150.0)
    write_image(tmp_path / f"x{suffix}", img)
    with PIL.Image.open(tmp_path / f"x{suffix}") as im:  # an independent reader
        np.testing.assert_allclose([float(v) for v in im.info["dpi"]], (300, 150), atol=0.05)  # PNG/BMP store whole pixels per metre
    np.testing.assert_allclose(read_image(tmp_path / f"x{suffix}").dpi, (300, 150), atol=0.05)
    np.testing.assert_array_equal(read_image(tmp_path / f"x{suffix}").pixels.shape, img.pixels.shape)


def test_dpi_follows_a_quarter_turn(tmp_path):
    source = PIL.Image.fromarray(smooth_rgb(20, 32))
    (tmp_path / "in.jpg").write_bytes(pil_bytes(source, "JPEG", exif=camera_exif(6), dpi=(300, 150)))
    assert read_image(tmp_path / "in.jpg").dpi == (150.0, 300.0)


def test_no_exif_or_dpi_read_from_a_plain_file(tmp_path):
    (tmp_path / "p.png").write_bytes(pil_bytes(PIL.Image.fromarray(smooth_rgb(8, 8)), "PNG"))
    img = read_image(tmp_path / "p.png")
    assert img.exif is None and img.dpi is None


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path, orientation):
    stored = smooth_rgb(24, 40, seed=1)
    stored[:6, :6] = (255, 0, 0)  # a red top-left corner makes a wrong turn obvious
    jpeg = PIL.Image.fromarray(stored)
    (tmp_path / "o1.jpg").write_bytes(pil_bytes(jpeg, "JPEG", quality=95, exif=exif_bytes(1)))
    (tmp_path / "ok.jpg").write_bytes(pil_bytes(jpeg, "JPEG", quality=95, exif=exif_bytes(orientation)))
    base = read_image(tmp_path / "o1.jpg").pixels  # the same compressed data decodes identically
    got = read_image(tmp_path / "ok.jpg").pixels
    np.testing.assert_array_equal(got, turn(base, orientation))
    assert got.flags.c_contiguous
    if orientation in (5, 6, 7, 8):
        assert got.shape[:2] == (40, 24)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_with_alpha_matches_pillow(tmp_path, orientation):
    rgba = np.dstack([smooth_rgb(9, 14, seed=4), np.arange(126, dtype=np.uint8).reshape(9, 14)])
    path = tmp_path / "o.png"
    path.write_bytes(pil_bytes(PIL.Image.fromarray(rgba), "PNG", exif=exif_bytes(orientation)))
    got = read_image(path)
    with PIL.Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(got.pixels, expected[:, :, :3])
    np.testing.assert_array_equal(got.alpha, expected[:, :, 3])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_tag(tmp_path, orientation):
    # 16-bit RGB and 8-bit gray go through OpenCV, 8-bit RGBA through Pillow (plain and via libtiff):
    # each decoder may turn TIFFs itself, and the result must be turned exactly once.
    tag = [(274, "H", 1, orientation, True)]
    rgb16 = smooth_rgb(9, 14, seed=6, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", rgb16, photometric="rgb", extratags=tag)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif").pixels, turn(rgb16, orientation))
    gray8 = rgb16[:, :, :1].astype(np.uint8)
    tifffile.imwrite(tmp_path / "g.tif", gray8[:, :, 0], photometric="minisblack", extratags=tag)
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif").pixels, turn(gray8, orientation))
    rgba8 = np.dstack([smooth_rgb(9, 14, seed=6), np.arange(126, dtype=np.uint8).reshape(9, 14)])
    for compression in (None, "zlib"):
        path = tmp_path / f"b_{compression}.tif"
        tifffile.imwrite(
            path,
            rgba8,
            photometric="rgb",
            extrasamples=["unassalpha"],
            compression=compression,
            extratags=tag,
        )
        back = read_image(path)
        np.testing.assert_array_equal(back.pixels, turn(rgba8[:, :, :3], orientation))
        np.testing.assert_array_equal(back.alpha, turn(rgba8[:, :, 3], orientation))


def test_exif_orientation_webp(tmp_path):
    rgb = smooth_rgb(9, 14, seed=8)
    path = tmp_path / "o.webp"
    path.write_bytes(pil_bytes(PIL.Image.fromarray(rgb), "WEBP", lossless=True, exif=exif_bytes(6)))
    np.testing.assert_array_equal(read_image(path).pixels, turn(rgb, 6))


# --------------------------------------------------------------------------- ICC profiles


@pytest.mark.parametrize(
    "suffix, dtype, layout",
    [
        (".png", np.uint8, "rgb"),
        (".png", np.uint16, "rgba"),
        (".jpg", np.uint8, "rgb"),
        (".webp", np.uint8, "rgba"),
        (".tif", np.uint8, "rgb"),
        (".tif", np.uint8, "rgba"),
        (".tif", np.uint16, "rgb"),
        (".tif", np.uint16, "rgba"),
    ],
)
def test_icc_profile_carried_through(tmp_path, suffix, dtype, layout):
    img = make_image(layout, dtype)
    img.icc_profile = SRGB_ICC
    path = tmp_path / f"icc{suffix}"
    write_image(path, img)
    with PIL.Image.open(path) as im:  # an independent reader finds the profile in the file
        assert im.info.get("icc_profile") == SRGB_ICC
    back = read_image(path)
    assert back.icc_profile == SRGB_ICC
    if suffix in (".png", ".tif"):  # and the profile costs no depth or channel
        np.testing.assert_array_equal(back.pixels, img.pixels)
        np.testing.assert_array_equal(back.alpha, img.alpha)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_gray_icc_profile_carried_through(tmp_path, suffix):
    img = make_image("gray" if suffix == ".jpg" else "gray_alpha")
    img.icc_profile = GRAY_ICC
    write_image(tmp_path / f"g{suffix}", img)
    with PIL.Image.open(tmp_path / f"g{suffix}") as im:
        assert im.info.get("icc_profile") == GRAY_ICC
    assert read_image(tmp_path / f"g{suffix}").icc_profile == GRAY_ICC


def test_icc_profile_dropped_where_it_cannot_apply(tmp_path):
    img = make_image("rgb")
    img.icc_profile = SRGB_ICC
    write_image(tmp_path / "x.bmp", img)  # OpenCV's BMP encoder cannot embed one
    assert read_image(tmp_path / "x.bmp").icc_profile is None
    gray = make_image("gray")
    gray.icc_profile = GRAY_ICC
    write_image(tmp_path / "g.webp", gray)  # WebP stores gray as RGB: a gray profile would lie
    assert read_image(tmp_path / "g.webp").icc_profile is None
    (tmp_path / "cmyk.jpg").write_bytes(
        pil_bytes(PIL.Image.fromarray(smooth_rgb(8, 8)), "JPEG", icc_profile=CMYK_ICC)
    )
    assert read_image(tmp_path / "cmyk.jpg").icc_profile is None  # it does not describe RGB pixels


# --------------------------------------------------------------------------- bad input


def test_missing_directory_and_empty_files(tmp_path):
    with pytest.raises(ImageIOError, match="no such file") as err:
        read_image(tmp_path / "nope.png")
    assert err.value.path == tmp_path / "nope.png"
    with pytest.raises(ImageIOError, match="directory"):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageIOError, match="empty file") as err:
        read_image(tmp_path / "empty.png")
    assert str(err.value).startswith(str(tmp_path / "empty.png"))


def test_non_image_files(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture\n" * 20)
    with pytest.raises(ImageIOError, match="not a recognised image"):
        read_image(tmp_path / "notes.png")
    (tmp_path / "anim.png").write_bytes(pil_bytes(PIL.Image.fromarray(smooth_rgb(8, 8)), "GIF"))
    with pytest.raises(ImageIOError, match="not a recognised image"):
        read_image(tmp_path / "anim.png")
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((8, 8), np.float32))
    with pytest.raises(ImageIOError, match="sample type float32"):
        read_image(tmp_path / "float.tif")
    tifffile.imwrite(tmp_path / "float3.tif", np.zeros((8, 8, 3), np.float32), photometric="rgb")
    with pytest.raises(ImageIOError, match="unsupported"):  # Pillow cannot parse this layout at all
        read_image(tmp_path / "float3.tif")


def _encoded(suffix: str) -> bytes:
    rgb = smooth_rgb(48, 64, seed=9)
    if suffix == ".webp":
        return pil_bytes(PIL.Image.fromarray(rgb), "WEBP", quality=90)
    ok, buf = cv2.imencode(suffix, rgb[:, :, ::-1].copy())
    assert ok
    return buf.tobytes()


@pytest.mark.filterwarnings(
    "ignore:(Corrupt EXIF data|Truncated File Read):UserWarning"
)  # Pillow, on cut TIFFs
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
@pytest.mark.parametrize("keep", [0.5, 0.9, -2, 20])
def test_truncated_files(tmp_path, suffix, keep):
    data = _encoded(suffix)
    cut = data[:keep] if keep in (-2, 20) else data[: int(len(data) * keep)]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(cut)
    with pytest.raises(ImageIOError) as err:
        read_image(path)
    assert err.value.path == path
    assert any(word in err.value.reason for word in ("truncated", "corrupt")), err.value.reason


def test_corrupt_files(tmp_path):
    png = bytearray(_encoded(".png"))
    idat = png.index(b"IDAT")
    png[idat + 40] ^= 0xFF  # the chunk's CRC no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(png))
    with pytest.raises(ImageIOError, match="corrupt"):
        read_image(tmp_path / "crc.png")
    jpeg = bytearray(_encoded(".jpg"))
    jpeg[4:80] = b"\x00" * 76  # garbage where the first segments should be
    (tmp_path / "bad.jpg").write_bytes(bytes(jpeg))
    with pytest.raises(ImageIOError, match="corrupt|truncated"):
        read_image(tmp_path / "bad.jpg")


def _jpeg_variants() -> dict[str, bytes]:
    rgb = smooth_rgb(48, 64, seed=9)
    ok, restarts = cv2.imencode(".jpg", rgb[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert ok
    return {
        "baseline": _encoded(".jpg"),
        "progressive": pil_bytes(PIL.Image.fromarray(rgb), "JPEG", progressive=True),
        "restart markers": restarts.tobytes(),
        "exif and icc": pil_bytes(PIL.Image.fromarray(rgb), "JPEG", exif=exif_bytes(1), icc_profile=SRGB_ICC),
    }


@pytest.mark.parametrize("variant", ["baseline", "progressive", "restart markers", "exif and icc"])
def test_truncated_jpeg_refused_even_by_a_lenient_decoder(tmp_path, monkeypatch, variant):
    # Some OpenCV/libjpeg builds fill a cut-off JPEG with grey and report success; the check must not
    # depend on the decoder noticing.
    data = _jpeg_variants()[variant]
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: np.full((48, 64, 3), 128, np.uint8))
    (tmp_path / "whole.jpg").write_bytes(data)
    assert read_image(tmp_path / "whole.jpg").pixels.shape == (48, 64, 3)
    for keep in (len(data) // 3, len(data) * 2 // 3, len(data) - 2):
        (tmp_path / "cut.jpg").write_bytes(data[:keep])
        with pytest.raises(ImageIOError, match="truncated"):
            read_image(tmp_path / "cut.jpg")


def test_complete_jpeg_with_trailing_bytes_reads(tmp_path):
    (tmp_path / "t.jpg").write_bytes(_encoded(".jpg") + b"\x00" * 10 + b"trailer")
    assert read_image(tmp_path / "t.jpg").pixels.shape == (48, 64, 3)


def test_unicode_paths(tmp_path):
    folder = tmp_path / "папка_フォルダ"
    path = folder / "фото_写真.png"
    img = make_image("rgba")
    write_image(path, img)
    assert os.listdir(folder) == ["фото_写真.png"]
    back = read_image(path)
    np.testing.assert_array_equal(back.pixels, img.pixels)
    (folder / "ähnlich €.jpg").write_bytes(pil_bytes(PIL.Image.fromarray(smooth_rgb(8, 8)), "JPEG"))
    assert read_image(folder / "ähnlich €.jpg").pixels.shape == (8, 8, 3)


# --------------------------------------------------------------------------- decompression bombs


def test_max_pixels_refused_with_counts_and_how_to_raise(tmp_path):
    write_image(tmp_path / "x.png", make_image("rgb", height=30, width=40))
    with pytest.raises(ImageIOError) as err:
        read_image(tmp_path / "x.png", max_pixels=1000)
    assert "1,200" in err.value.reason and "1,000" in err.value.reason and "max_pixels" in err.value.reason
    assert read_image(tmp_path / "x.png", max_pixels=1200).pixels.shape == (30, 40, 3)
    assert read_image(tmp_path / "x.png", max_pixels=None).pixels.shape == (30, 40, 3)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_bomb_is_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(ImageIOError, match="10,000,000,000 pixels"):
        read_image(tmp_path / "bomb.png")


def test_pillow_global_limit_neither_applies_nor_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 1,200 pixels
    write_image(tmp_path / "x.png", make_image("rgb", height=30, width=40))
    assert read_image(tmp_path / "x.png").pixels.shape == (30, 40, 3)
    assert PIL.Image.MAX_IMAGE_PIXELS == 100


# --------------------------------------------------------------------------- atomic writes


def test_write_creates_parents_and_leaves_only_the_file(tmp_path):
    path = tmp_path / "a" / "b" / "out.tif"
    write_image(path, make_image("rgba", np.uint16))
    assert sorted(os.listdir(path.parent)) == ["out.tif"]
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_encoding_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.webp"
    write_image(path, make_image("rgb"))
    before = path.read_bytes()
    too_wide = Image(np.zeros((1, 20_000, 3), np.uint8), None)  # WebP's limit is 16383 pixels a side
    with pytest.raises(ImageIOError, match="encode") as err:
        write_image(path, too_wide)
    assert err.value.path == path
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.webp"]

    broken = make_image("rgb")
    broken.pixels = broken.pixels.astype(np.float32)  # replaced after construction
    with pytest.raises(ImageIOError, match="uint8 or uint16"):
        write_image(path, broken)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.webp"]


def test_failed_disk_write_removes_temp_and_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    write_image(path, make_image("rgb"))
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ImageIOError, match="No space left"):
        write_image(path, make_image("gray"))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.png"]


def test_unsupported_suffix_on_write(tmp_path):
    with pytest.raises(ImageIOError, match="unsupported suffix '.gif'"):
        write_image(tmp_path / "x.gif", make_image("rgb"))
    with pytest.raises(ImageIOError, match="unsupported suffix"):
        write_image(tmp_path / "noext", make_image("rgb"))
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "x.png"
    write_image(path, make_image("rgb", seed=1))
    write_image(path, make_image("gray", seed=2))
    np.testing.assert_array_equal(read_image(path).pixels, make_image("gray", seed=2).pixels)


# --------------------------------------------------------------------------- pixels <-> tensors


def test_pixels_to_tensor_layout_and_ranges():
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 1] = (255, 128, 0)
    t = pixels_to_tensor(pixels)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32 and t.is_contiguous()
    assert t[:, 0, 1].tolist() == pytest.approx([1.0, 128 / 255, 0.0])
    assert pixels_to_tensor(pixels, (-1.0, 1.0))[:, 0, 1].tolist() == pytest.approx(
        [1.0, 128 / 127.5 - 1, -1.0], abs=1e-7
    )
    wide = np.array([[[0], [257], [65535]]], np.uint16)
    assert pixels_to_tensor(wide)[0, 0].tolist() == pytest.approx([0.0, 257 / 65535, 1.0])
    with pytest.raises(ValueError):
        pixels_to_tensor(pixels[:, :, 0])
    with pytest.raises(ValueError):
        pixels_to_tensor(pixels.astype(np.float32))


def test_tensor_to_pixels_clamps_and_rounds():
    levels = torch.tensor([-0.5, 0.4, 0.6, 100.4, 100.6, 254.4, 254.6, 300.0]) / 255
    out = tensor_to_pixels(levels.reshape(1, 1, -1), np.uint8)
    assert out.dtype == np.uint8 and out.shape == (1, 8, 1)
    assert out[0, :, 0].tolist() == [0, 0, 1, 100, 101, 254, 255, 255]  # truncation would give 0, 100, 254
    signed = tensor_to_pixels(torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, -1), np.uint8, (-1.0, 1.0))
    assert signed[0, :, 0].tolist() == [0, 128, 255, 255]  # 127.5 rounds to even
    wide = tensor_to_pixels((torch.tensor([0.4, 257.6, 65534.6]) / 65535).reshape(1, 1, -1), np.uint16)
    assert wide.dtype == np.uint16 and wide[0, :, 0].tolist() == [0, 258, 65535]
    chw = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 255
    np.testing.assert_array_equal(
        tensor_to_pixels(chw, np.uint8), np.arange(24).reshape(2, 3, 4).transpose(1, 2, 0)
    )
    with pytest.raises(ValueError, match="NaN"):
        tensor_to_pixels(torch.full((1, 2, 2), float("nan")), np.uint8)
    with pytest.raises(ValueError):
        tensor_to_pixels(torch.zeros(1, 2, 2, dtype=torch.uint8), np.uint8)
    with pytest.raises(ValueError):
        tensor_to_pixels(torch.zeros(1, 2, 2), np.float32)


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_tensor_round_trip_is_exact_for_every_level(value_range):
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    np.testing.assert_array_equal(
        tensor_to_pixels(pixels_to_tensor(u8, value_range), np.uint8, value_range), u8
    )
    u16 = np.arange(65536, dtype=np.uint16).reshape(256, 256, 1)
    np.testing.assert_array_equal(
        tensor_to_pixels(pixels_to_tensor(u16, value_range), np.uint16, value_range), u16
    )
