"""Image decoding by content, to RGB, with reduced-size JPEG decoding when the crop allows it.

ImageNet's quirks (22 CMYK training JPEGs, one CMYK validation JPEG, a PNG named .JPEG, greyscale images,
EXIF blocks) all decode by content: Pillow identifies the format from the bytes, never the extension, and
``convert("RGB")`` handles CMYK (including Adobe's inverted CMYK) and greyscale. EXIF orientation is not
applied, as in torchvision's ImageFolder and timm (the ImageNet convention).

Speed: an ImageNet-sized JPEG costs ~1.3 ms to decode on one core, about half of the training pipeline.
When the training crop (or the evaluation resize) needs at most half the image's resolution in both
directions, ``Image.draft`` makes libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale in the DCT domain (on
~100 KB 500x375 files 20%, 30%, 40% cheaper: entropy decoding, which no scale skips, dominates; more on
large images). The DCT-domain downscale is a sharper low-pass filter than the bilinear antialiasing it
replaces (docs/benchmarks.md). Training crops are cut in Pillow before the array copy. Pillow decodes
everything: ``torchvision.io.decode_jpeg`` is no faster on one core (both are libjpeg-turbo) and is
deprecated since torchvision 0.29.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# The extensions an ImageNet-layout folder is scanned for (torchvision's IMG_EXTENSIONS); decoding itself
# goes by content, so a PNG named .JPEG works.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_MAX_DRAFT_SCALE = 8  # libjpeg's DCT scaling offers 1/2, 1/4, 1/8


class BadImageError(OSError):
    """An image file that cannot be decoded (empty, truncated, not an image)."""


def _bad(path: str, why: object) -> BadImageError:
    return BadImageError(f"cannot decode image {path}: {str(why).splitlines()[0] if str(why) else why}")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _bad(path, e) from e
    if not data:
        raise BadImageError(f"cannot decode image {path}: the file is empty (0 bytes)")
    return data


def draft_scale(available: tuple[int, int], needed: tuple[float, float]) -> int:
    """Largest of 1, 2, 4, 8 that keeps ``available`` pixels >= ``needed`` pixels in both directions."""
    ratio = min(available[0] / max(needed[0], 1e-9), available[1] / max(needed[1], 1e-9))
    if ratio < 2:
        return 1
    return min(_MAX_DRAFT_SCALE, 2 ** int(math.floor(math.log2(ratio))))


_warned_once = False


def _pil_to_tensor(img: Image.Image, writable: bool = True) -> torch.Tensor:
    """(C, H, W) uint8 view of a packed HWC array (torch's uint8 antialiased resize is fastest on it).

    ``writable=False`` skips a copy: the tensor then shares Pillow's immutable bytes and must only be read.
    """
    global _warned_once
    arr = np.array(img) if writable else np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if (
        writable or _warned_once
    ):  # torch warns about non-writable arrays once per process; silence that one time
        return torch.from_numpy(arr).permute(2, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(arr).permute(2, 0, 1)
    _warned_once = True
    return tensor


def decode_image_file(path: str | os.PathLike, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image file by content to an RGB Pillow image; raise BadImageError if it is unreadable.

    ``min_size`` = (width, height): the result may be decoded at a reduced JPEG scale (1/2, 1/4, 1/8) as
    long as it stays at least this large, e.g. a multi-crop evaluator that resizes the shorter side to 256
    passes ``(256, 256)``. The default decodes at full size.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    try:
        img = Image.open(io.BytesIO(data))
        if min_size is not None:
            s = draft_scale(img.size, (min_size[0], min_size[1]))
            if s > 1:
                img.draft("RGB", (img.width // s, img.height // s))
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _bad(path, e) from e


def load_image_region(
    path: str,
    choose_region: Callable[[int, int], tuple[int, int, int, int]],
    needed: Callable[[int, int], tuple[float, float]],
) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """Decode ``path`` to an RGB uint8 (3, H', W') tensor at the smallest JPEG scale that still serves
    the region, and return it with the region in the decoded image's coordinates.

    ``choose_region(height, width)`` picks (top, left, h, w) in full-resolution pixels from the header's
    size; ``needed(h, w)`` says how many pixels (w, h) that region must keep after decoding.
    """
    with _decoded(path, choose_region, needed) as (img, region):
        return _pil_to_tensor(img), region


def load_image_crop(
    path: str,
    choose_region: Callable[[int, int], tuple[int, int, int, int]],
    needed: Callable[[int, int], tuple[float, float]],
) -> torch.Tensor:
    """Like :func:`load_image_region`, but return only the region's pixels, (3, h', w') uint8, packed
    channels-last and READ-ONLY (it shares Pillow's bytes; resize it, never write to it): cropping in
    Pillow before the array copy moves ~half the bytes of a training crop."""
    with _decoded(path, choose_region, needed) as (img, (top, left, h, w)):
        top_i, left_i = round(top), round(left)
        box = (
            left_i,
            top_i,
            min(left_i + max(1, round(w)), img.width),
            min(top_i + max(1, round(h)), img.height),
        )
        return _pil_to_tensor(img.crop(box), writable=False)  # only read, by resize_square


@contextlib.contextmanager
def _decoded(path: str, choose_region, needed):
    """(decoded RGB Pillow image, region scaled to it); decoding errors become BadImageError."""
    data = _read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            top, left, h, w = choose_region(height, width)
            scale = draft_scale((w, h), needed(h, w)) if img.format == "JPEG" else 1
            if scale > 1:
                # Ask for the floor: Pillow's scale is W // requested_w, so a rounded-up size can give 1.
                _, box = img.draft("RGB", (width // scale, height // scale))
                scale = width / box[2]  # the scale libjpeg actually used
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            region = (top / scale, left / scale, h / scale, w / scale)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _bad(path, e) from e
    yield rgb, region
