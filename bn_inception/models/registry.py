"""timm registration: ``timm.create_model(name, **kwargs)`` for every model of the project.

Registered names and their keyword arguments (defaults in brackets):

- ``bn_inception``: BN-Inception, Figure 5, 224x224. ``num_classes`` [1000], ``in_chans`` [3], ``drop_rate``
  [0.0], ``norm`` ["batch"|"paper"|"ghost"|"none"], ``ghost_batch_size`` [32], ``act`` ["relu"|"sigmoid"],
  ``lrn`` [False], ``stem`` ["separable"|"plain"], ``table`` ["tf"|"caffe"], ``pool`` ["tf"|"caffe"],
  ``global_pool`` ["avg"|"max"|"avgmax"|"catavgmax"|""], ``init_scale`` [1.0], ``last_bn`` [False],
  ``bn_eps`` [1e-5], ``bn_momentum`` [0.1], ``img_size`` [224]; timm's ``features_only`` [False] and
  ``out_indices`` [(1, 2, 3, 4): the ends of the stem and of the 28, 14 and 7 px stages; index 0 is conv1].
- ``bn_inception_small``: the same rows 3a..5b behind a small-image stem, for 28-64 px; the same keywords
  (defaults ``num_classes`` 10, ``in_chans`` 1, ``img_size`` 28, ``stem`` "plain") plus ``width_mult``
  [``SMALL_WIDTH_MULT``], which scales every row's widths.
- ``bn_mlp``: the Sec. 4.1 MLP. ``num_classes`` [10], ``in_chans`` [1], ``img_size`` [28], ``norm``
  ["batch"|"paper"|"ghost"|"none"], ``act`` ["sigmoid"|"relu"], ``hidden`` [100], ``depth`` [3],
  ``init_std`` [None = 1/sqrt(fan_in)], ``drop_rate`` [0.0], ``bn_eps``, ``bn_momentum``,
  ``ghost_batch_size``.

No weights are published for these models: ``pretrained=True`` raises (load a checkpoint with
``checkpoint_path=``). Each model carries a timm ``pretrained_cfg`` describing how it was built (input
size, final grid ``pool_size``, the first convolution of its stem, classes, mean, std) and our evaluation
protocol (``crop_pct``: the single-crop evaluation's resize of the shorter side to ``img_size * 256 / 224``,
bilinear), so ``timm.data.resolve_data_config(model=model)`` preprocesses as ``evaluate.py`` does.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model
from torch import nn

from .figure5 import figure5_rows, small_rows
from .inception import BNInception, final_grid
from .layers import check_positive
from .mlp import BNMLP

# The small model's default width: every row of Figure 5 times 1/8 (3a: 32 channels out, 5b: 128; 162k
# parameters, 6.7M multiply-adds at 28x28). Chosen by measurement (benchmarks/model_step_time.py, 2 CPU
# cores): a batch-32 training step on 28x28x1 takes ~60-70 ms (0.25: ~75-120 ms). The cost is dominated by
# the fixed per-layer overhead of the 69 conv-BN-ReLU units of rows 3a..5b, not by width, so no width
# reaches 15-30 ms in eager mode; 1/8 is the cheapest that still learns Fashion-MNIST well (85% after one
# epoch at lr 0.0075).
SMALL_WIDTH_MULT = 0.125

# Fashion-MNIST training-set pixel statistics (values in [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return dict(url="", interpolation="bilinear", classifier="fc", **kwargs)


# The registered defaults; every entry that depends on the keywords is recomputed per model (_inception_cfg).
default_cfgs = {
    "bn_inception": _cfg(
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=0.875,  # 224/256: resize the shorter side to 256, centre crop 224 (single-crop evaluation)
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="features.conv1.conv.0",  # the separable stem's depthwise convolution
    ),
    "bn_inception_small": _cfg(
        num_classes=10,
        input_size=(1, 28, 28),
        pool_size=(4, 4),
        crop_pct=0.875,  # 28/32, as our evaluation (resize to 32, centre crop 28)
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        first_conv="features.conv1.conv",  # the plain stem
    ),
    "bn_mlp": _cfg(
        num_classes=10,
        input_size=(1, 28, 28),
        crop_pct=0.875,
        mean=(0.0,),  # Sec. 4.1 feeds the raw pixel values in [0, 1]
        std=(1.0,),
        first_conv="hidden.0.fc",
    ),
}


def _create(
    variant: str,
    model_cls: type[nn.Module],
    pretrained: bool,
    cfg: dict[str, Any],
    feature_cfg: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build through timm with ``cfg`` (what this model is) under the caller's ``pretrained_cfg_overlay``."""
    if pretrained:
        raise ValueError(
            f"{variant} has no pretrained weights (this project trains them); use pretrained=False and "
            "load a checkpoint with checkpoint_path=... or its 'model' state dict"
        )
    kwargs.pop("cache_dir", None)
    overlay = {**cfg, **(kwargs.pop("pretrained_cfg_overlay", None) or {})}
    # timm's factory keywords: the tensors are made on ``device`` (e.g. "meta": shapes only), then cast.
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained=False,
            pretrained_cfg_overlay=overlay,
            feature_cfg=dict(feature_cfg or {}),  # a copy: timm edits it
            **kwargs,
        )
    return model.to(dtype=dtype) if dtype is not None else model


def _square(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


def _input_cfg(variant: str, img_size: int | tuple[int, int], kwargs: dict[str, Any]) -> dict[str, Any]:
    """input_size, num_classes, crop_pct, mean and std of the model these keywords build."""
    default = default_cfgs[variant]
    chans = kwargs.get("in_chans", default["input_size"][0])
    size = _square(img_size)
    cfg = dict(
        input_size=(chans, *size),
        num_classes=kwargs.get("num_classes", default["num_classes"]),
        crop_pct=eval_crop_pct(min(size)),
    )
    for key in ("mean", "std"):
        values = tuple(default[key])
        if len(values) != chans:  # e.g. a greyscale default for RGB input: one value per channel
            values = (sum(values) / len(values),) * chans
        cfg[key] = values
    return cfg


def _inception_cfg(
    variant: str, rows: tuple, img_size: int | tuple[int, int], stem: str, pool: str, kwargs: dict[str, Any]
) -> dict[str, Any]:
    cfg = _input_cfg(variant, img_size, kwargs)
    cfg["pool_size"] = tuple(final_grid(rows, s, pool) for s in _square(img_size))
    cfg["first_conv"] = "features.conv1.conv.0" if stem == "separable" else "features.conv1.conv"
    return cfg


def eval_crop_pct(input_size: int) -> float:
    """timm's ``crop_pct`` for our single-crop evaluation of ``input_size`` px inputs (shorter side resized
    to ``bn_inception.data.transforms.eval_sizes``, then the centre crop): timm resizes to
    floor(input_size / crop_pct), so the fraction is nudged down until that floor is our resize exactly."""
    from bn_inception.data.transforms import eval_sizes  # at call time: the data package imports models

    resize, crop = eval_sizes(input_size)
    pct = crop / resize
    while math.floor(crop / pct) < resize:
        pct = math.nextafter(pct, 0.0)
    return pct


# Feature maps for ``features_only=True``: the ends of the stem and of the three inception stages
# (feature_rows in inception.py; index 0, conv1, is available through ``out_indices``). timm's default list
# extractor runs the flattened ``features`` rows in order.
FEATURE_CFG = dict(flatten_sequential=True, out_indices=(1, 2, 3, 4))


@register_model
def bn_inception(
    pretrained: bool = False,
    table: str = "tf",
    img_size: int = 224,
    stem: str = "separable",
    pool: str = "tf",
    **kwargs: Any,
) -> nn.Module:
    """BN-Inception (Figure 5) for 224x224 input; the variants are keyword values (module docstring)."""
    rows = figure5_rows(table)
    cfg = _inception_cfg("bn_inception", rows, img_size, stem, pool, kwargs)
    return _create(
        "bn_inception",
        BNInception,
        pretrained,
        cfg,
        FEATURE_CFG,
        rows=rows,
        name="bn_inception",
        img_size=img_size,
        stem=stem,
        pool=pool,
        **kwargs,
    )


@register_model
def bn_inception_small(
    pretrained: bool = False,
    table: str = "tf",
    width_mult: float = SMALL_WIDTH_MULT,
    img_size: int = 28,
    stem: str = "plain",
    pool: str = "tf",
    **kwargs: Any,
) -> nn.Module:
    """BN-Inception's rows 3a..5b, widths times ``width_mult``, behind a small-image stem (3x3 stride-1
    convolution, one pooling: 28 -> 14 -> 7 -> 4), for 28-64 px images (Fashion-MNIST, CIFAR)."""
    check_positive("width_mult", width_mult)
    rows = small_rows(table, width_mult)
    cfg = _inception_cfg("bn_inception_small", rows, img_size, stem, pool, kwargs)
    return _create(
        "bn_inception_small",
        BNInception,
        pretrained,
        cfg,
        FEATURE_CFG,
        rows=rows,
        name="bn_inception_small",
        img_size=img_size,
        stem=stem,
        pool=pool,
        **kwargs,
    )


@register_model
def bn_mlp(pretrained: bool = False, img_size: int = 28, **kwargs: Any) -> nn.Module:
    """The Sec. 4.1 MLP: 3 hidden layers of 100 sigmoid units, optional BN on each (``norm``)."""
    cfg = _input_cfg("bn_mlp", img_size, kwargs)
    return _create("bn_mlp", BNMLP, pretrained, cfg, img_size=img_size, **kwargs)
