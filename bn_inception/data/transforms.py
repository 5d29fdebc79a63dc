"""Training and evaluation transforms (Sec. 4.2.1, GoogLeNet Sec. 6), every draw from (seed, epoch, index).

Training: RandomResizedCrop's box (8%-100% area, ratio [3/4, 4/3]) with antialiased bilinear resampling
(the BN paper names no interpolation), a flip with probability 1/2, then TF-slim's ``distort_color`` (after
Howard 2013) in one of four orders, clipped once; ``reduced`` (Sec. 4.2.1 item 7) scales every range.
Hue rotates about RGB's grey axis (HSV cost ~2 ms per 224 px image), so all four ops are affine in the
colour: one 3x3 matrix + offset per sample. Evaluation: shorter side to ``input_size * 256 / 224``, centre
crop. Output is uint8 (workers send a quarter of the bytes); mean/std are applied on the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torchvision.transforms.v2 import functional as F

from bn_inception.data.rng import sample_uniforms

# TF-slim inception_preprocessing.distort_color ranges ("full" strength).
FULL_BRIGHTNESS_DELTA = 32.0 / 255.0
FULL_SATURATION_RANGE = 0.5  # factor in [1 - r, 1 + r]
FULL_HUE_DELTA = 0.2  # fraction of the colour circle
FULL_CONTRAST_RANGE = 0.5  # factor in [1 - r, 1 + r]
# The four op orders of TF-slim distort_color (B = brightness, S = saturation, H = hue, C = contrast).
COLOR_ORDERINGS = ("BSHC", "SBCH", "CHBS", "HSCB")
# torchvision's rgb_to_grayscale weights (ITU-R 601 luma).
_LUMA = (0.2989, 0.587, 0.114)

# Layout of the per-sample uniform draws (rng.sample_uniforms): fixed so a sample's draws never depend on
# which options are on.
_CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params tries 10 times before a central crop
_U_AREA = slice(0, _CROP_ATTEMPTS)
_U_RATIO = slice(_CROP_ATTEMPTS, 2 * _CROP_ATTEMPTS)
_U_TOP, _U_LEFT, _U_FLIP = 20, 21, 22
_U_BRIGHT, _U_SAT, _U_HUE, _U_CONTRAST, _U_ORDER = 23, 24, 25, 26, 27
_U_REPLACE = slice(28, 44)  # replacement picks for unreadable images (datasets.py)
NUM_DRAWS = 44


def eval_sizes(input_size: int) -> tuple[int, int]:
    """(resize, crop) of single-crop evaluation: 224 -> (256, 224); 28 -> (32, 28)."""
    return int(round(input_size * 256 / 224)), int(input_size)


def distortion_strength(distortion: str, reduced_strength: float) -> float:
    return {"full": 1.0, "reduced": float(reduced_strength), "none": 0.0}[distortion]


def eval_crop_box(height: int, width: int, input_size: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of evaluation's centre crop in the original image (training without augmentation)."""
    resize, crop = eval_sizes(input_size)
    side = max(1, round(min(height, width) * crop / resize))
    return (height - side) // 2, (width - side) // 2, side, side


def random_resized_crop_box(
    u: Sequence[float], height: int, width: int, scale: Sequence[float], ratio: Sequence[float]
) -> tuple[int, int, int, int]:
    """(top, left, h, w): RandomResizedCrop.get_params fed with one sample's draws ``u``. Plain Python
    floats: ~1 us, 40x less than numpy on one row."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for k in range(_CROP_ATTEMPTS):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[_U_AREA.start + k])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[_U_RATIO.start + k])
        w = round(math.sqrt(target_area * aspect))  # round half to even, as torchvision's round()
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            # torch.randint(0, n + 1) == floor(u * (n + 1)) for a uniform u.
            return int(u[_U_TOP] * (height - h + 1)), int(u[_U_LEFT] * (width - w + 1)), h, w
    # torchvision's fallback when no attempt fits: the largest central crop inside the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class TrainAugment:
    """A dataset's training augmentation: crop, flip, photometric distortion."""

    input_size: int
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    strength: float  # multiplier of the full photometric ranges (distortion_strength)
    seed: int
    random: bool = True  # False (data.augment=false): the evaluation crop, never mirrored

    def draws(self, epoch: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return sample_uniforms(self.seed, epoch, indices, NUM_DRAWS)

    def crop_box(self, u: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
        if not self.random:
            return eval_crop_box(height, width, self.input_size)
        return random_resized_crop_box(u, height, width, self.crop_scale, self.crop_ratio)

    def flips(self, u: np.ndarray) -> np.ndarray:
        return u[:, _U_FLIP] < (0.5 if self.random else 0.0)

    def colour_terms(self, u: np.ndarray, channels: int) -> tuple[torch.Tensor, ...] | None:
        if self.strength == 0:
            return None
        return tuple(t.float() for t in photometric_terms(photometric_params(u, self.strength), channels))

    def finish(self, crops: torch.Tensor, u: np.ndarray) -> torch.Tensor:
        """Flip and distort resized crops (B, C, S, S) in 0-255 (the in-memory path); uint8, rounded."""
        crops = torch.where(torch.from_numpy(self.flips(u)).view(-1, 1, 1, 1), crops.flip(-1), crops)
        terms = self.colour_terms(u, crops.shape[1])
        if terms is None:
            return crops if crops.dtype == torch.uint8 else crops.round().clamp_(0, 255).to(torch.uint8)
        return apply_colour(crops.float(), *terms).round_().to(torch.uint8)

    def finish_crops(self, crops: Sequence[torch.Tensor], u: np.ndarray) -> torch.Tensor:
        """:meth:`finish` for uint8 crops, one at a time while in cache, into a (shared-memory) batch:
        channels-last without colour (a plain copy), planar with it (the colour product on planar rows
        measured 2x faster than on interleaved pixels); ``to_model_input`` writes the model's layout."""
        c, s, _ = crops[0].shape
        flips = self.flips(u).tolist()
        terms = self.colour_terms(u, c)
        if terms is None:
            out = new_batch((len(crops), s, s, c))
            for j, crop in enumerate(crops):
                hwc = crop.permute(1, 2, 0)
                out[j].copy_(hwc.flip(1) if flips[j] else hwc)
            return out.permute(0, 3, 1, 2)
        matrix, base, from_mean = terms
        # + 0.5 and a clamp to [0.5, 255.5]: the truncating float -> uint8 copy then rounds to nearest.
        base = base * 255.0 + 0.5
        out = new_batch((len(crops), c, s, s))
        planar = torch.empty(c, s * s)
        for j, crop in enumerate(crops):
            planar.view(c, s, s).copy_(crop.flip(-1) if flips[j] else crop)
            offset = torch.addmv(base[j], from_mean[j], planar.sum(dim=1).mul_(1.0 / (s * s)))
            y = torch.addmm(offset.view(c, 1), matrix[j], planar).clamp_(0.5, 255.5)
            out[j].view(c, s * s).copy_(y)
        return out

    def replacement_draws(self, u: np.ndarray) -> np.ndarray:
        return u[:, _U_REPLACE]


def new_batch(shape: Sequence[int], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """An empty batch tensor, in shared memory in a loader worker (sending it copies nothing)."""
    if get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(nbytes)
    return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))


def stack_channels_last(images: Sequence[torch.Tensor]) -> torch.Tensor:
    c, h, w = images[0].shape
    out = new_batch((len(images), h, w, c))
    for j, image in enumerate(images):
        out[j].copy_(image.permute(1, 2, 0))
    return out.permute(0, 3, 1, 2)


def photometric_params(u: np.ndarray, strength: float) -> dict[str, torch.Tensor]:
    def symmetric(column: int, half_range: float) -> torch.Tensor:
        return torch.from_numpy((2.0 * u[:, column] - 1.0) * half_range * strength).float()

    return {
        "brightness": symmetric(_U_BRIGHT, FULL_BRIGHTNESS_DELTA),
        "saturation": 1.0 + symmetric(_U_SAT, FULL_SATURATION_RANGE),
        "hue": symmetric(_U_HUE, FULL_HUE_DELTA),
        "contrast": 1.0 + symmetric(_U_CONTRAST, FULL_CONTRAST_RANGE),
        "order": torch.from_numpy(np.floor(u[:, _U_ORDER] * len(COLOR_ORDERINGS)).astype(np.int64)),
    }


def apply_colour(
    x: torch.Tensor, matrix: torch.Tensor, base: torch.Tensor, from_mean: torch.Tensor, scale: float = 255.0
) -> torch.Tensor:
    """:func:`photometric_terms` on float (B, C, H, W) images in [0, ``scale``], clipped to it: one matrix a
    sample, ~5x cheaper than the four ops one by one."""
    b, c, h, w = x.shape
    means = x.mean(dim=(2, 3)).to(from_mean.dtype).unsqueeze(-1)
    offset = (base * scale + (from_mean @ means).squeeze(-1)).to(x.dtype)
    y = torch.bmm(matrix.to(x.dtype), x.reshape(b, c, h * w)).reshape(b, c, h, w)
    return y.add_(offset.view(b, c, 1, 1)).clamp_(0.0, scale)


def photometric_terms(params: dict[str, torch.Tensor], channels: int) -> tuple[torch.Tensor, ...]:
    """Each sample's sequence as ``colour -> M colour + base + P mean`` (float64; ``mean``: the undistorted
    image's channel means; contrast's grey is affine in it), so it is composed without the pixels.
    Greyscale gets brightness and contrast only. In numpy: torch's per-call overhead was a third of a
    Fashion-MNIST batch's loading time."""
    p = {key: value.numpy() for key, value in params.items()}
    b, c = len(p["order"]), channels
    luma = np.array(_LUMA) if c == 3 else np.ones(1)
    state = (np.tile(np.eye(c), (b, 1, 1)), np.zeros((b, c)), np.zeros((b, c, c)))
    available = "BSHC" if c == 3 else "BC"
    order = p["order"].tolist()
    for step in range(4):
        op_of_sample = [COLOR_ORDERINGS[o][step] for o in order]
        for op in sorted(set(op_of_sample) & set(available)):
            new = _AFFINE_OPS[op](*state, p, luma)
            chosen = np.array([o == op for o in op_of_sample])
            state = tuple(
                np.where(chosen.reshape(-1, *[1] * (old.ndim - 1)), n, old)
                for n, old in zip(new, state, strict=True)
            )
    return tuple(torch.from_numpy(np.ascontiguousarray(t)) for t in state)


def _factor(params: dict[str, np.ndarray], key: str) -> np.ndarray:
    return params[key].astype(np.float64).reshape(-1, 1, 1)


def _brightness(matrix, base, from_mean, params, luma):
    # Additive, as tf.image.adjust_brightness.
    return matrix, base + params["brightness"].astype(np.float64).reshape(-1, 1), from_mean


def _linear(blend, matrix, base, from_mean):
    return blend @ matrix, (blend @ base[..., None])[..., 0], blend @ from_mean


def _saturation(matrix, base, from_mean, params, luma):
    # Blend with the grey image (torchvision's adjust_saturation): f * x + (1 - f) * luma(x).
    f = _factor(params, "saturation")
    grey = np.outer(np.ones(3), luma)
    return _linear(f * np.eye(3) + (1 - f) * grey, matrix, base, from_mean)


def _hue(matrix, base, from_mean, params, luma):
    # Rodrigues rotation by 2*pi*delta about the grey axis k = (1, 1, 1)/sqrt(3).
    theta = 2.0 * math.pi * _factor(params, "hue")
    k = np.full(3, 1.0 / math.sqrt(3.0))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot = np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(k, k)
    return _linear(rot, matrix, base, from_mean)


def _contrast(matrix, base, from_mean, params, luma):
    # Blend with the image's mean grey (torchvision's adjust_contrast), taken after the ops so far:
    # grey = luma . ((M + P) mean + base), so the blend adds (1 - f) 1 luma^T (M + P) to P.
    f = _factor(params, "contrast")
    to_grey = np.ones((matrix.shape[-1], 1)) * luma.reshape(1, -1)  # 1 luma^T
    grey_base = (to_grey @ base[..., None])[..., 0]
    return (
        f * matrix,
        f[:, 0] * base + (1 - f[:, 0]) * grey_base,
        f * from_mean + (1 - f) * (to_grey @ (matrix + from_mean)),
    )


_AFFINE_OPS = {"B": _brightness, "S": _saturation, "H": _hue, "C": _contrast}


def resize_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear to size x size: torchvision's uint8 kernel without its dispatch (~0.1 ms);
    packed channels-last takes the vectorised path, 2-4x faster than Pillow."""
    x = img[None].contiguous(memory_format=torch.channels_last)
    return torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]


def eval_resize_crop(img: torch.Tensor, input_size: int) -> torch.Tensor:
    resize, crop = eval_sizes(input_size)
    return F.center_crop(F.resize(img, resize, antialias=True), [crop, crop])
