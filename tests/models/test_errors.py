"""Bad input gets a one-line ValueError that names the bad value and what is valid."""

from __future__ import annotations

import pytest
import timm
import torch

import bn_inception  # noqa: F401

SMALL = dict(width_mult=0.125)


def _one_line_error(fn, *args, **kwargs) -> str:  # noqa: ANN001
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "name, key, bad, valid",
    [
        ("bn_inception", "norm", "layer", ["batch", "paper", "ghost", "none"]),
        ("bn_inception", "act", "tanh", ["relu", "sigmoid"]),
        ("bn_inception", "stem", "deep", ["separable", "plain"]),
        ("bn_inception", "table", "googlenet", ["tf", "caffe"]),
        ("bn_inception_small", "norm", "group", ["batch", "paper", "ghost", "none"]),
        ("bn_inception_small", "table", "v3", ["tf", "caffe"]),
        ("bn_mlp", "norm", "layer", ["batch", "paper", "ghost", "none"]),
        ("bn_mlp", "act", "gelu", ["relu", "sigmoid"]),
    ],
)
def test_unknown_choice_names_the_value_and_the_valid_ones(
    name: str, key: str, bad: str, valid: list
) -> None:
    message = _one_line_error(timm.create_model, name, **{key: bad})
    assert f"{key}={bad!r}" in message
    assert all(repr(v) in message for v in valid)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(bn_momentum=1.5), ["bn_momentum=1.5", "NEW batch"]),
        (dict(ghost_batch_size=1, norm="ghost"), ["ghost_batch_size=1"]),
        (dict(width_mult=0.0), ["width_mult=0.0"]),
        (dict(drop_rate=1.0), ["drop_rate=1.0"]),
        (dict(last_bn=True, norm="none"), ["last_bn=True", "norm='none'"]),
    ],
)
def test_bad_numbers_are_refused(kwargs: dict, words: list) -> None:
    message = _one_line_error(timm.create_model, "bn_inception_small", **kwargs)
    assert all(w in message for w in words)


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("bn_inception_small", dict(SMALL, norm="batch"), (1, 1, 28, 28)),
        ("bn_inception_small", dict(SMALL, norm="paper"), (1, 1, 28, 28)),
        ("bn_inception_small", dict(SMALL, norm="ghost"), (1, 1, 28, 28)),
        ("bn_mlp", dict(norm="batch"), (1, 1, 28, 28)),
    ],
)
def test_batch_of_one_in_training_mode_is_refused_for_bn(name: str, kwargs: dict, shape: tuple) -> None:
    model = timm.create_model(name, **kwargs)
    message = _one_line_error(model, torch.randn(shape))
    assert "batch of 1" in message and "model.eval()" in message
    assert model.eval()(torch.randn(shape)).shape == (1, 10)  # inference on one example is fine


def test_batch_of_one_trains_without_bn() -> None:
    model = timm.create_model("bn_inception_small", norm="none", **SMALL)
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize(
    "name, kwargs, shape, words",
    [
        ("bn_inception", {}, (2, 3, 16, 16), ["16x16", "32x32", "bn_inception_small"]),
        ("bn_inception_small", SMALL, (2, 1, 4, 4), ["4x4", "8x8"]),
        ("bn_inception_small", SMALL, (2, 3, 28, 28), ["(N, 1, H, W)", "(2, 3, 28, 28)"]),
        ("bn_mlp", {}, (2, 1, 32, 32), ["784", "(2, 1, 32, 32)"]),
    ],
)
def test_input_the_network_cannot_take_is_refused(name: str, kwargs: dict, shape: tuple, words: list) -> None:
    model = timm.create_model(name, **kwargs).eval()
    message = _one_line_error(model, torch.randn(shape))
    assert all(w in message for w in words), message
