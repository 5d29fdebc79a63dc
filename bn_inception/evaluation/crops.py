"""Test-time crops: 1 (resize + centre crop), 10 (corners + centre, mirrored) and 144 (GoogLeNet's protocol).

The paper (Sec. 4.2.3) follows GoogLeNet's 144-crop protocol: resize the shorter side to 256, 288, 320 and
352; from each take the left, centre and right squares (top, centre and bottom for portrait images); from
each square the 4 corner and the centre 224x224 crops plus the whole square resized to 224x224 (6 crops),
and the mirror of each: 4 x 3 x 6 x 2 = 144. Every size is given for 224-pixel inputs; a network with
another input size gets every size scaled by ``input_size / 224`` (see :func:`scaled_size`), so a 64-pixel
model sees the same fraction of the image as a 224-pixel one.

The crop boxes are plain functions of the image size (:func:`square_boxes`, :func:`corner_and_centre_boxes`)
so the geometry is testable without images; :func:`make_crops` applies them and returns one uint8 tensor
``[n_crops, C, S, S]``. Resizing uses torchvision's bilinear resize with antialiasing on the decoded
image tensor (a PIL image is converted first), as the data pipeline's validation transform does;
cropping and mirroring are tensor slices.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

CROP_COUNTS = (1, 10, 144)  # the protocols the evaluator knows
REFERENCE_INPUT = 224  # every size below is for this input size (the paper's)
SINGLE_CROP_RESIZE = 256  # shorter side before the centre crop ("the usual practice")
MULTI_CROP_SCALES = (256, 288, 320, 352)  # GoogLeNet's 4 scales (shorter side)

Box = tuple[int, int, int]  # (top, left, side) of a square


def scaled_size(size: int, input_size: int) -> int:
    """``size`` (given for 224-pixel inputs) for a network with ``input_size`` pixels, rounded.

    Rounded as the data pipeline's single-crop evaluation (``bn_inception.data.transforms.eval_sizes``:
    28 -> resize 32), so ``crops=1`` here and training-time validation see the same pixels; exact at 224.
    """
    return int(round(size * input_size / REFERENCE_INPUT))


def crop_resize_sizes(crops: int, input_size: int) -> tuple[int, ...]:
    """Shorter-side sizes the image is resized to for a protocol: one for 1 and 10 crops, four for 144."""
    if crops in (1, 10):
        return (scaled_size(SINGLE_CROP_RESIZE, input_size),)
    if crops == 144:
        return tuple(scaled_size(s, input_size) for s in MULTI_CROP_SCALES)
    raise ValueError(f"crops={crops} is not a protocol; use one of {', '.join(map(str, CROP_COUNTS))}")


def square_boxes(height: int, width: int) -> list[Box]:
    """The left, centre and right squares of a landscape image (top, centre, bottom for a portrait one).

    The side is the shorter side; for a square image the three coincide (GoogLeNet still takes all three,
    which keeps the count at 144 and the weight of every scale equal).
    """
    side = min(height, width)
    if width >= height:
        return [(0, 0, side), (0, (width - side) // 2, side), (0, width - side, side)]
    return [(0, 0, side), ((height - side) // 2, 0, side), (height - side, 0, side)]


def corner_and_centre_boxes(side: int, size: int) -> list[Box]:
    """Top-left, top-right, bottom-left, bottom-right and centre ``size`` squares of a ``side`` square.

    The centre offset rounds as torchvision's ``center_crop`` does.
    """
    if size > side:
        raise ValueError(f"a {size}-pixel crop does not fit in a {side}-pixel square")
    far, mid = side - size, int(round((side - size) / 2.0))
    return [(0, 0, size), (0, far, size), (far, 0, size), (far, far, size), (mid, mid, size)]


def _resize_shorter(image: Image.Image | torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the shorter side is ``size`` (bilinear, antialiased); returns a uint8 ``[C, H, W]`` tensor.

    PIL images are converted first, so every resize is torch's, as in the data pipeline's transforms.
    """
    if isinstance(image, Image.Image):
        image = F.pil_to_tensor(image)
    return F.resize(image, [size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)


def _slice(image: torch.Tensor, box: Box) -> torch.Tensor:
    top, left, side = box
    return image[..., top : top + side, left : left + side]


def single_crop(
    image: Image.Image | torch.Tensor, input_size: int, resize_size: int | None = None
) -> torch.Tensor:
    """Resize the shorter side to 256 (scaled) and take the centre ``input_size`` crop: ``[1, C, S, S]``."""
    resized = _resize_shorter(image, resize_size or scaled_size(SINGLE_CROP_RESIZE, input_size))
    return F.center_crop(resized, [input_size]).unsqueeze(0)


def ten_crops(
    image: Image.Image | torch.Tensor, input_size: int, resize_size: int | None = None
) -> torch.Tensor:
    """4 corners and the centre of the 256-resized image (scaled), and their mirrors: ``[10, C, S, S]``.

    Order as torchvision's ``ten_crop``: tl, tr, bl, br, centre, then the same of the mirrored image.
    """
    resized = _resize_shorter(image, resize_size or scaled_size(SINGLE_CROP_RESIZE, input_size))
    return torch.stack(F.ten_crop(resized, [input_size]))


def googlenet_144_crops(image: Image.Image | torch.Tensor, input_size: int) -> torch.Tensor:
    """GoogLeNet's 144 crops (sizes scaled for ``input_size``): ``[144, C, S, S]``.

    Order: scale (256, 288, 320, 352), square (left/top, centre, right/bottom), then the 6 crops
    (tl, tr, bl, br, centre, whole square resized) followed by their 6 mirrors.
    """
    crops = []
    for scale in crop_resize_sizes(144, input_size):
        resized = _resize_shorter(image, scale)
        for square in square_boxes(resized.shape[-2], resized.shape[-1]):
            patch = _slice(resized, square)
            six = [_slice(patch, box) for box in corner_and_centre_boxes(square[2], input_size)]
            six.append(F.resize(patch, [input_size, input_size], antialias=True))
            six = torch.stack(six)
            crops += [six, F.horizontal_flip(six)]
    return torch.cat(crops)


def make_crops(
    image: Image.Image | torch.Tensor, crops: int, input_size: int, resize_size: int | None = None
) -> torch.Tensor:
    """The ``crops`` test-time crops of one decoded image as a uint8 tensor ``[crops, C, S, S]``.

    ``image`` is a PIL image or a uint8 ``[C, H, W]`` tensor. ``resize_size`` overrides the single-crop
    and 10-crop resize (so 1-crop evaluation matches the data pipeline's validation transform exactly).
    """
    if crops == 1:
        return single_crop(image, input_size, resize_size)
    if crops == 10:
        return ten_crops(image, input_size, resize_size)
    if crops == 144:
        return googlenet_144_crops(image, input_size)
    raise ValueError(f"crops={crops} is not a protocol; use one of {', '.join(map(str, CROP_COUNTS))}")
