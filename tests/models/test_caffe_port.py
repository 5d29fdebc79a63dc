"""The published BN-Inception weights: a Caffe-layout network converted by our script gives our outputs.

The reference is written here from the public layer list of the PyTorch port (pretrainedmodels
``bninception``): its names, widths, conv biases, Caffe pooling (stride-2 max pools without padding in ceil
mode; average pools counting the padding), BGR 0-255 input minus a mean. Random weights and random BN
statistics; float64, so any difference above rounding is a conversion error.
"""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config
from torch import nn

import bn_inception  # noqa: F401
from bn_inception.engine.checkpoint import load_checkpoint, model_from_checkpoint
from bn_inception.evaluation.evaluator import load_member
from bn_inception.models.caffe_port import MEAN, PORT_MEAN_BGR, STD, ConversionError, port_checkpoint

# The port's inception modules: (name, input channels, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3,
# pooling, pool projection (0: none), stride).
PORT_MODULES = (
    ("3a", 192, 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 256, 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 320, 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 576, 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 576, 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 576, 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 608, 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 608, 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 1056, 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 1024, 352, 192, 320, 192, 224, "max", 128, 1),
)
CONV_BIASES = 10_016  # output channels of the port's 69 convolutions = its conv-bias values


class CaffeLayoutBNInception(nn.Module):
    """The port's network from its layer list: attribute names are its state-dict names; every convolution
    has a bias and is followed by BN and ReLU."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._unit("conv1_7x7_s2", 3, 64, 7, 2)
        self._unit("conv2_3x3_reduce", 64, 64, 1)
        self._unit("conv2_3x3", 64, 192, 3)
        for name, cin, n1, r3, n3, rd, nd, _, proj, s in PORT_MODULES:
            p = f"inception_{name}"
            if n1:
                self._unit(f"{p}_1x1", cin, n1, 1)
            self._unit(f"{p}_3x3_reduce", cin, r3, 1)
            self._unit(f"{p}_3x3", r3, n3, 3, s)
            self._unit(f"{p}_double_3x3_reduce", cin, rd, 1)
            self._unit(f"{p}_double_3x3_1", rd, nd, 3)
            self._unit(f"{p}_double_3x3_2", nd, nd, 3, s)
            if proj:
                self._unit(f"{p}_pool_proj", cin, proj, 1)
        self.last_linear = nn.Linear(1024, num_classes)

    def _unit(self, name: str, cin: int, cout: int, k: int, stride: int = 1) -> None:
        setattr(self, name, nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=True))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(cout))

    def _run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

    def _module(self, spec: tuple, x: torch.Tensor) -> torch.Tensor:
        name, _, n1, _, _, _, _, pool, proj, s = spec
        p = f"inception_{name}"
        outs = [self._run(f"{p}_1x1", x)] if n1 else []
        outs.append(self._run(f"{p}_3x3", self._run(f"{p}_3x3_reduce", x)))
        dbl = self._run(f"{p}_double_3x3_1", self._run(f"{p}_double_3x3_reduce", x))
        outs.append(self._run(f"{p}_double_3x3_2", dbl))
        if pool == "avg":
            pooled = F.avg_pool2d(x, 3, 1, 1, ceil_mode=True, count_include_pad=True)
        elif s == 2:
            pooled = F.max_pool2d(x, 3, 2, ceil_mode=True)
        else:
            pooled = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
        outs.append(self._run(f"{p}_pool_proj", pooled) if proj else pooled)
        return torch.cat(outs, 1)

    def forward(self, bgr255: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, pooled 1024-d features) for BGR 0-255 input minus the port's mean."""
        x = F.max_pool2d(self._run("conv1_7x7_s2", bgr255), 3, 2, ceil_mode=True)
        x = self._run("conv2_3x3", self._run("conv2_3x3_reduce", x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        for spec in PORT_MODULES:
            x = self._module(spec, x)
        features = F.avg_pool2d(x, x.shape[-1]).flatten(1)
        return self.last_linear(features), features


def _randomize(model: nn.Module) -> None:
    """Random weights, conv biases and BN statistics, so each of them reaches the outputs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, math.sqrt(2.0 / m.weight[0].numel()), generator=g)
                m.bias.normal_(0, 0.5, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)


@pytest.fixture(scope="module")
def port() -> CaffeLayoutBNInception:
    model = CaffeLayoutBNInception()
    _randomize(model)
    return model.eval()


@pytest.fixture(scope="module")
def script():  # noqa: ANN201
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "convert_caffe_bninception.py"
    spec = importlib.util.spec_from_file_location("convert_caffe_bninception", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _inputs(batch: int = 2, size: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """The same images as our input (RGB [0, 1], normalised) and as the port's (BGR 0-255 minus its mean)."""
    rgb = torch.rand(batch, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = (rgb - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        STD, dtype=torch.float64
    ).view(1, 3, 1, 1)
    theirs = rgb.flip(1) * 255 - torch.tensor(PORT_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    return ours, theirs


def test_converted_port_computes_the_ports_function_in_float64(port, script, tmp_path) -> None:
    source = tmp_path / "bn_inception-port.pth"
    torch.save(port.state_dict(), source)
    assert script.main([str(source), str(tmp_path / "ours.pt")]) == 0
    ckpt = load_checkpoint(tmp_path / "ours.pt")
    ours = model_from_checkpoint(ckpt).double().eval()
    reference = copy.deepcopy(port).double()

    n_port = sum(p.numel() for p in port.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    assert sum(m.bias.numel() for m in port.modules() if isinstance(m, nn.Conv2d)) == CONV_BIASES
    assert n_ours == n_port - CONV_BIASES  # the biases live on as BN running means (buffers)

    x_ours, x_port = _inputs(size=224)
    with torch.no_grad():
        logits_port, features_port = reference(x_port)
        features_ours = ours.forward_head(ours.forward_features(x_ours), pre_logits=True)
        logits_ours = ours.fc(features_ours)
    assert logits_port.std() > 0.1 and features_port.std() > 0.01  # the comparison is not of zeros
    torch.testing.assert_close(features_ours, features_port, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits_ours, logits_port, rtol=0, atol=1e-5)

    # Our default pooling (pool="tf") with the same weights is another function: the conventions matter
    # (checked at 96 px, where Caffe's ceil-mode pooling also changes every grid, to keep the test quick).
    tf_pool = timm.create_model("bn_inception", table="caffe", stem="plain").double().eval()
    tf_pool.load_state_dict(ckpt["model"])
    x_ours, x_port = _inputs(size=96)
    with torch.no_grad():
        logits_port, _ = reference(x_port)
        torch.testing.assert_close(ours(x_ours), logits_port, rtol=0, atol=1e-5)
        assert (tf_pool(x_ours) - logits_port).abs().max() > 1e-2


def test_converted_checkpoint_loads_where_our_checkpoints_load(port, script, tmp_path) -> None:
    source, out = tmp_path / "port.pth", tmp_path / "bninception_caffe.pt"
    state = {k: v.float() if v.is_floating_point() else v for k, v in port.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # as older torch saved
    torch.save(state, source)
    assert script.main([str(source), str(out)]) == 0

    member = load_member(out, "caffe", torch.device("cpu"))  # what evaluate.py does with it
    assert member.input_size == 224 and member.in_chans == 3
    assert member.mean == pytest.approx(MEAN) and member.std == pytest.approx(STD)
    assert len(member.classes) == 1000 and list(member.classes) == sorted(member.classes)
    assert member.classes[0] == "n01440764"

    ckpt = torch.load(out, weights_only=True)
    model = timm.create_model(ckpt["model_name"], **ckpt["model_kwargs"], checkpoint_path=str(out)).eval()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, member.model.state_dict()[key], msg=key)
    data = resolve_data_config(model=model)
    assert data["mean"] == pytest.approx(MEAN) and data["std"] == pytest.approx(STD)
    assert data["input_size"] == (3, 224, 224) and data["crop_pct"] == 0.875  # the port's 256 -> 224
    assert ckpt["source"]["file"] == "port.pth" and len(ckpt["source"]["sha256"]) == 64


def _state(port: nn.Module) -> dict[str, torch.Tensor]:
    return dict(port.state_dict())


def _drop(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


@pytest.mark.parametrize(
    "corrupt, words",
    [
        (
            lambda s: _drop(s, "inception_4d_pool_proj.bias"),
            ["missing key 'inception_4d_pool_proj.bias'", "(128,)"],
        ),
        (lambda s: {**s, "aux_fc.weight": torch.zeros(3)}, ["unexpected key 'aux_fc.weight'"]),
        (
            lambda s: {**s, "conv1_7x7_s2.weight": torch.zeros(64, 1, 7, 7)},
            ["'conv1_7x7_s2.weight'", "(64, 1, 7, 7)", "(64, 3, 7, 7)"],
        ),
        (
            lambda s: {**s, "last_linear.bias": torch.zeros(1000, dtype=torch.long)},
            ["'last_linear.bias'", "floating-point"],
        ),
        (
            lambda s: timm.create_model("bn_inception").state_dict(),
            ["unexpected key 'features.conv1.conv.0.weight'"],
        ),
        (lambda s: {"model": s, "step": 3}, ["key 'model' holds a dict", "expected a tensor"]),
        (lambda s: list(s.values())[:3], ["holds a list, not a state dict"]),
    ],
    ids=["missing", "unexpected", "shape", "dtype", "our-network", "a-checkpoint", "not-a-dict"],
)
def test_not_the_ports_state_dict_is_one_line_naming_the_first_bad_key(port, corrupt, words: list) -> None:
    with pytest.raises(ConversionError) as info:
        port_checkpoint(corrupt(_state(port)))
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_failed_conversion_writes_nothing(script, tmp_path, capsys) -> None:
    out = tmp_path / "out" / "bninception_caffe.pt"
    cases = {
        "partial.pth": {"conv1_7x7_s2.weight": torch.zeros(64, 3, 7, 7)},
        "garbage.pth": b"not a torch file",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        assert script.main([str(path), str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "missing key 'conv1_7x7_s2.bias'" not in err  # the last case: unreadable, named as such
    assert "could not be read" in err
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"previous")
    assert script.main([str(tmp_path / "partial.pth"), str(out)]) == 1
    assert "missing key 'conv1_7x7_s2.bias'" in capsys.readouterr().err
    assert out.read_bytes() == b"previous" and len(list(out.parent.iterdir())) == 1
    assert script.main([str(tmp_path / "absent.pth"), str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
