"""Image decoding by content (ImageNet's CMYK, PNG-named-.JPEG, greyscale files), to RGB; EXIF orientation
not applied, as in ImageFolder and timm. When the crop needs at most half the resolution, ``Image.draft``
decodes at 1/2-1/8 scale in the DCT domain (20-40% cheaper, docs/benchmarks.md). A full-scale L/RGB JPEG
goes through ``torchvision.io.decode_jpeg`` (same libjpeg-turbo, bit-identical, ~0.3 ms cheaper than
Pillow's store); anything else, and any file it rejects, through Pillow, whose verdict counts.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

# What a folder is scanned for (torchvision's IMG_EXTENSIONS); decoding goes by content.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)
Region = tuple[float, float, float, float]  # (top, left, h, w)


class BadImageError(OSError):
    """An image file that cannot be decoded."""


def _bad(path: str, why: object) -> BadImageError:
    return BadImageError(f"cannot decode image {path}: {str(why).splitlines()[0] if str(why) else why}")


def read_bytes(path: str) -> bytearray:
    try:
        with open(path, "rb") as f:
            data = bytearray(f.read())
    except OSError as e:
        raise _bad(path, e) from e
    if not data:
        raise BadImageError(f"cannot decode image {path}: the file is empty (0 bytes)")
    return data


def draft_scale(available: tuple[int, int], needed: tuple[float, float]) -> int:
    ratio = min(available[0] / max(needed[0], 1e-9), available[1] / max(needed[1], 1e-9))
    return 1 if ratio < 2 else min(8, 2 ** int(math.floor(math.log2(ratio))))


def to_rgb(img: Image.Image) -> Image.Image:
    # 16-bit greyscale keeps its high byte, as Pillow does for colour (convert would clip: nearly white).
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
    return img.convert("RGB")


def _to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr[:, :, None] if arr.ndim == 2 else arr).permute(2, 0, 1)


def decode_image_file(path: str | os.PathLike, min_size: tuple[int, int] | None = None) -> Image.Image:
    """RGB, by content; BadImageError if unreadable; reduced JPEG scale down to ``min_size`` (w, h)."""
    path = os.fspath(path)
    try:
        img = Image.open(io.BytesIO(read_bytes(path)))
        if min_size is not None and (s := draft_scale(img.size, min_size)) > 1:
            img.draft("RGB", (img.width // s, img.height // s))
        img.load()
        return to_rgb(img)
    except _ERRORS as e:
        raise _bad(path, e) from e


def _decode(path: str, choose_region, needed) -> tuple[torch.Tensor | Image.Image, Region]:
    data = read_bytes(path)
    try:
        img = Image.open(io.BytesIO(data))
        top, left, h, w = choose_region(img.height, img.width)
        scale = draft_scale((w, h), needed(h, w)) if img.format == "JPEG" else 1
        if scale == 1 and img.format == "JPEG" and img.mode in ("L", "RGB"):
            try:
                with warnings.catch_warnings():  # torchvision 0.29 deprecates it for TorchCodec
                    warnings.simplefilter("ignore", DeprecationWarning)
                    pixels = decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
                return pixels, (top, left, h, w)
            except RuntimeError:
                pass  # truncated or odd: Pillow decides
        if scale > 1:  # ask for the floor: Pillow's scale is W // requested_w
            width = img.width
            _, box = img.draft("RGB", (width // scale, img.height // scale))
            scale = width / box[2]  # the scale libjpeg actually used
        img.load()
        return to_rgb(img), (top / scale, left / scale, h / scale, w / scale)
    except _ERRORS as e:
        raise _bad(path, e) from e


def load_image_region(
    path: str,
    choose_region: Callable[[int, int], tuple[int, int, int, int]],
    needed: Callable[[int, int], tuple[float, float]],
) -> tuple[torch.Tensor, Region]:
    """The smallest-scale decode serving ``choose_region(height, width)`` (full-scale pixels) with
    ``needed(h, w)`` pixels: a READ-ONLY uint8 (3, H, W) image and the region in its coordinates."""
    img, region = _decode(path, choose_region, needed)
    return (img if isinstance(img, torch.Tensor) else _to_tensor(img)), region


def load_image_crop(
    path: str,
    choose_region: Callable[[int, int], tuple[int, int, int, int]],
    needed: Callable[[int, int], tuple[float, float]],
) -> torch.Tensor:
    """Only the region's pixels of :func:`load_image_region` (READ-ONLY)."""
    img, (top, left, h, w) = _decode(path, choose_region, needed)
    top_i, left_i = round(top), round(left)
    height, width = (img.shape[1], img.shape[2]) if isinstance(img, torch.Tensor) else (img.height, img.width)
    bottom, right = min(top_i + max(1, round(h)), height), min(left_i + max(1, round(w)), width)
    if isinstance(img, torch.Tensor):
        return img[:, top_i:bottom, left_i:right]
    return _to_tensor(img.crop((left_i, top_i, right, bottom)))
