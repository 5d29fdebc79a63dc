"""On the training device: normalisation (:func:`to_model_input`, every consumer's one call: CPU workers
never convert to float, as in timm's PrefetchLoader, DALI, FFCV) and, with ``data.decode=gpu``
(experimental), the batched nvJPEG decode. A worker then sends an :class:`EncodedBatch` (the bytes and what
to make of the pixels, from the CPU path's (seed, epoch, index) draws), which the loader decodes into the
batch on the device: the training loop and the evaluator see one batch type either way.

Differences from the CPU path: nvJPEG's IDCT differs from libjpeg's by a level or so; resized training and
validation pixels stay float; no reduced-scale JPEG decoding. Files nvJPEG does not take (progressive, CMYK,
PNG) the worker decodes with Pillow. torchvision 0.29 deprecates ``decode_jpeg`` for TorchCodec:
``_decode_jpegs`` is the one function to switch.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from bn_inception.data.decode import decode_image_file, read_bytes
from bn_inception.data.transforms import TrainAugment, apply_colour, eval_resize_crop, resize_square


@functools.cache
def _normalise_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: building a CUDA tensor from a list is a blocking host-to-device copy.
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=device).view(1, -1, 1, 1)
    return scale, shift


def to_model_input(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A loader's batch (uint8 or float 0-255) -> ``(x / 255 - mean) / std`` on ``device``, one fused
    multiply-add in ``dtype`` and the model's memory format."""
    device = torch.device(device)
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


def resolve_decode(decode: str, device: torch.device | str | None, file_based: bool) -> torch.device | None:
    """``data.decode`` -> the device that decodes the JPEGs, None for the loader workers. ``auto`` is cpu
    until a GPU measurement shows gpu correct and faster (docs/benchmarks.md)."""
    if decode != "gpu":
        return None
    if not file_based:
        raise ValueError(
            "data.decode=gpu decodes image files; this dataset is held in memory: use cpu or auto"
        )
    if device is None or torch.device(device).type != "cuda":
        raise ValueError("data.decode=gpu needs training on a CUDA device; use data.decode=cpu or auto")
    try:
        import torchvision.io  # noqa: F401  (loads torchvision's image extension)

        nvjpeg = torch.cuda.is_available() and hasattr(torch.ops.image, "decode_jpegs_cuda")
    except (ImportError, RuntimeError, AttributeError):
        nvjpeg = False
    if not nvjpeg:
        raise ValueError(
            "data.decode=gpu: this torchvision cannot decode JPEGs on CUDA (no nvJPEG); use cpu or auto"
        )
    return torch.device(device)


def read_for_device(path: str) -> torch.Tensor:
    """The 1-D bytes of a complete baseline L/RGB JPEG (what nvJPEG takes), else Pillow's (3, H, W) pixels."""
    data = read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as img:
            takes = img.format == "JPEG" and img.mode in ("L", "RGB") and not img.info.get("progressive")
    except (OSError, ValueError, SyntaxError):
        takes = False
    if takes and data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return torch.frombuffer(data, dtype=torch.uint8)
    return pil_to_tensor(decode_image_file(path))


@dataclass
class EncodedBatch:
    """A worker's batch with ``data.decode=gpu``: :func:`read_for_device` images and ``finish`` (picklable),
    which :meth:`decode` applies to them decoded on ``device``, with ``tensors`` moved there, to give the
    batch. ``tensors`` are pinned by the loader's pin-memory thread (asynchronous copies); nvJPEG reads the
    bytes itself."""

    data: list[torch.Tensor]
    paths: list[str]
    device: torch.device
    finish: Callable[..., Any]
    tensors: tuple[torch.Tensor, ...] = ()

    def pin_memory(self, device: Any = None) -> EncodedBatch:
        return dataclasses.replace(self, tensors=tuple(t.pin_memory() for t in self.tensors))

    def decode(self) -> Any:
        coded = [i for i, t in enumerate(self.data) if t.dim() == 1]
        images = [t if t.dim() == 1 else t.to(self.device, non_blocking=True) for t in self.data]
        decoded = decode_jpegs([self.data[i] for i in coded], self.device, [self.paths[i] for i in coded])
        for i, image in zip(coded, decoded, strict=True):
            images[i] = image
        return self.finish(images, *(t.to(self.device, non_blocking=True) for t in self.tensors))


def encoded_batch(
    images: list[torch.Tensor], paths: list[str], device: torch.device, size: int,
    augment: TrainAugment | None = None, draws: np.ndarray | None = None,
) -> EncodedBatch:  # fmt: skip
    """A training (``augment``, one row of ``draws`` per image) or single-crop evaluation batch."""
    if augment is None:
        return EncodedBatch(images, paths, device, functools.partial(_eval_crops, size=size))
    colour = augment.colour_terms(draws, 3) or ()
    return EncodedBatch(images, paths, device, functools.partial(_train_crops, augment, draws), colour)


def _train_crops(
    augment: TrainAugment, draws: np.ndarray, images: list[torch.Tensor], *colour
) -> torch.Tensor:
    # The CPU path's crop box, antialiased resize and flip per image (shapes and draws are host values: no
    # device read), then the colour map on the whole batch.
    crops = []
    for image, u, flip in zip(images, draws.tolist(), augment.flips(draws).tolist(), strict=True):
        top, left, h, w = augment.crop_box(u, image.shape[1], image.shape[2])
        crop = resize_square(image[:, top : top + h, left : left + w].float(), augment.input_size)
        crops.append(crop.flip(-1) if flip else crop)
    return apply_colour(torch.stack(crops), *colour) if colour else torch.stack(crops)


def _eval_crops(images: list[torch.Tensor], size: int) -> torch.Tensor:
    return torch.stack([eval_resize_crop(image.float(), size) for image in images])


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
                out.append(pil_to_tensor(decode_image_file(path)).to(device))
        return out
