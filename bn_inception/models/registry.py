"""timm registration: ``timm.create_model(name, **kwargs)`` for every model of the project.

Registered names and their keyword arguments (defaults in brackets):

- ``bn_inception``: BN-Inception, Figure 5, 224x224. ``num_classes`` [1000], ``in_chans`` [3], ``drop_rate``
  [0.0], ``norm`` ["batch"|"paper"|"ghost"|"none"], ``ghost_batch_size`` [32], ``act`` ["relu"|"sigmoid"],
  ``lrn`` [False], ``stem`` ["separable"|"plain"], ``table`` ["tf"|"caffe"], ``init_scale`` [1.0],
  ``last_bn`` [False], ``bn_eps`` [1e-5], ``bn_momentum`` [0.1], ``img_size`` [224].
- ``bn_inception_small``: the same rows 3a..5b behind a small-image stem, for 28-64 px; the same keywords
  (defaults ``num_classes`` 10, ``in_chans`` 1, ``img_size`` 28, ``stem`` "plain") plus ``width_mult``
  [``SMALL_WIDTH_MULT``], which scales every row's widths.
- ``bn_mlp``: the Sec. 4.1 MLP. ``num_classes`` [10], ``in_chans`` [1], ``img_size`` [28], ``norm``
  ["batch"|"paper"|"ghost"|"none"], ``act`` ["sigmoid"|"relu"], ``hidden`` [100], ``depth`` [3],
  ``init_std`` [None = 1/sqrt(fan_in)], ``drop_rate`` [0.0], ``bn_eps``, ``bn_momentum``,
  ``ghost_batch_size``.

No weights are published for these models: ``pretrained=True`` raises. Each model carries a timm
``pretrained_cfg`` (input size, crop, mean, std, classes) matching how it was built, so
``timm.data.resolve_data_config(model=model)`` works.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model
from torch import nn

from .figure5 import figure5_rows, small_rows
from .inception import BNInception
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

default_cfgs = {
    "bn_inception": dict(
        url="",
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=0.875,  # 224/256: resize the shorter side to 256, centre crop 224 (single-crop evaluation)
        interpolation="bilinear",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="features.conv1.conv",
        classifier="fc",
    ),
    "bn_inception_small": dict(
        url="",
        num_classes=10,
        input_size=(1, 28, 28),
        pool_size=(4, 4),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        first_conv="features.conv1.conv",
        classifier="fc",
    ),
    "bn_mlp": dict(
        url="",
        num_classes=10,
        input_size=(1, 28, 28),
        crop_pct=1.0,
        interpolation="bilinear",
        mean=(0.0,),  # Sec. 4.1 feeds the raw pixel values in [0, 1]
        std=(1.0,),
        first_conv="hidden.0.fc",
        classifier="fc",
    ),
}


def _create(variant: str, model_cls: type[nn.Module], pretrained: bool, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise ValueError(
            f"{variant} has no pretrained weights (this project trains them); use pretrained=False and "
            "load a checkpoint's 'model' state dict"
        )
    kwargs.pop("cache_dir", None)
    model = build_model_with_cfg(model_cls, variant, pretrained=False, **kwargs)
    _match_cfg_to_model(model)
    return model


def _match_cfg_to_model(model: nn.Module) -> None:
    """Make the pretrained cfg describe this model (channels, size, classes), not the registered default."""
    cfg = model.pretrained_cfg
    chans = model.in_chans
    cfg["input_size"] = (chans, *model.img_size)
    cfg["num_classes"] = model.num_classes
    for key in ("mean", "std"):
        values = tuple(cfg[key])
        if len(values) != chans:  # e.g. a greyscale default for RGB input: one value per channel
            cfg[key] = (sum(values) / len(values),) * chans
    model.default_cfg = cfg


@register_model
def bn_inception(
    pretrained: bool = False, table: str = "tf", img_size: int = 224, **kwargs: Any
) -> nn.Module:
    """BN-Inception (Figure 5) for 224x224 input; the variants are keyword values (module docstring)."""
    rows = figure5_rows(table)
    return _create(
        "bn_inception", BNInception, pretrained, rows=rows, name="bn_inception", img_size=img_size, **kwargs
    )


@register_model
def bn_inception_small(
    pretrained: bool = False,
    table: str = "tf",
    width_mult: float = SMALL_WIDTH_MULT,
    img_size: int = 28,
    stem: str = "plain",
    **kwargs: Any,
) -> nn.Module:
    """BN-Inception's rows 3a..5b, widths times ``width_mult``, behind a small-image stem (3x3 stride-1
    convolution, one pooling: 28 -> 14 -> 7 -> 4), for 28-64 px images (Fashion-MNIST, CIFAR)."""
    check_positive("width_mult", width_mult)
    rows = small_rows(table, width_mult)
    return _create(
        "bn_inception_small",
        BNInception,
        pretrained,
        rows=rows,
        name="bn_inception_small",
        img_size=img_size,
        stem=stem,
        **kwargs,
    )


@register_model
def bn_mlp(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The Sec. 4.1 MLP: 3 hidden layers of 100 sigmoid units, optional BN on each (``norm``)."""
    return _create("bn_mlp", BNMLP, pretrained, **kwargs)
