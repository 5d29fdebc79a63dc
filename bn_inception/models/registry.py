"""timm registration of ``bn_inception``, ``bn_inception_small`` and ``bn_mlp`` (keywords: README, "Models").

Each model's timm ``pretrained_cfg`` describes it as built (input size, final grid ``pool_size``, first
convolution, classes, mean, std) and our single-crop evaluation (``crop_pct``: shorter side to ``img_size *
256 / 224``, bilinear), so ``timm.data.resolve_data_config(model=model)`` preprocesses as ``evaluate.py``.
One pretrained tag, ``bn_inception.caffe_port``: the Caffe BN-Inception (pretrainedmodels ``bninception``)
converted by ``scripts/convert_caffe_bninception.py``, its network and input; the weights come from the
user's converted file (``pretrained_cfg_overlay=dict(file=...)``): nothing is downloaded.
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

# The small model's default width: Figure 5's widths times 1/8 (162k parameters, 6.7M multiply-adds at 28x28).
# Measured (benchmarks/model_step_time.py, 2 CPU cores): a batch-32 step takes ~60-70 ms (0.25: ~75-120 ms),
# dominated by the per-layer overhead of the 69 units, not by width; 1/8 is the cheapest that still learns
# Fashion-MNIST well (85% after one epoch at lr 0.0075).
SMALL_WIDTH_MULT = 0.125

FASHION_MNIST = ((0.2860,), (0.3530,))  # the training set's pixel mean and std (values in [0, 1])
IMAGENET = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)

# The Caffe port's input (pretrainedmodels' pretrained_settings["bninception"]): BGR in 0-255 minus this mean,
# std 1. Ours is RGB in [0, 1], (x - mean) / std, and (x - m / 255) / (1 / 255) = 255 x - m: the same input.
CAFFE_MEAN_BGR = (104.0, 117.0, 128.0)
CAFFE_MEAN, CAFFE_STD = tuple(m / 255.0 for m in reversed(CAFFE_MEAN_BGR)), (1.0 / 255.0,) * 3
TAG_ARCH = {"caffe_port": dict(table="caffe", stem="plain", pool="caffe")}  # each tag's network
CAFFE_PORT_HELP = (
    "bn_inception.caffe_port needs its weights file: download the Caffe BN-Inception's PyTorch port "
    "(pretrainedmodels' bninception; the URL is in its pretrainedmodels/models/bninception.py), convert it "
    "with python scripts/convert_caffe_bninception.py PORT.pth bninception_caffe.pt, then pass "
    "pretrained_cfg_overlay=dict(file='bninception_caffe.pt')"
)


def _cfg(classes: int, size: tuple, mean: tuple, std: tuple, conv: str, **kwargs: Any) -> dict[str, Any]:
    """A registered cfg; ``_create`` recomputes its size-dependent entries per model."""
    return dict(url="", interpolation="bilinear", classifier="fc", crop_pct=0.875, num_classes=classes,
                input_size=size, mean=mean, std=std, first_conv=conv, **kwargs)  # fmt: skip


CFGS = {
    "bn_inception": _cfg(1000, (3, 224, 224), *IMAGENET, "features.conv1.conv.0", pool_size=(7, 7)),
    "bn_inception.caffe_port": _cfg(
        1000, (3, 224, 224), CAFFE_MEAN, CAFFE_STD, "features.conv1.conv", pool_size=(7, 7),
        origin_url="https://github.com/Cadene/pretrained-models.pytorch",
        notes=(CAFFE_PORT_HELP, "ImageNet val single crop 73.52% top-1 / 91.56% top-5, the port's README")),
    "bn_inception_small": _cfg(10, (1, 28, 28), *FASHION_MNIST, "features.conv1.conv", pool_size=(4, 4)),
    "bn_mlp": _cfg(10, (1, 28, 28), (0.0,), (1.0,), "hidden.0.fc"),  # Sec. 4.1: the raw pixels in [0, 1]
}  # fmt: skip
default_cfgs = generate_default_cfgs(CFGS)


def _create(
    variant: str, model_cls: type[nn.Module], pretrained: bool, img_size: int, extra: dict, **kwargs: Any
) -> nn.Module:
    """Build through timm with the cfg of the model these keywords build (``extra``: model-specific entries)
    under the caller's ``pretrained_cfg_overlay``. ``pretrained=True`` loads a tag's file through timm
    (``weights_only``, adapting classifier and input channels; the cfg keeps the weights' classes, chans)."""
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
            model_cls, variant, pretrained=pretrained, pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=overlay, img_size=img_size, **kwargs,
            feature_cfg=dict(flatten_sequential=True, out_indices=(1, 2, 3, 4)),  # (fresh: timm edits it)
        )  # fmt: skip
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
