"""Convert the published BN-Inception weights (the Caffe model's PyTorch port) into one of our checkpoints.

    python scripts/convert_caffe_bninception.py bn_inception-52deb4733.pth bninception_caffe.pt
    python evaluate.py checkpoints=bninception_caffe.pt data=imagenet data.root=/data/imagenet
    timm.create_model("bn_inception.caffe_port", pretrained=True,
                      pretrained_cfg_overlay=dict(file="bninception_caffe.pt"))

The input is the state dict of ``bninception`` from Cadene's pretrained-models package, a file you download
yourself (its URL is in that package's ``pretrainedmodels/models/bninception.py``); nothing is downloaded
here. The output is our ``bn_inception`` with ``table="caffe", stem="plain", pool="caffe"``, taking our
usual input (RGB in [0, 1], normalised with the mean/std the checkpoint stores) and evaluated with the
port's transform (resize 256, centre crop 224): the pretrained tag ``bn_inception.caffe_port``. A file that
is not the port's state dict gets one line naming the first offending key; the output is written
atomically, so a failed run leaves no file behind.

The port's network is our ``bn_inception`` with the tag's keywords; it differs only in how it is stored:
- every convolution has a bias. BN follows each one, and BN(Wx + b) with running mean mu is BN(Wx) with
  running mean mu - b, so each bias folds into its BN's running mean (Sec. 3.2: beta takes the bias's role);
- it takes BGR input in 0-255 minus a per-channel mean; the tag's mean / std give the same input from RGB
  in [0, 1] (``bn_inception/models/registry.py``), with the first convolution's input channels reordered.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402
import torch  # noqa: E402
from timm.data import ImageNetInfo  # noqa: E402
from timm.models import clean_state_dict  # noqa: E402
from torch import nn  # noqa: E402

import bn_inception  # noqa: E402, F401  (registers the models with timm)
from bn_inception.engine.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from bn_inception.models.layers import ConvNormAct  # noqa: E402
from bn_inception.models.registry import CAFFE_MEAN, CAFFE_STD, TAG_ARCH  # noqa: E402

# Our keywords for the converted network (the tag's); the cfg overlay makes timm's resolve_data_config and
# evaluate.py use its input. Our checkpoint format (docs/design.md) records them.
MODEL_KWARGS = dict(
    TAG_ARCH["caffe_port"],
    num_classes=1000,
    in_chans=3,
    pretrained_cfg_overlay=dict(mean=CAFFE_MEAN, std=CAFFE_STD),
)
# Our unit names (inside a module) -> the port's layer names, from the port's layer list.
STEM_UNITS = {"conv1": "conv1_7x7_s2", "conv2.0": "conv2_3x3_reduce", "conv2.1": "conv2_3x3"}
BRANCH_UNITS = {
    "branch_1x1": "1x1",
    "branch_3x3.0": "3x3_reduce",
    "branch_3x3.1": "3x3",
    "branch_dbl.0": "double_3x3_reduce",
    "branch_dbl.1": "double_3x3_1",
    "branch_dbl.2": "double_3x3_2",
    "branch_pool.1": "pool_proj",
}
HINT = "pass the state dict of pretrainedmodels' bninception (the Caffe BN-Inception port), e.g. its .pth"


class ConversionError(ValueError):
    """A state dict that is not the port's; the message is one line naming the first offending key."""


def port_units(model: nn.Module) -> dict[str, tuple[str, ConvNormAct]]:
    """Our conv-BN-ReLU units and their names by the port's names (``features.inception_3a.branch_dbl.1``:
    ``inception_3a_double_3x3_1``), in order."""
    units = {}
    for name, unit in model.named_modules():
        if isinstance(unit, ConvNormAct):
            short = name.removeprefix("features.")
            module, _, branch = short.partition(".")
            units[STEM_UNITS.get(short) or f"{module}_{BRANCH_UNITS[branch]}"] = (name, unit)
    return units


def expected_port_shapes(units: dict[str, tuple[str, ConvNormAct]]) -> dict[str, tuple[int, ...]]:
    """Every tensor of the port's state dict, in its order, with its shape (from our network's shapes)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for port, (_, unit) in units.items():
        out = unit.conv.weight.shape[0]
        shapes |= {f"{port}.weight": tuple(unit.conv.weight.shape), f"{port}.bias": (out,)}
        shapes |= {f"{port}_bn.{b}": (out,) for b in ("weight", "bias", "running_mean", "running_var")}
    return shapes | {"last_linear.weight": (1000, 1024), "last_linear.bias": (1000,)}


def check_port_state_dict(state: Any, units: dict[str, tuple[str, ConvNormAct]]) -> dict[str, torch.Tensor]:
    """``state`` with any ``module.`` prefixes removed, if it is the port's state dict; else a one-line
    ConversionError naming the first offending key and what was expected."""
    if not isinstance(state, Mapping):
        raise ConversionError(f"the file holds a {type(state).__name__}, not a state dict; {HINT}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"key {key!r} holds a {type(value).__name__}, expected a tensor (a checkpoint, not a state "
                f"dict?); {HINT}"
            )
    state = clean_state_dict(dict(state))
    shapes = expected_port_shapes(units)
    optional = {f"{port}_bn.num_batches_tracked" for port in units}  # torch >= 0.4.1 saves them
    for key in state:
        if key not in shapes and key not in optional:
            raise ConversionError(
                f"unexpected key {key!r}: the port has no such tensor (its keys run from "
                f"{next(iter(shapes))!r} to {next(reversed(shapes))!r}); {HINT}"
            )
    for key, shape in shapes.items():
        if key not in state:
            raise ConversionError(f"missing key {key!r}: expected a tensor of shape {shape}; {HINT}")
        if tuple(state[key].shape) != shape or not state[key].is_floating_point():
            raise ConversionError(
                f"key {key!r} is a {state[key].dtype} tensor of shape {tuple(state[key].shape)}, expected a "
                f"floating-point tensor of shape {shape}; {HINT}"
            )
    return state


@torch.no_grad()
def convert_state_dict(state: Any) -> dict[str, torch.Tensor]:
    """Our ``bn_inception.caffe_port`` state dict from the port's (checked first; module docstring): conv
    biases folded into the BN running means, the first convolution's input channels from BGR to RGB, the
    classifier renamed. Values keep their dtype; nothing else changes."""
    model = timm.create_model("bn_inception.caffe_port")
    units = port_units(model)
    state = check_port_state_dict(state, units)
    ours: dict[str, torch.Tensor] = {}
    for port, (name, _) in units.items():
        weight = state[f"{port}.weight"]
        ours[f"{name}.conv.weight"] = weight.flip(1) if port == "conv1_7x7_s2" else weight.clone()  # BGR->RGB
        for b in ("weight", "bias", "running_var"):
            ours[f"{name}.bn.{b}"] = state[f"{port}_bn.{b}"].clone()
        ours[f"{name}.bn.running_mean"] = state[f"{port}_bn.running_mean"] - state[f"{port}.bias"]
        counter = state.get(f"{port}_bn.num_batches_tracked", torch.tensor(0, dtype=torch.long))
        ours[f"{name}.bn.num_batches_tracked"] = counter.clone()
    ours["fc.weight"], ours["fc.bias"] = (
        state["last_linear.weight"].clone(),
        state["last_linear.bias"].clone(),
    )
    model.load_state_dict(ours, strict=True)  # every key of ours, every shape: the layouts agree
    return ours


def port_checkpoint(state: Any, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our checkpoint (docs/design.md) of the port's weights: what ``evaluate.py``,
    ``timm.create_model(ckpt["model_name"], **ckpt["model_kwargs"], checkpoint_path=...)`` and the pretrained
    tag (its ``model`` state dict) load. ``classes`` are ImageNet's 1000 wnids in sorted order (timm's
    ImageNetInfo), the class order of Caffe's ILSVRC-2012 models and of our ImageNet loader. ``source``
    (e.g. the file name and its sha256) is recorded."""
    return {
        "model": convert_state_dict(state),
        "model_name": "bn_inception",
        "model_kwargs": dict(MODEL_KWARGS),
        "data": {
            "input_size": 224,  # the port's transform: shorter side 256, centre crop 224
            "mean": list(CAFFE_MEAN),
            "std": list(CAFFE_STD),
            "classes": list(ImageNetInfo().label_names()),
            "in_chans": 3,
        },
        "source": {"converted_from": "pretrainedmodels bninception (Caffe BN-Inception)", **(source or {})},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("port", type=Path, help="the port's state dict (.pth), e.g. bn_inception-52deb4733.pth")
    p.add_argument("output", type=Path, help="our checkpoint to write (.pt)")
    return p.parse_args(argv)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_port_state(path: Path) -> object:
    """The file's content, loaded with ``weights_only=True`` (tensors and containers only, no code)."""
    if not path.is_file():
        raise ConversionError(f"{path} does not exist; pass the port's .pth file (downloaded yourself)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{path} could not be read as a weights-only torch file ({first})") from e


def convert(port: Path, output: Path) -> dict:
    """Check and convert ``port`` and write ``output`` atomically; returns the checkpoint."""
    if output.resolve() == port.resolve():
        raise ConversionError(f"the output {output} is the input file; choose another output path")
    ckpt = port_checkpoint(load_port_state(port), source={"file": port.name, "sha256": _sha256(port)})
    save_checkpoint(ckpt, output)
    return ckpt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ckpt = convert(args.port, args.output)
    except (ConversionError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    kwargs = ", ".join(f"{k}={v!r}" for k, v in ckpt["model_kwargs"].items() if k != "pretrained_cfg_overlay")
    print(f"wrote {args.output}: {ckpt['model_name']}({kwargs}), {len(ckpt['data']['classes'])} classes")
    print(
        f"evaluate it: python evaluate.py checkpoints={args.output} data=imagenet data.root=<ImageNet folder>"
    )
    overlay = f"pretrained_cfg_overlay=dict(file='{args.output}')"
    print(f"in timm: timm.create_model('bn_inception.caffe_port', pretrained=True, {overlay})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
