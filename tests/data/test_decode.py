"""Decoding by content: ImageNet's quirk files come out as RGB, unreadable files raise BadImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from bn_inception.data.decode import (
    BadImageError,
    decode_image_file,
    draft_scale,
    load_image_crop,
    load_image_region,
)
from bn_inception.data.synthetic import UNREADABLE_QUIRKS, quirk_bytes, render_image


@pytest.fixture
def picture() -> Image.Image:
    return render_image(3, 8, 120, 90, np.random.default_rng(0), noise=4.0)


def _write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


@pytest.mark.parametrize("quirk", ["cmyk", "png_as_jpeg", "exif"])
def test_quirk_files_decode_to_the_right_rgb_colours(tmp_path, picture, quirk):
    path = _write(tmp_path, f"x_{quirk}.JPEG", quirk_bytes(quirk, picture, quality=95))
    img = decode_image_file(path)
    assert img.mode == "RGB" and img.size == picture.size
    # Within JPEG loss of the original colours (a CMYK file read as if RGB would be far off).
    assert np.abs(_rgb(img) - _rgb(picture)).mean() < 6.0


def test_greyscale_jpeg_becomes_three_equal_channels(tmp_path, picture):
    path = _write(tmp_path, "grey.JPEG", quirk_bytes("greyscale", picture, quality=95))
    arr = _rgb(decode_image_file(path))
    assert arr.shape == (90, 120, 3)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
    assert np.abs(arr[..., 0] - _rgb(picture.convert("L"))).mean() < 4.0


@pytest.mark.parametrize("quirk", ["cmyk", "png_as_jpeg", "greyscale", "exif"])
def test_training_decoder_returns_rgb_uint8_tensors_for_quirks(tmp_path, picture, quirk):
    path = _write(tmp_path, f"x_{quirk}.JPEG", quirk_bytes(quirk, picture, quality=95))
    tensor, region = load_image_region(path, lambda h, w: (0, 0, h, w), lambda h, w: (w, h))
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 90, 120)
    assert region == (0, 0, 90, 120)
    reference = torch.from_numpy(_rgb(decode_image_file(path))).permute(2, 0, 1)
    assert torch.equal(tensor.double(), reference)


@pytest.mark.parametrize("quirk", UNREADABLE_QUIRKS)
def test_unreadable_files_raise_a_one_line_error_naming_the_file(tmp_path, picture, quirk):
    path = _write(tmp_path, f"bad_{quirk}.JPEG", quirk_bytes(quirk, picture, quality=95))
    with pytest.raises(BadImageError) as info:
        decode_image_file(path)
    assert path in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BadImageError):
        load_image_region(path, lambda h, w: (0, 0, h, w), lambda h, w: (w, h))


def test_draft_scale_keeps_at_least_the_needed_pixels():
    assert draft_scale((500, 375), (224, 224)) == 1  # an ImageNet crop at 224: full-size decode
    assert draft_scale((1000, 800), (224, 224)) == 2
    assert draft_scale((2000, 2000), (100, 100)) == 8  # libjpeg scales down to 1/8 at most
    assert draft_scale((447, 447), (224, 224)) == 1


def test_reduced_size_decoding_serves_the_region_at_lower_cost(tmp_path):
    big = render_image(1, 4, 800, 600, np.random.default_rng(1), noise=3.0)
    path = _write(tmp_path, "big.JPEG", quirk_bytes("exif", big, quality=95))
    tensor, (top, left, h, w) = load_image_region(
        path, lambda h, w: (100, 200, 400, 400), lambda h, w: (90, 90)
    )
    # 1/4 scale: the 400 px region still has 100 >= 90 px.
    assert tensor.shape == (3, 150, 200)
    assert (top, left, h, w) == (25, 50, 100, 100)
    full = _rgb(decode_image_file(path))[100:500, 200:600].mean(axis=(0, 1))
    small = tensor[:, 25:125, 50:150].double().mean(dim=(1, 2)).numpy()
    assert np.abs(full - small).max() < 2.0


def test_odd_sizes_still_get_the_reduced_scale(tmp_path):
    # 375 // ceil(375 / 2) == 1: asking Pillow for a rounded-up size would silently decode at full size.
    img = render_image(0, 4, 375, 500, np.random.default_rng(2), noise=3.0)
    path = _write(tmp_path, "odd.JPEG", quirk_bytes("exif", img, quality=90))
    tensor, region = load_image_region(path, lambda h, w: (0, 0, h, w), lambda h, w: (112, 112))
    assert tensor.shape == (3, 250, 188) and region == (0, 0, 250, 187.5)
    assert decode_image_file(path, min_size=(112, 112)).size == (188, 250)


def test_decode_image_file_min_size_bounds_the_draft(tmp_path):
    big = Image.new("RGB", (1024, 768), (10, 200, 30))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    path = _write(tmp_path, "big.JPEG", buf.getvalue())
    assert decode_image_file(path).size == (1024, 768)
    assert decode_image_file(path, min_size=(300, 300)).size == (512, 384)


def test_crop_loader_returns_exactly_the_region_pixels(tmp_path, picture):
    path = _write(tmp_path, "c.JPEG", quirk_bytes("exif", picture, quality=95))
    full, _ = load_image_region(path, lambda h, w: (0, 0, h, w), lambda h, w: (w, h))
    crop = load_image_crop(path, lambda h, w: (10, 20, 50, 70), lambda h, w: (40, 40))
    assert torch.equal(crop, full[:, 10:60, 20:90])
    assert crop.stride(0) == 1  # interleaved pixels: torch's fast uint8 resize path


def _jpeg(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def test_a_truncated_jpeg_stays_unreadable_whatever_the_crop(tmp_path, picture):
    big = render_image(1, 4, 800, 600, np.random.default_rng(4), noise=3.0)
    path = _write(tmp_path, "cut.JPEG", quirk_bytes("truncated", big, quality=90))
    for needed in (400, 60):  # full scale (direct decoder) and 1/4 scale (Pillow)
        with pytest.raises(BadImageError, match="cut.JPEG"):
            load_image_crop(path, lambda h, w: (0, 0, 100, 400), lambda h, w, n=needed: (n, n))


@pytest.mark.parametrize("kind", ["colour", "greyscale", "progressive"])
def test_direct_decoder_and_pillow_give_identical_pixels(tmp_path, picture, kind):
    img = picture.convert("L") if kind == "greyscale" else picture
    path = _write(tmp_path, f"{kind}.JPEG", _jpeg(img, progressive=kind == "progressive"))
    tensor, _ = load_image_region(path, lambda h, w: (0, 0, h, w), lambda h, w: (w, h))
    reference = torch.from_numpy(np.asarray(decode_image_file(path))).permute(2, 0, 1)
    assert torch.equal(tensor, reference)


def _png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (greyscale for (H, W), RGB for (H, W, 3)) written by hand: Pillow writes 16-bit
    greyscale PNGs but not 16-bit colour ones."""
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_decodes_to_its_high_bytes(tmp_path, channels):
    rng = np.random.default_rng(0)
    shape = (20, 30) if channels == 1 else (20, 30, 3)
    pixels = rng.integers(0, 65536, shape, dtype=np.uint16)
    path = _write(tmp_path, "deep.png", _png16(pixels))
    expected = (pixels >> 8).astype(np.uint8)
    expected = np.repeat(expected[..., None], 3, axis=2) if channels == 1 else expected
    assert np.array_equal(np.asarray(decode_image_file(path)), expected)
    region, _ = load_image_region(path, lambda h, w: (0, 0, h, w), lambda h, w: (w, h))  # the datasets' path
    assert np.array_equal(region.permute(1, 2, 0).numpy(), expected)
