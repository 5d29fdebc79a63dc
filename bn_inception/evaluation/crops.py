"""Test-time crops: 1 (resize + centre crop), 10 (corners + centre, mirrored) and 144 (GoogLeNet's protocol).

The paper (Sec. 4.2.3) follows GoogLeNet's 144 crops: shorter side 256, 288, 320, 352; its left, centre and
right squares (top/centre/bottom for portraits); of each the 4 corner and the centre 224 crops plus the
square resized (6), and their mirrors: 4 x 3 x 6 x 2. Sizes are for 224-pixel inputs, scaled by
``input_size / 224`` so a 64-pixel model sees the same fraction of the image. Resizing is torchvision's
antialiased bilinear, as the data pipeline's validation transform.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

CROP_COUNTS = (1, 10, 144)  # the protocols the evaluator knows
REFERENCE_INPUT = 224  # every size below is for this input size (the paper's)
MULTI_CROP_SCALES = (256, 288, 320, 352)  # GoogLeNet's 4 scales (shorter side)


def scaled_size(size: int, input_size: int) -> int:
    """``size`` for ``input_size``-pixel inputs, rounded as validation (28 -> 32): ``crops=1`` matches."""
    return int(round(size * input_size / REFERENCE_INPUT))


def crop_resize_sizes(crops: int, input_size: int) -> tuple[int, ...]:
    if crops not in CROP_COUNTS:
        raise ValueError(f"crops={crops} is not valid; use one of {', '.join(map(str, CROP_COUNTS))}")
    return tuple(scaled_size(s, input_size) for s in (MULTI_CROP_SCALES if crops == 144 else (256,)))


def square_boxes(height: int, width: int) -> list[tuple[int, int, int]]:
    """(top, left, side) of the left, centre, right squares (top, centre, bottom for portraits)."""
    side = min(height, width)
    if width >= height:
        return [(0, 0, side), (0, (width - side) // 2, side), (0, width - side, side)]
    return [(0, 0, side), ((height - side) // 2, 0, side), (height - side, 0, side)]


def make_crops(image: Image.Image | torch.Tensor, crops: int, input_size: int) -> torch.Tensor:
    """``[crops, C, S, S]`` from one image (PIL or uint8 ``[C, H, W]``): 10 in ``ten_crop`` order; 144 by
    scale, square, then the 6 crops (tl, tr, bl, br, centre, square resized) and their 6 mirrors."""
    if isinstance(image, Image.Image):
        image = F.pil_to_tensor(image)
    resized = [F.resize(image, [s], antialias=True) for s in crop_resize_sizes(crops, input_size)]
    if crops == 1:
        return F.center_crop(resized[0], [input_size]).unsqueeze(0)
    if crops == 10:
        return torch.stack(F.ten_crop(resized[0], [input_size]))
    out = []
    for scaled in resized:
        for top, left, side in square_boxes(scaled.shape[-2], scaled.shape[-1]):
            patch = scaled[..., top : top + side, left : left + side]
            whole = F.resize(patch, [input_size, input_size], antialias=True)
            six = torch.stack([*F.five_crop(patch, [input_size]), whole])  # tl, tr, bl, br, centre, square
            out += [six, F.horizontal_flip(six)]
    return torch.cat(out)
