"""timm registration: ``timm.create_model(name, **kwargs)`` for every model of the project.

``bn_inception`` (Figure 5, 224x224), ``bn_inception_small`` (rows 3a..5b behind a small-image stem, widths
times ``width_mult``, for 28-64 px) and ``bn_mlp`` (Sec. 4.1); their keywords are listed in the README's
"Models" section. Each model carries a timm ``pretrained_cfg`` describing how it was built (input size, final
grid ``pool_size``, the first convolution of its stem, classes, mean, std) and our evaluation protocol
(``crop_pct``: the single-crop evaluation's resize of the shorter side to ``img_size * 256 / 224``,
bilinear), so ``timm.data.resolve_data_config(model=model)`` preprocesses as ``evaluate.py`` does.

One pretrained tag, ``bn_inception.caffe_port``: the Caffe BN-Inception's weights (pretrainedmodels
``bninception``) converted by ``scripts/convert_caffe_bninception.py``; the tag builds the port's network
(``table="caffe", stem="plain", pool="caffe"``) with the port's input in its cfg. The weights come from a
file the user converted (``pretrained_cfg_overlay=dict(file=...)``): nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
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

# The Caffe port's input (pretrainedmodels' pretrained_settings["bninception"]): BGR in 0-255 minus this mean,
# std 1. Ours is RGB in [0, 1], (x - mean) / std, and (x - m / 255) / (1 / 255) = 255 x - m: the same input.
CAFFE_MEAN_BGR = (104.0, 117.0, 128.0)
CAFFE_MEAN, CAFFE_STD = tuple(m / 255.0 for m in reversed(CAFFE_MEAN_BGR)), (1.0 / 255.0,) * 3
# The architecture keywords each pretrained tag builds (its weights' network).
TAG_ARCH = {"caffe_port": dict(table="caffe", stem="plain", pool="caffe")}
CAFFE_PORT_HELP = (
    "bn_inception.caffe_port needs its weights file: download the Caffe BN-Inception's PyTorch port "
    "(pretrainedmodels' bninception; the URL is in its pretrainedmodels/models/bninception.py), convert it "
    "with python scripts/convert_caffe_bninception.py PORT.pth bninception_caffe.pt, then pass "
    "pretrained_cfg_overlay=dict(file='bninception_caffe.pt')"
)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return dict(url="", interpolation="bilinear", classifier="fc", crop_pct=0.875, **kwargs)


# The registered defaults; every entry that depends on the keywords is recomputed per model (_input_cfg).
# crop_pct 0.875: resize the shorter side to 256/224 of the input size, centre crop (single-crop evaluation).
CFGS = {
    "bn_inception": _cfg(
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="features.conv1.conv.0",  # the separable stem's depthwise convolution
    ),
    "bn_inception.caffe_port": _cfg(
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        mean=CAFFE_MEAN,
        std=CAFFE_STD,
        first_conv="features.conv1.conv",  # the plain stem
        origin_url="https://github.com/Cadene/pretrained-models.pytorch",
        notes=(CAFFE_PORT_HELP, "ImageNet val single crop 73.52% top-1 / 91.56% top-5, the port's README"),
    ),
    "bn_inception_small": _cfg(
        num_classes=10,
        input_size=(1, 28, 28),
        pool_size=(4, 4),
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        first_conv="features.conv1.conv",
    ),
    # Sec. 4.1 feeds the raw pixel values in [0, 1].
    "bn_mlp": _cfg(num_classes=10, input_size=(1, 28, 28), mean=(0.0,), std=(1.0,), first_conv="hidden.0.fc"),
}
default_cfgs = generate_default_cfgs(CFGS)


def _create(
    variant: str, model_cls: type[nn.Module], pretrained: bool, img_size: int, extra: dict, **kwargs: Any
) -> nn.Module:
    """Build through timm with the cfg of the model these keywords build (``extra``: its model-specific
    entries), under the caller's ``pretrained_cfg_overlay``. ``pretrained=True`` loads a tag's file through
    timm (``weights_only``, with timm's adaptation of classifier and input channels); the cfg then keeps the
    weights' classes and channels, as timm's own models do."""
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    tag = pretrained_cfg if isinstance(pretrained_cfg, str) else ""
    weights = CFGS.get(f"{variant}.{tag}" if tag else variant)
    if weights is None:
        raise ValueError(f"{variant}.{tag} is not a pretrained tag; the tags are {', '.join(CFGS)}")
    chans = kwargs.get("in_chans", weights["input_size"][0])
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    cfg = dict(extra, input_size=(chans, *size), crop_pct=eval_crop_pct(min(size)))
    cfg["num_classes"] = kwargs.get("num_classes", weights["num_classes"])
    for key in ("mean", "std"):  # a greyscale default for RGB input (or back): one value per channel
        values = tuple(weights[key])
        cfg[key] = values if len(values) == chans else (sum(values) / len(values),) * chans
    if pretrained:
        _check_pretrained(variant, tag, (kwargs.get("pretrained_cfg_overlay") or {}).get("file"))
        cfg.update(num_classes=weights["num_classes"], input_size=(weights["input_size"][0], *size))
    overlay = {**cfg, **(kwargs.pop("pretrained_cfg_overlay", None) or {})}
    kwargs.pop("cache_dir", None)
    # timm's factory keywords: the tensors are made on ``device`` (e.g. "meta": shapes only), then cast.
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained=pretrained,
            pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=overlay,
            feature_cfg=dict(flatten_sequential=True, out_indices=(1, 2, 3, 4)),  # (fresh: timm edits it)
            img_size=img_size,
            **kwargs,
        )
    return model.to(dtype=dtype) if dtype is not None else model


def _check_pretrained(variant: str, tag: str, file: str | None) -> None:
    """One line saying where the weights come from, before anything is built."""
    if not tag:
        raise ValueError(
            f"{variant} has no pretrained weights of its own (this project trains them): use "
            "pretrained=False (checkpoint_path=... loads a checkpoint), or bn_inception.caffe_port"
        )
    if not file or not Path(file).is_file():
        raise ValueError((f"file={file!r} does not exist; " if file else "") + CAFFE_PORT_HELP)


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


def _inception(variant: str, rows: tuple, pretrained: bool, img_size: int, **kwargs: Any) -> nn.Module:
    kwargs = {**dict(stem="plain" if variant == "bn_inception_small" else "separable", pool="tf"), **kwargs}
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    extra = dict(
        pool_size=tuple(final_grid(rows, s, kwargs["pool"]) for s in size),
        first_conv="features.conv1.conv" + (".0" if kwargs["stem"] == "separable" else ""),
    )
    return _create(variant, BNInception, pretrained, img_size, extra, rows=rows, name=variant, **kwargs)


@register_model
def bn_inception(pretrained: bool = False, img_size: int = 224, **kwargs: Any) -> nn.Module:
    """BN-Inception (Figure 5) for 224x224 input; the variants are keyword values (module docstring). A
    pretrained tag (``bn_inception.caffe_port``) sets the architecture keywords of its weights."""
    tag = kwargs.get("pretrained_cfg")
    kwargs = {**(TAG_ARCH.get(tag, {}) if isinstance(tag, str) else {}), **kwargs}
    return _inception("bn_inception", figure5_rows(kwargs.pop("table", "tf")), pretrained, img_size, **kwargs)


@register_model
def bn_inception_small(
    pretrained: bool = False, table: str = "tf", width_mult: float = SMALL_WIDTH_MULT, **kwargs: Any
) -> nn.Module:
    """BN-Inception's rows 3a..5b, widths times ``width_mult``, behind a small-image stem (3x3 stride-1
    convolution, one pooling: 28 -> 14 -> 7 -> 4), for 28-64 px images (Fashion-MNIST, CIFAR)."""
    check_positive("width_mult", width_mult)
    rows = small_rows(table, width_mult)
    return _inception("bn_inception_small", rows, pretrained, kwargs.pop("img_size", 28), **kwargs)


@register_model
def bn_mlp(pretrained: bool = False, img_size: int = 28, **kwargs: Any) -> nn.Module:
    """The Sec. 4.1 MLP: 3 hidden layers of 100 sigmoid units, optional BN on each (``norm``)."""
    return _create("bn_mlp", BNMLP, pretrained, img_size, dict(first_conv="hidden.0.fc"), **kwargs)
