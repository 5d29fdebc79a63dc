"""On the training device: normalisation (:func:`to_model_input`, every consumer's one call: CPU workers
never convert to float, as in timm's PrefetchLoader, DALI, FFCV) and, with ``data.decode=gpu``
(experimental), batched nvJPEG decoding of an :class:`EncodedBatch` (this module's only batch type), whose
crop, flip and colour workers drew from the CPU path's (seed, epoch, index) stream.

Differences from the CPU path: nvJPEG's IDCT differs from libjpeg's by a level or so; resized pixels stay
float; no reduced-scale JPEG decoding. Files nvJPEG does not take (progressive, CMYK, PNG) the worker decodes
with Pillow. torchvision 0.29 deprecates ``decode_jpeg`` for TorchCodec: ``_decode_jpegs`` is the one
function to switch.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bn_inception.data.decode import decode_image_file, read_bytes
from bn_inception.data.transforms import TrainAugment, apply_colour, eval_sizes


@functools.cache
def _normalise_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: building a CUDA tensor from a list is a blocking host-to-device copy.
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=device).view(1, -1, 1, 1)
    return scale, shift


def to_model_input(
    images: torch.Tensor | EncodedBatch,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A loader's batch (uint8, float 0-255 or EncodedBatch) -> ``(x / 255 - mean) / std`` on ``device``, one
    fused multiply-add in ``dtype`` and the model's memory format."""
    device = torch.device(device)
    if isinstance(images, EncodedBatch):
        x = device_images(images, device)
    else:
        x = images.to(device, non_blocking=True)
    if x.dim() != 4:
        raise ValueError(f"to_model_input expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    scale, shift = _normalise_constants(tuple(map(float, mean)), tuple(map(float, std)), device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if x.device.type == "cpu":
        # Reordering the uint8 pixels first is cheaper on a CPU than a multiply-add across layouts
        # (measured 1.2x); a GPU reads the strided input at full speed in the one kernel.
        x = x.contiguous(memory_format=fmt)
    out = torch.empty(x.shape, dtype=torch.float32, device=device, memory_format=fmt)
    torch.addcmul(shift, x, scale, out=out)
    return out if dtype == torch.float32 else out.to(dtype)


def gpu_decode_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import torchvision.io  # noqa: F401  (loads torchvision's image extension)

        return hasattr(torch.ops.image, "decode_jpegs_cuda")
    except (ImportError, RuntimeError, AttributeError):
        return False


def resolve_decode(decode: str, device: torch.device | str | None, file_based: bool) -> bool:
    """``data.decode`` -> decode on the device? ``auto`` is cpu until a GPU measurement shows gpu correct and
    faster (docs/benchmarks.md)."""
    if decode != "gpu":
        return False
    if not file_based:
        raise ValueError(
            "data.decode=gpu decodes image files; this dataset is held in memory: use cpu or auto"
        )
    if device is None or torch.device(device).type != "cuda":
        raise ValueError("data.decode=gpu needs training on a CUDA device; use data.decode=cpu or auto")
    if not gpu_decode_available():
        raise ValueError(
            "data.decode=gpu: this torchvision cannot decode JPEGs on CUDA (no nvJPEG); use cpu or auto"
        )
    return True


class EncodedImage(NamedTuple):
    data: torch.Tensor  # 1-D uint8 JPEG bytes, or (3, H, W) uint8 pixels the worker decoded itself
    height: int
    width: int
    path: str


def read_for_device(path: str) -> EncodedImage:
    """The bytes of a complete baseline L/RGB JPEG (what nvJPEG takes), else Pillow's pixels."""
    data = read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as img:
            size, takes = img.size, img.format == "JPEG" and img.mode in ("L", "RGB")
            takes = takes and not img.info.get("progressive") and data.rstrip(b"\0").endswith(b"\xff\xd9")
    except (OSError, ValueError, SyntaxError):
        takes = False
    if takes:
        return EncodedImage(torch.frombuffer(data, dtype=torch.uint8), size[1], size[0], path)
    pixels = torch.from_numpy(np.array(decode_image_file(path))).permute(2, 0, 1).contiguous()
    return EncodedImage(pixels, pixels.shape[1], pixels.shape[2], path)


@dataclass
class EncodedBatch:
    """A batch decoded and transformed on the device. ``rows``/``cols``: per image (start, length, out_len,
    keep): resize pixels [start, start + length) to out_len, keep [keep, keep + size); None: raw images."""

    data: list[torch.Tensor]
    sizes: torch.Tensor  # (B, 2) int64: full (height, width)
    paths: list[str]
    size: int = 0  # output side S
    # numpy, never tensors: read on the host while the step runs, they must not look like a device read
    rows: np.ndarray | None = None  # (B, 4) float64
    cols: np.ndarray | None = None  # (B, 4) float64
    flip: np.ndarray | None = None  # (B,) bool
    colour: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # photometric_terms, float32

    def __len__(self) -> int:
        return len(self.data)

    def pin_memory(self, device: Any = None) -> EncodedBatch:
        # The pin-memory thread: colour terms pinned (asynchronous copies); nvJPEG reads the bytes itself.
        colour = None if self.colour is None else tuple(t.pin_memory() for t in self.colour)
        return dataclasses.replace(self, colour=colour)


def encoded_batch(
    items: Sequence[EncodedImage], u: np.ndarray | None, augment: TrainAugment | None, size: int
) -> EncodedBatch:
    """A training (``augment``, draws ``u``) or evaluation batch; ``size=0``: raw images."""
    hw = [[it.height, it.width] for it in items]
    batch = EncodedBatch([it.data for it in items], torch.tensor(hw, dtype=torch.int64).view(-1, 2),
                         [it.path for it in items], size)  # fmt: skip
    if size == 0:
        return batch
    if augment is None:
        batch.rows, batch.cols = eval_geometry(batch.sizes, size)
        return batch
    boxes = np.array(
        [augment.crop_box(r, h, w) for r, (h, w) in zip(u.tolist(), hw, strict=True)], np.float64
    )
    top, left, h, w = boxes.reshape(-1, 4).T
    full, zero = np.full_like(top, size), np.zeros_like(top)
    batch.rows, batch.cols = np.stack([top, h, full, zero], 1), np.stack([left, w, full, zero], 1)
    batch.flip = augment.flips(u)
    batch.colour = augment.colour_terms(u, 3)
    return batch


def eval_geometry(sizes: torch.Tensor, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of single-crop evaluation, sizes and offsets as torchvision's resize + center_crop."""
    resize, crop = eval_sizes(input_size)
    rows, cols = [], []
    for h, w in sizes.tolist():
        short, long = min(h, w), max(h, w)
        new_long = int(resize * long / short)
        new_h, new_w = (new_long, resize) if w <= h else (resize, new_long)
        rows.append([0.0, h, new_h, int(round((new_h - crop) / 2.0))])
        cols.append([0.0, w, new_w, int(round((new_w - crop) / 2.0))])
    return np.array(rows, np.float64).reshape(-1, 4), np.array(cols, np.float64).reshape(-1, 4)


def decode_jpegs(
    data: Sequence[torch.Tensor], device: torch.device, paths: Sequence[str]
) -> list[torch.Tensor]:
    """JPEG bytes -> (3, H, W) uint8 on ``device``, one batched nvJPEG call on a side stream: nvJPEG writes
    from a private stream that does not wait for the current one (pytorch/vision#9606, 199 of 200 iterations
    corrupted on an H100), so the side stream runs nothing else, and record_stream/wait_stream order it."""
    if not data:
        return []
    if device.type != "cuda":
        return _decode_jpegs(data, device, paths)
    consumer, side = torch.cuda.current_stream(device), _decode_stream(device)
    with torch.cuda.stream(side):
        images = _decode_jpegs(data, device, paths)
    consumer.wait_stream(side)
    for image in images:
        image.record_stream(consumer)
    return images


@functools.cache
def _decode_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


def _decode_jpegs(
    data: Sequence[torch.Tensor], device: torch.device, paths: Sequence[str]
) -> list[torch.Tensor]:
    """:func:`decode_jpegs` on the current stream; a rejected batch image by image, then Pillow."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one file nvJPEG cannot take spoils the batch call: decode one at a time
            pass
        out = []
        for tensor, path in zip(data, paths, strict=True):
            try:
                out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(torch.from_numpy(np.array(decode_image_file(path))).permute(2, 0, 1).to(device))
        return out


def decode_images(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor]:
    coded = [i for i, t in enumerate(batch.data) if t.dim() == 1]
    out: list[torch.Tensor | None] = [None] * len(batch.data)
    decoded = decode_jpegs([batch.data[i] for i in coded], device, [batch.paths[i] for i in coded])
    for i, image in zip(coded, decoded, strict=True):
        out[i] = image
    for i, t in enumerate(batch.data):
        if out[i] is None:
            out[i] = t.to(device, non_blocking=True)
    return out  # type: ignore[return-value]


def device_images(batch: EncodedBatch, device: torch.device) -> torch.Tensor:
    if batch.rows is None or batch.cols is None:
        raise ValueError("this EncodedBatch carries raw images (no geometry); cut crops with decode_images")
    images = decode_images(batch, device)
    out = resample(images, batch.rows, batch.cols, batch.flip, batch.size)
    if batch.colour is not None and len(images):
        out = apply_colour(out, *(t.to(device, non_blocking=True) for t in batch.colour))
    return out


def resample(
    images: Sequence[torch.Tensor], rows: np.ndarray, cols: np.ndarray, flip: np.ndarray | None, size: int
) -> torch.Tensor:
    """Crop, antialiased-resize and mirror images per ``rows``/``cols``/``flip`` (numpy: no device read)."""
    if not images:
        return torch.empty(0, 3, size, size)
    out = torch.empty(len(images), images[0].shape[0], size, size, device=images[0].device)
    flips = [False] * len(images) if flip is None else np.asarray(flip).tolist()
    rows, cols = np.asarray(rows).tolist(), np.asarray(cols).tolist()
    for k, (image, row, col) in enumerate(zip(images, rows, cols, strict=True)):
        (top, height, out_h, keep_r), (left, width, out_w, keep_c) = (map(int, row), map(int, col))
        x = image[None, :, top : top + height, left : left + width].float()
        y = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True)
        y = y[0, :, keep_r : keep_r + size, keep_c : keep_c + size]
        out[k].copy_(y.flip(-1) if flips[k] else y)
    return out
