"""Image decoding by content, to RGB, at a reduced JPEG scale when the crop allows it.

ImageNet's quirks (CMYK JPEGs, a PNG named .JPEG, greyscale images, EXIF blocks) decode by content: Pillow
identifies the format from the bytes and ``convert("RGB")`` handles CMYK and greyscale. EXIF orientation is
not applied, as in torchvision's ImageFolder and timm.

Reduced scale: when the crop needs at most half the image's resolution in both directions, ``Image.draft``
makes libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale in the DCT domain (20-40% cheaper on ImageNet-sized
files; a sharper low-pass filter than the bilinear antialiasing it replaces, docs/benchmarks.md). A greyscale
or colour JPEG decoded at full scale goes through ``torchvision.io.decode_jpeg`` (the same libjpeg-turbo,
bit-identical pixels) straight into an interleaved uint8 tensor, ~0.3 ms cheaper than Pillow's store;
everything else, and any file it rejects, goes through Pillow, whose verdict on a file counts.
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

# The extensions an ImageNet-layout folder is scanned for (torchvision's IMG_EXTENSIONS); decoding itself
# goes by content, so a PNG named .JPEG works.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)
Region = tuple[float, float, float, float]  # (top, left, h, w)


class BadImageError(OSError):
    """An image file that cannot be decoded (empty, truncated, not an image)."""


def _bad(path: str, why: object) -> BadImageError:
    return BadImageError(f"cannot decode image {path}: {str(why).splitlines()[0] if str(why) else why}")


def read_bytes(path: str) -> bytearray:
    """The file's bytes, in a writable buffer (a tensor can wrap it without a copy)."""
    try:
        with open(path, "rb") as f:
            data = bytearray(f.read())
    except OSError as e:
        raise _bad(path, e) from e
    if not data:
        raise BadImageError(f"cannot decode image {path}: the file is empty (0 bytes)")
    return data


def draft_scale(available: tuple[int, int], needed: tuple[float, float]) -> int:
    """Largest of 1, 2, 4, 8 that keeps ``available`` pixels >= ``needed`` pixels in both directions."""
    ratio = min(available[0] / max(needed[0], 1e-9), available[1] / max(needed[1], 1e-9))
    return 1 if ratio < 2 else min(8, 2 ** int(math.floor(math.log2(ratio))))


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB. 16-bit greyscale PNGs/TIFFs (modes I;16*) keep their high byte, as Pillow does
    for 16-bit colour (``convert("RGB")`` would clip them at 255: nearly white)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
    return img.convert("RGB")


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """(C, H, W) uint8 view of Pillow's packed HWC bytes, READ-ONLY (torch warns about that once)."""
    arr = np.asarray(img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr[:, :, None] if arr.ndim == 2 else arr).permute(2, 0, 1)


def decode_image_file(path: str | os.PathLike, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image file by content to RGB; BadImageError if unreadable. ``min_size`` = (width, height):
    it may be decoded at a reduced JPEG scale as long as it stays at least this large."""
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
    """Decode ``path`` at the smallest JPEG scale that still serves a region: ``choose_region(height,
    width)`` picks (top, left, h, w) in full-resolution pixels, ``needed(h, w)`` says how many pixels (w, h)
    it must keep. Returns the RGB image, a READ-ONLY uint8 (3, H, W) tensor, and the region in its
    coordinates; BadImageError if unreadable."""
    img, region = _decode(path, choose_region, needed)
    return (img if isinstance(img, torch.Tensor) else _to_tensor(img)), region


def load_image_crop(
    path: str,
    choose_region: Callable[[int, int], tuple[int, int, int, int]],
    needed: Callable[[int, int], tuple[float, float]],
) -> torch.Tensor:
    """The region's pixels of :func:`load_image_region`, (3, h', w') uint8, channels-last, READ-ONLY
    (resize it, never write to it). A Pillow image is cropped before the copy out of it."""
    img, (top, left, h, w) = _decode(path, choose_region, needed)
    top_i, left_i = round(top), round(left)
    height, width = (img.shape[1], img.shape[2]) if isinstance(img, torch.Tensor) else (img.height, img.width)
    bottom, right = min(top_i + max(1, round(h)), height), min(left_i + max(1, round(w)), width)
    if isinstance(img, torch.Tensor):
        return img[:, top_i:bottom, left_i:right]
    return _to_tensor(img.crop((left_i, top_i, right, bottom)))
