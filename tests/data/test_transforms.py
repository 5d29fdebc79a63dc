"""Sec. 4.2.1 transforms: documented sizes and ranges, torchvision's crop distribution, determinism, and the
uint8 output matching the float pipeline it replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from bn_inception.data import to_model_input
from bn_inception.data.rng import sample_uniforms
from bn_inception.data.transforms import (
    COLOR_ORDERINGS,
    NUM_DRAWS,
    TrainAugment,
    apply_colour,
    distortion_strength,
    eval_sizes,
    photometric_params,
    photometric_terms,
    random_resized_crop_box,
)

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def apply_photometric(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The distortion on (B, C, H, W) floats in [0, 1]."""
    return apply_colour(x, *photometric_terms(params, x.shape[1]), scale=1.0)


def test_eval_sizes_follow_256_over_224():
    assert eval_sizes(224) == (256, 224)
    assert eval_sizes(28) == (32, 28)
    assert eval_sizes(32) == (37, 32)


def test_uniform_draws_are_a_pure_function_of_seed_epoch_and_index():
    a = sample_uniforms(7, 3, [5, 9, 11], NUM_DRAWS)
    assert a.shape == (3, NUM_DRAWS) and ((a >= 0) & (a < 1)).all()
    np.testing.assert_array_equal(a[1], sample_uniforms(7, 3, [9], NUM_DRAWS)[0])  # batch-independent
    assert not np.allclose(a, sample_uniforms(7, 4, [5, 9, 11], NUM_DRAWS))
    assert not np.allclose(a, sample_uniforms(8, 3, [5, 9, 11], NUM_DRAWS))


def _boxes(u, height, width):
    return np.array([random_resized_crop_box(row, height, width, SCALE, RATIO) for row in u.tolist()]).T


def test_crops_stay_inside_the_area_and_aspect_ranges():
    u = sample_uniforms(0, 0, np.arange(20000), NUM_DRAWS)
    top, left, h, w = _boxes(u, 375, 500)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 375).all() and (left + w <= 500).all()
    area = h * w / (375 * 500)
    assert area.min() > 0.075 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() > 0.74 and aspect.max() < 1.35


def test_crop_area_distribution_matches_torchvision():
    u = sample_uniforms(0, 0, np.arange(20000), NUM_DRAWS)
    _, _, h, w = _boxes(u, 375, 500)
    ours = np.sort(h * w / (375 * 500))
    torch.manual_seed(0)
    img = torch.empty(3, 375, 500)
    theirs = np.sort(
        [
            np.prod(RandomResizedCrop.get_params(img, list(SCALE), list(RATIO))[2:]) / (375 * 500)
            for _ in range(20000)
        ]
    )
    assert np.abs(np.quantile(ours, [0.1, 0.5, 0.9]) - np.quantile(theirs, [0.1, 0.5, 0.9])).max() < 0.02


def test_impossible_crops_fall_back_to_torchvisions_central_crop():
    u = sample_uniforms(0, 0, [0, 1], NUM_DRAWS)
    for height, width in ((10, 1000), (1000, 10)):
        expected = RandomResizedCrop.get_params(torch.empty(3, height, width), list(SCALE), list(RATIO))
        assert random_resized_crop_box(u[0], height, width, SCALE, RATIO) == tuple(expected)


def _augment(strength: float, size: int = 16) -> TrainAugment:
    return TrainAugment(size, SCALE, RATIO, strength, seed=0)


def _float_pipeline(crops: torch.Tensor, u: np.ndarray, strength: float) -> torch.Tensor:
    """The pipeline before uint8 outputs: [0, 1] floats, flip, distortion, clip, normalise."""
    x = crops.float() / 255
    flipped = torch.from_numpy(u[:, 22] < 0.5)
    x[flipped] = x[flipped].flip(-1)
    if strength:
        x = apply_photometric(x, photometric_params(u, strength))
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_uint8_output_normalised_on_the_device_equals_the_float_pipeline(strength):
    crops = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    u = sample_uniforms(0, 0, np.arange(64), NUM_DRAWS)
    out = _augment(strength).finish(crops, u)
    assert out.shape == (64, 3, 16, 16) and out.dtype == torch.uint8
    model_input = to_model_input(out, MEAN, STD, "cpu")
    assert model_input.dtype == torch.float32
    # Only the rounding to whole levels differs: at most half a level of 255, in normalised units.
    half_level = 0.5 / 255 / torch.tensor(STD).view(1, 3, 1, 1)
    assert ((model_input - _float_pipeline(crops, u, strength)).abs() <= half_level + 1e-5).all()


def test_no_distortion_is_flip_only():
    crops = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    u = sample_uniforms(0, 0, np.arange(32), NUM_DRAWS)
    out = _augment(0.0, 8).finish(crops, u)
    flipped = u[:, 22] < 0.5
    assert 4 < flipped.sum() < 28  # both branches exercised
    expected = crops.clone()
    expected[flipped] = expected[flipped].flip(-1)
    assert torch.equal(out, expected)


def _sequential_reference(x: torch.Tensor, p: dict[str, torch.Tensor], i: int) -> torch.Tensor:
    """Sample i's four colour ops one after another on a [0, 1] image, as torchvision defines them."""
    luma = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)
    img = x.clone()
    for op in COLOR_ORDERINGS[int(p["order"][i])]:
        if op == "B":
            img = img + p["brightness"][i]
        elif op == "S":
            grey = (img * luma).sum(0, keepdim=True)
            img = p["saturation"][i] * img + (1 - p["saturation"][i]) * grey
        elif op == "H":
            theta = 2 * np.pi * float(p["hue"][i])
            k = torch.full((3,), 1 / np.sqrt(3.0))
            cross = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
            rot = (
                np.cos(theta) * torch.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * torch.outer(k, k)
            )
            img = torch.einsum("ij,jhw->ihw", rot.float(), img)
        else:
            grey = (img * luma).sum(0).mean()
            img = p["contrast"][i] * img + (1 - p["contrast"][i]) * grey
    return img.clamp(0, 1)


def test_composed_colour_map_equals_the_ops_applied_one_by_one():
    """The batch-composed affine map (with contrast's mean term) is the four ops in each sample's order."""
    x = torch.rand(24, 3, 6, 6) * 0.6 + 0.2
    u = sample_uniforms(5, 0, np.arange(24), NUM_DRAWS)
    p = photometric_params(u, 1.0)
    assert len(set(p["order"].tolist())) == 4  # every ordering exercised
    out = apply_photometric(x.clone(), p)
    for i in range(24):
        torch.testing.assert_close(out[i], _sequential_reference(x[i], p, i), atol=1e-5, rtol=0)


def test_reduced_distortion_changes_images_less_than_full():
    x = torch.rand(256, 3, 12, 12) * 0.6 + 0.2
    u = sample_uniforms(1, 0, np.arange(256), NUM_DRAWS)
    change = {
        s: (apply_photometric(x.clone(), photometric_params(u, s)) - x).abs().mean().item()
        for s in (0.5, 1.0)
    }
    assert 0 < change[0.5] < 0.75 * change[1.0]
    torch.testing.assert_close(apply_photometric(x.clone(), photometric_params(u, 0.0)), x)


def test_hue_rotation_keeps_greys_and_saturation_zero_makes_grey():
    grey = torch.full((4, 3, 2, 2), 0.4)
    u = sample_uniforms(2, 0, np.arange(4), NUM_DRAWS)
    params = photometric_params(u, 1.0)
    params.update(brightness=torch.zeros(4), contrast=torch.ones(4), saturation=torch.ones(4))
    torch.testing.assert_close(apply_photometric(grey.clone(), params), grey)
    colour = torch.rand(4, 3, 5, 5)
    params.update(hue=torch.zeros(4), saturation=torch.zeros(4))
    out = apply_photometric(colour.clone(), params)
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-6, rtol=0)


def test_greyscale_images_get_brightness_and_contrast_only():
    x = torch.rand(16, 1, 6, 6) * 0.5 + 0.25
    u = sample_uniforms(3, 0, np.arange(16), NUM_DRAWS)
    p = photometric_params(u, 1.0)
    out = apply_photometric(x.clone(), p)

    def contrast(img, f):
        return img.mean() + (img - img.mean()) * f

    for i in range(16):
        b, c = p["brightness"][i], p["contrast"][i]
        # Orderings BSHC and SBCH apply brightness before contrast; CHBS and HSCB after.
        expected = contrast(x[i] + b, c) if int(p["order"][i]) in (0, 1) else contrast(x[i], c) + b
        torch.testing.assert_close(out[i], expected.clamp(0, 1), atol=1e-5, rtol=0)


def test_distortion_names():
    assert distortion_strength("full", 0.5) == 1.0
    assert distortion_strength("reduced", 0.3) == 0.3
    assert distortion_strength("none", 0.5) == 0.0


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_per_image_finishing_equals_the_batched_one(strength):
    augment = TrainAugment(12, SCALE, RATIO, strength, seed=0)
    crops = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8)
    u = sample_uniforms(0, 0, np.arange(8), NUM_DRAWS)
    channels_last = [c[None].contiguous(memory_format=torch.channels_last)[0] for c in crops]
    expected = augment.finish(crops, u)
    out = augment.finish_crops(channels_last, u)
    assert out.dtype == torch.uint8 and out.shape == expected.shape
    # Both round to the nearest level; float summation order may move a value sitting on .5 by one level.
    assert (out.int() - expected.int()).abs().max() <= 1 and (out != expected).float().mean() < 0.01
