"""Test-time crop geometry: 1, 10 and GoogLeNet's 144 crops (Sec. 4.2.3), on synthetic images.

The images' shorter side is made exactly 256 so the first scale needs no resize and every crop can be
compared, pixel for pixel, with a slice of the original.
"""

import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from bn_inception.evaluation.crops import (
    crop_resize_sizes,
    make_crops,
    scaled_size,
    square_boxes,
)


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)


def test_scales_are_googlenets_at_224_and_scaled_for_small_inputs():
    assert crop_resize_sizes(144, 224) == (256, 288, 320, 352)
    assert crop_resize_sizes(1, 224) == crop_resize_sizes(10, 224) == (256,)
    assert crop_resize_sizes(144, 64) == (73, 82, 91, 101)
    assert scaled_size(256, 112) == 128


@pytest.mark.parametrize(("height", "width"), [(256, 384), (384, 256), (256, 256)])
def test_square_boxes_follow_the_long_side(height, width):
    boxes = square_boxes(height, width)
    assert all(side == 256 for _, _, side in boxes)
    if width > height:  # landscape: left, centre, right
        assert boxes == [(0, 0, 256), (0, 64, 256), (0, 128, 256)]
    elif height > width:  # portrait: top, centre, bottom
        assert boxes == [(0, 0, 256), (64, 0, 256), (128, 0, 256)]
    else:
        assert boxes == [(0, 0, 256)] * 3


@pytest.mark.parametrize(("height", "width"), [(256, 384), (384, 256)])
def test_144_crops_geometry(height, width):
    image = random_image(height, width)
    crops = make_crops(image, 144, 224)
    assert crops.shape == (144, 3, 224, 224) and crops.dtype == torch.uint8

    # The first scale (shorter side 256) is the image itself: the squares are slices of it.
    for s, (top, left, side) in enumerate(square_boxes(height, width)):
        square = image[:, top : top + side, left : left + side]
        group = crops[12 * s : 12 * s + 12]
        for i, (t, left_) in enumerate([(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]):  # tl tr bl br centre
            assert torch.equal(group[i], square[:, t : t + 224, left_ : left_ + 224])
        assert torch.equal(group[5], F.resize(square, [224, 224], antialias=True))  # the whole square
        for i in range(6):  # the mirrors follow their crops
            assert torch.equal(group[6 + i], group[i].flip(-1))

    # Every scale and square: 6 crops then their 6 mirrors; the 12 groups are distinct (4 scales x 3 squares).
    groups = crops.view(12, 12, 3, 224, 224)
    assert all(torch.equal(g[6:], g[:6].flip(-1)) for g in groups)
    assert len({g[4].float().mean().item() for g in groups}) == 12


def test_144_crops_of_a_portrait_image_are_the_transposed_landscape_crops():
    image = random_image(256, 384)
    landscape = make_crops(image, 144, 224)
    portrait = make_crops(image.transpose(1, 2), 144, 224)
    # Transposing swaps left/right with top/bottom squares and the tr/bl corners; centres and whole
    # squares map to themselves.
    for s in range(3):
        assert torch.equal(portrait[12 * s + 4], landscape[12 * s + 4].transpose(1, 2))
        assert torch.equal(portrait[12 * s + 1], landscape[12 * s + 2].transpose(1, 2))


def test_144_crops_scaled_for_a_small_input():
    crops = make_crops(random_image(80, 120), 144, 64)
    assert crops.shape == (144, 3, 64, 64)


def test_ten_crops_geometry():
    image = random_image(256, 320)
    crops = make_crops(image, 10, 224)
    assert crops.shape == (10, 3, 224, 224)
    corners = [image[:, t : t + 224, x : x + 224] for t, x in [(0, 0), (0, 96), (32, 0), (32, 96)]]
    centre = image[:, 16:240, 48:272]
    for crop, expected in zip(crops[:5], [*corners, centre], strict=True):
        assert torch.equal(crop, expected)
    # torchvision's ten_crop mirrors the image, then takes tl, tr, bl, br, centre: the mirror of tr is tl'.
    for mirrored, original in zip(crops[5:], [1, 0, 3, 2, 4], strict=True):
        assert torch.equal(mirrored, crops[original].flip(-1))


def test_single_crop_is_the_centre_of_the_256_resize():
    image = random_image(256, 320)
    crop = make_crops(image, 1, 224)
    assert crop.shape == (1, 3, 224, 224)
    assert torch.equal(crop[0], image[:, 16:240, 48:272])
    resized = make_crops(random_image(512, 640), 1, 224)  # shorter side 512 -> 256, then the centre
    assert resized.shape == (1, 3, 224, 224)


def test_pil_and_tensor_images_give_the_same_crops():
    image = random_image(300, 400)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    for crops in (1, 10, 144):
        assert torch.equal(make_crops(image, crops, 224), make_crops(pil, crops, 224))


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="use one of 1, 10, 144"):
        make_crops(random_image(256, 256), 5, 224)


def test_144_crops_of_a_28_pixel_square_are_48_distinct_each_three_times():
    from bn_inception.evaluation.ensemble import distinct_crops

    crops = make_crops(random_image(28, 28), 144, 28).unsqueeze(0)  # [1, 144, C, 28, 28]
    positions, counts = distinct_crops(crops)
    assert len(positions) == 48 and counts.tolist() == [3] * 48
    # The left, centre and right squares are one: each scale's first 12 crops (one square, mirrored too).
    assert positions.tolist() == [s * 36 + i for s in range(4) for i in range(12)]
    # A landscape image's three squares differ; what still coincides is found by content, as by hand.
    crops = make_crops(random_image(28, 40), 144, 28)
    positions, counts = distinct_crops(crops.unsqueeze(0))
    by_hand = [i for i in range(144) if not any(torch.equal(crops[i], crops[j]) for j in range(i))]
    assert positions.tolist() == by_hand and counts.sum() == 144 and len(by_hand) > 48
