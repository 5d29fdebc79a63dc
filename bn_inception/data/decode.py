"""Image decoding by content, to RGB, with reduced-size JPEG decoding when the crop allows it.

ImageNet's quirks (22 CMYK training JPEGs, one CMYK validation JPEG, a PNG named .JPEG, greyscale images,
EXIF blocks) all decode by content: Pillow identifies the format from the bytes, never the extension, and
``convert("RGB")`` handles CMYK (including Adobe's inverted CMYK) and greyscale. EXIF orientation is not
applied, as in torchvision's ImageFolder and timm (the ImageNet convention).

Speed: an ImageNet-sized JPEG costs ~1.2 ms to decode on one core, more than half of the training
pipeline. Two ways to decode less:

- Reduced scale: when the training crop (or the evaluation resize) needs at most half the image's
  resolution in both directions, ``Image.draft`` makes libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale in
  the DCT domain (on ~100 KB 500x375 files 20%, 30%, 40% cheaper: entropy decoding, which no scale skips,
  dominates; more on large images). The DCT-domain downscale is a sharper low-pass filter than the
  bilinear antialiasing it replaces (docs/benchmarks.md).
- Only the rows above the crop's bottom edge (Pillow decodes): a sequential (baseline) JPEG is decoded
  top to bottom, so a crop that ends at row r needs nothing below it. libjpeg-turbo can stop there
  (``jpeg_skip_scanlines`` / partial decoding) but Pillow does not expose it; we get the same effect by
  rewriting the 2-byte image height in a copy of the frame header (SOF0/SOF1) to r plus a margin, so
  libjpeg decodes r + margin rows and leaves the rest of the entropy-coded data alone (random crops of
  8%-100% of the area end on average at ~85% of the height: ~10% of a decode saved). Rows above the cut
  are bit-identical to a full decode (tests/data/test_decode.py); if Pillow rejects the cut file it is
  decoded in full, so a file is unreadable exactly when a full decode fails.

Which decoder: a complete greyscale or colour JPEG decoded at full scale goes to libjpeg-turbo through
``torchvision.io.decode_jpeg``, which writes the pixels straight into an interleaved uint8 tensor (the
layout torch's resize wants): the same decoder as Pillow's with the same output, ~0.3 ms cheaper per image
because Pillow's 4-byte-per-pixel store and the copies out of it are skipped. Reduced-scale and cut
decodes, CMYK, truncated and non-JPEG files go through Pillow, whose verdict on a file is the one that
counts (a file either decoder rejects is retried with Pillow). Batched GPU decoding (nvJPEG) is
``bn_inception.data.device``'s job (``data.decode=gpu``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

# The extensions an ImageNet-layout folder is scanned for (torchvision's IMG_EXTENSIONS); decoding itself
# goes by content, so a PNG named .JPEG works.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_MAX_DRAFT_SCALE = 8  # libjpeg's DCT scaling offers 1/2, 1/4, 1/8
# Rows decoded below a crop's bottom edge: one 16-row MCU row, so chroma upsampling (which looks one
# chroma row further down) sees the same rows as in a full decode. Exact down to 2 rows on our test
# images at every DCT scale and subsampling (tests/data/test_decode.py); 16 is the margin of safety.
_ROW_MARGIN = 16
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SEQUENTIAL_HUFFMAN = frozenset({0xC0, 0xC1})  # baseline and extended sequential: decoded top to bottom
_SOS, _EOI = 0xDA, 0xD9


class BadImageError(OSError):
    """An image file that cannot be decoded (empty, truncated, not an image)."""


def _bad(path: str, why: object) -> BadImageError:
    return BadImageError(f"cannot decode image {path}: {str(why).splitlines()[0] if str(why) else why}")


def _read_bytes(path: str) -> bytearray:
    """The file's bytes, in a writable buffer (a tensor can wrap it without a copy)."""
    try:
        with open(path, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)
            got = f.readinto(data)
    except OSError as e:
        raise _bad(path, e) from e
    if not got:
        raise BadImageError(f"cannot decode image {path}: the file is empty (0 bytes)")
    return data if got == len(data) else data[:got]


@dataclass(frozen=True)
class JpegLayout:
    """What the markers before the first scan say about a JPEG file."""

    height: int
    width: int
    components: int  # 1 greyscale, 3 YCbCr/RGB, 4 CMYK/YCCK
    sequential: bool  # baseline or extended sequential Huffman (not progressive, not arithmetic)
    complete: bool  # an end-of-image marker follows the first scan (a truncated file has none)
    height_at: int  # byte offset of the frame header's 2-byte height


def jpeg_layout(data: bytes | bytearray) -> JpegLayout | None:
    """Parse the marker segments up to the first scan; None if ``data`` is not a well-formed JPEG.

    ~2 us in Python: a handful of segments (APPn, DQT, SOF, DHT) precede the scan.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i, frame = 2, None
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # parameterless markers
            i += 2
            continue
        if marker == _EOI:
            return None
        if marker in _SOF_MARKERS:
            if i + 10 > n:
                return None
            height, width = (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
            frame = (marker, height, width, data[i + 9], i + 5)
        elif marker == _SOS:
            if frame is None:
                return None
            marker, height, width, components, height_at = frame
            # Entropy-coded data never holds FF D9 (a 0xFF there is stuffed with 0x00): any FF D9 after the
            # scan header is a marker. Searched from the end, where it normally is.
            complete = data.rfind(b"\xff\xd9", i + 4) >= 0
            return JpegLayout(height, width, components, marker in _SEQUENTIAL_HUFFMAN, complete, height_at)
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def rows_only(data: bytes | bytearray, layout: JpegLayout | None, rows: float) -> bytes | bytearray:
    """``data`` with the frame height cut to ``rows`` (+ a margin) when that decodes the same top rows for
    less; else ``data`` itself (see the module docstring)."""
    if layout is None or not (layout.sequential and layout.complete) or layout.height <= 0:
        return data
    keep = math.ceil(rows) + _ROW_MARGIN
    if keep >= layout.height:
        return data
    patched = bytearray(data)
    patched[layout.height_at : layout.height_at + 2] = keep.to_bytes(2, "big")
    return patched


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


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB. Pillow opens 16-bit colour PNGs as 8-bit RGB (their high bytes) but 16-bit
    greyscale PNGs and TIFFs as 16-bit modes (I;16, I;16B), which ``convert("RGB")`` clips at 255: nearly
    white. Those keep their high byte here too, the same reduction as colour."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
    return img.convert("RGB")


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
        return to_rgb(img)
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
    size; ``needed(h, w)`` says how many pixels (w, h) that region must keep after decoding. The tensor may
    be a strided view (pixels interleaved, channels-last): read it, never write to it.
    """
    with _decoded(path, choose_region, needed) as (img, region):
        return (img if isinstance(img, torch.Tensor) else _pil_to_tensor(img)), region


def load_image_crop(
    path: str,
    choose_region: Callable[[int, int], tuple[int, int, int, int]],
    needed: Callable[[int, int], tuple[float, float]],
) -> torch.Tensor:
    """Like :func:`load_image_region`, but return only the region's pixels, (3, h', w') uint8 with
    interleaved (channels-last) pixels, READ-ONLY (it may share the decoder's buffer; resize it, never write
    to it). A Pillow image is cropped before the array copy, which then moves ~half the bytes."""
    with _decoded(path, choose_region, needed) as (img, (top, left, h, w)):
        top_i, left_i = round(top), round(left)
        height, width = (
            (img.shape[1], img.shape[2]) if isinstance(img, torch.Tensor) else (img.height, img.width)
        )
        bottom, right = min(top_i + max(1, round(h)), height), min(left_i + max(1, round(w)), width)
        if isinstance(img, torch.Tensor):
            return img[:, top_i:bottom, left_i:right]
        return _pil_to_tensor(img.crop((left_i, top_i, right, bottom)), writable=False)  # read by resize


def _direct_decode_ok(layout: JpegLayout | None) -> bool:
    # Complete greyscale/colour JPEGs within Pillow's decompression-bomb limit (Pillow keeps handling CMYK,
    # truncated and oversized files, and everything that is not a JPEG).
    return (
        layout is not None
        and layout.complete
        and layout.components in (1, 3)
        and 0 < layout.height * layout.width <= (Image.MAX_IMAGE_PIXELS or 1 << 62)
    )


def _decode_jpeg_tensor(data: bytearray) -> torch.Tensor:
    """libjpeg-turbo (torchvision's build) straight into an interleaved (3, H, W) uint8 tensor.

    The same decoder and settings as Pillow's (bit-identical pixels, tests/data/test_decode.py), without
    Pillow's 4-byte-per-pixel image store, header parsing in Python and the copies out of it: ~0.3 ms less
    per ImageNet-sized image (docs/benchmarks.md). torchvision 0.29 deprecates its decoders in favour of
    TorchCodec (not a dependency here); its warning is silenced, and this function is the one to switch.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)


@contextlib.contextmanager
def _decoded(path: str, choose_region, needed):
    """(decoded RGB image: uint8 (3, H, W) tensor or Pillow image, region scaled to it); decoding errors
    become BadImageError (errors in the caller's block are not caught: the yield is outside the try)."""
    data = _read_bytes(path)
    layout = jpeg_layout(data)
    try:
        image, region = _decode_direct(data, layout, choose_region, needed)
        if image is None:
            try:
                image, region = _decode_region(data, layout, choose_region, needed, cut=True)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                # Whatever Pillow makes of the cut header, a file is unreadable only if the full decode fails.
                image, region = _decode_region(data, layout, choose_region, needed, cut=False)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _bad(path, e) from e
    yield image, region


def _decode_direct(data: bytearray, layout: JpegLayout | None, choose_region, needed):
    """(tensor, region) from the direct decoder when it applies (full scale, see _direct_decode_ok), else
    (None, None): Pillow then decides, also for a file the direct decoder rejects."""
    if not _direct_decode_ok(layout):
        return None, None
    top, left, h, w = choose_region(layout.height, layout.width)
    if draft_scale((w, h), needed(h, w)) != 1:
        return None, None
    try:
        return _decode_jpeg_tensor(data), (top, left, h, w)
    except RuntimeError:
        return None, None


def _decode_region(data: bytearray, layout: JpegLayout | None, choose_region, needed, cut: bool):
    if layout is not None and layout.height > 0:
        top, left, h, w = choose_region(layout.height, layout.width)
        source = rows_only(data, layout, top + h) if cut else data
        img = Image.open(io.BytesIO(source))
    else:
        img = Image.open(io.BytesIO(data))
        top, left, h, w = choose_region(img.height, img.width)
    with img:
        width = img.width
        scale = draft_scale((w, h), needed(h, w)) if img.format == "JPEG" else 1
        if scale > 1:
            # Ask for the floor: Pillow's scale is W // requested_w, so a rounded-up size can give 1.
            _, box = img.draft("RGB", (width // scale, img.height // scale))
            scale = width / box[2]  # the scale libjpeg actually used
        img.load()
        rgb = to_rgb(img)
        return rgb, (top / scale, left / scale, h / scale, w / scale)
