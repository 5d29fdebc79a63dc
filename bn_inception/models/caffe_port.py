"""The published BN-Inception weights as one of our checkpoints: the Caffe model's PyTorch port.

The best-known trained BN-Inception is the Caffe model ported to PyTorch as ``bninception`` in Cadene's
pretrained-models package (its README reports 73.52% top-1 / 91.56% top-5 on ImageNet val, single 224 crop
of a 256 resize). Its network is our ``bn_inception`` with ``table="caffe"`` (the literal 4c/4d widths),
``stem="plain"`` and ``pool="caffe"`` (its pooling conventions); it differs only in how it is stored:

- every convolution has a bias. BN follows each one, and BN(Wx + b) with running mean mu is BN(Wx) with
  running mean mu - b, so each bias folds into its BN's running mean (Sec. 3.2: beta takes the bias's role);
- it takes BGR input in 0-255 minus a per-channel mean (B 104, G 117, R 128, std 1). Ours takes RGB in
  [0, 1] normalised with the ``mean``/``std`` its checkpoint stores; (x - m / 255) / (1 / 255) = 255 x - m,
  so storing the port's mean / 255 and std 1 / 255 (in RGB order) and reordering the first convolution's
  input channels from BGR gives the port's exact input.

``convert_state_dict`` checks a port state dict key by key (one-line :class:`ConversionError` naming the first
offending key and what was expected) and returns ours; ``port_checkpoint`` wraps it in our checkpoint format
(docs/design.md: ``model``, ``model_name``, ``model_kwargs``, ``data``), which ``evaluate.py``,
``bn_inception.engine.checkpoint.model_from_checkpoint`` and ``timm.create_model(..., checkpoint_path=...)``
load. Nothing is downloaded: the user brings the port's file (scripts/convert_caffe_bninception.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.data import ImageNetInfo
from timm.models import clean_state_dict
from torch import nn

from .layers import ConvNormAct

MODEL_NAME = "bn_inception"
# The port's architecture in our keywords (module docstring); 1000 ImageNet classes, RGB.
PORT_ARCH = dict(table="caffe", stem="plain", pool="caffe", num_classes=1000, in_chans=3)
# The port's input (pretrainedmodels' pretrained_settings["bninception"]): BGR, range 0-255, this mean.
PORT_MEAN_BGR = (104.0, 117.0, 128.0)
PORT_STD = 1.0
# The same input in our convention: RGB in [0, 1], (x - mean) / std.
MEAN = tuple(m / 255.0 for m in reversed(PORT_MEAN_BGR))
STD = (PORT_STD / 255.0,) * 3
# The port's evaluation transform (its TransformImage, scale 0.875): resize the shorter side to 256, centre
# crop 224: our single-crop protocol at input_size 224 (crop_pct 0.875, bilinear).
INPUT_SIZE = 224
# Our keywords for the converted network; the cfg overlay makes timm's resolve_data_config use its input.
MODEL_KWARGS = dict(PORT_ARCH, pretrained_cfg_overlay=dict(mean=MEAN, std=STD))

# Our unit names (inside a module) -> the port's layer names, from the port's layer list.
_STEM_UNITS = {"conv1": "conv1_7x7_s2", "conv2.0": "conv2_3x3_reduce", "conv2.1": "conv2_3x3"}
_BRANCH_UNITS = {
    "branch_1x1": "1x1",
    "branch_3x3.0": "3x3_reduce",
    "branch_3x3.1": "3x3",
    "branch_dbl.0": "double_3x3_reduce",
    "branch_dbl.1": "double_3x3_1",
    "branch_dbl.2": "double_3x3_2",
    "branch_pool.1": "pool_proj",
}
_CLASSIFIER = ("fc", "last_linear")
_BN_BUFFERS = ("weight", "bias", "running_mean", "running_var")


class ConversionError(ValueError):
    """A state dict that is not the port's; the message is one line naming the first offending key."""


def port_model() -> nn.Module:
    """Our network for the port's weights (randomly initialised; ``convert_state_dict`` fills it)."""
    import bn_inception  # noqa: F401  (registers the models with timm)

    return timm.create_model(MODEL_NAME, **PORT_ARCH)


def port_unit_name(ours: str) -> str:
    """The port's name of one of our conv-BN-ReLU units (``features.inception_3a.branch_dbl.1`` ->
    ``inception_3a_double_3x3_1``)."""
    name = ours.removeprefix("features.")
    if name in _STEM_UNITS:
        return _STEM_UNITS[name]
    module, _, unit = name.partition(".")
    return f"{module}_{_BRANCH_UNITS[unit]}"


def _units(model: nn.Module) -> list[tuple[str, ConvNormAct]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ConvNormAct)]


def expected_port_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every tensor of the port's state dict, in its order, with its shape (from our network's shapes)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, unit in _units(model):
        port, out = port_unit_name(name), unit.conv.weight.shape[0]
        shapes[f"{port}.weight"] = tuple(unit.conv.weight.shape)
        shapes[f"{port}.bias"] = (out,)
        for buffer in _BN_BUFFERS:
            shapes[f"{port}_bn.{buffer}"] = (out,)
    fc = getattr(model, _CLASSIFIER[0])
    shapes[f"{_CLASSIFIER[1]}.weight"] = tuple(fc.weight.shape)
    shapes[f"{_CLASSIFIER[1]}.bias"] = tuple(fc.bias.shape)
    return shapes


def _optional_port_keys(model: nn.Module) -> set[str]:
    """BN counters that torch >= 0.4.1 adds to a saved state dict and older saves lack."""
    return {f"{port_unit_name(name)}_bn.num_batches_tracked" for name, _ in _units(model)}


def check_port_state_dict(state: Any, model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with any ``module.`` prefixes removed, if it is the port's state dict; else a one-line
    :class:`ConversionError` naming the first offending key and what was expected."""
    hint = "pass the state dict of pretrainedmodels' bninception (the Caffe BN-Inception port), e.g. its .pth"
    if not isinstance(state, Mapping):
        raise ConversionError(f"the file holds a {type(state).__name__}, not a state dict; {hint}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"key {key!r} holds a {type(value).__name__}, expected a tensor (a checkpoint, not a state "
                f"dict?); {hint}"
            )
    state = clean_state_dict(dict(state))
    shapes = expected_port_shapes(model)
    optional = _optional_port_keys(model)
    for key in state:
        if key not in shapes and key not in optional:
            raise ConversionError(
                f"unexpected key {key!r}: the port has no such tensor (its keys run from "
                f"{next(iter(shapes))!r} to {next(reversed(shapes))!r}); {hint}"
            )
    for key, shape in shapes.items():
        if key not in state:
            raise ConversionError(f"missing key {key!r}: expected a tensor of shape {shape}; {hint}")
        if tuple(state[key].shape) != shape or not state[key].is_floating_point():
            raise ConversionError(
                f"key {key!r} is a {state[key].dtype} tensor of shape {tuple(state[key].shape)}, expected a "
                f"floating-point tensor of shape {shape}; {hint}"
            )
    return state


@torch.no_grad()
def convert_state_dict(state: Any) -> dict[str, torch.Tensor]:
    """Our ``bn_inception`` (``MODEL_KWARGS``) state dict from the port's (checked first; module docstring):
    conv biases folded into the BN running means, the first convolution's input channels from BGR to RGB,
    the classifier renamed. Values keep their dtype; nothing else changes."""
    model = port_model()
    state = check_port_state_dict(state, model)
    ours: dict[str, torch.Tensor] = {}
    for name, _ in _units(model):
        port = port_unit_name(name)
        weight = state[f"{port}.weight"]
        if name == "features.conv1":  # the input: BGR for the port, RGB for us
            weight = weight.flip(1)
        ours[f"{name}.conv.weight"] = weight.clone()
        ours[f"{name}.bn.weight"] = state[f"{port}_bn.weight"].clone()
        ours[f"{name}.bn.bias"] = state[f"{port}_bn.bias"].clone()
        ours[f"{name}.bn.running_mean"] = state[f"{port}_bn.running_mean"] - state[f"{port}.bias"]
        ours[f"{name}.bn.running_var"] = state[f"{port}_bn.running_var"].clone()
        counter = state.get(f"{port}_bn.num_batches_tracked")
        ours[f"{name}.bn.num_batches_tracked"] = (
            counter.clone() if counter is not None else torch.tensor(0, dtype=torch.long)
        )
    ours[f"{_CLASSIFIER[0]}.weight"] = state[f"{_CLASSIFIER[1]}.weight"].clone()
    ours[f"{_CLASSIFIER[0]}.bias"] = state[f"{_CLASSIFIER[1]}.bias"].clone()
    model.load_state_dict(ours, strict=True)  # every key of ours, every shape: the layouts agree
    return ours


def port_checkpoint(state: Any, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our checkpoint (docs/design.md) of the port's weights: what ``evaluate.py`` and
    ``timm.create_model(ckpt["model_name"], **ckpt["model_kwargs"], checkpoint_path=...)`` load.

    ``classes`` are ImageNet's 1000 wnids in sorted order (timm's ImageNetInfo), the class order of Caffe's
    ILSVRC-2012 models and of our ImageNet loader. ``source`` (e.g. the file name and its sha256) is recorded.
    """
    return {
        "model": convert_state_dict(state),
        "model_name": MODEL_NAME,
        "model_kwargs": dict(MODEL_KWARGS),
        "data": {
            "input_size": INPUT_SIZE,
            "mean": list(MEAN),
            "std": list(STD),
            "classes": list(ImageNetInfo().label_names()),
            "in_chans": 3,
        },
        "source": {"converted_from": "pretrainedmodels bninception (Caffe BN-Inception)", **(source or {})},
    }
