"""Every registered model and variant: builds through timm, runs forward and backward, timm interface."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.data import resolve_data_config
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import bn_inception  # noqa: F401
from bn_inception.models import PAPER_VARIANTS, GhostBatchNorm, PaperBatchNorm, PerActivationBatchNorm

REGISTERED = ("bn_inception", "bn_inception_small", "bn_mlp")
# Small inputs keep the suite fast; bn_inception accepts 32 px and up (its 224 shapes: test_figure5.py).
INPUTS = {"bn_inception": (2, 3, 64, 64), "bn_inception_small": (2, 1, 28, 28), "bn_mlp": (4, 1, 28, 28)}
SMALL = dict(width_mult=0.125)  # the narrowest small model: every code path, a fraction of the time

INCEPTION_VARIANTS = [
    *[dict(v) for v in PAPER_VARIANTS.values()],
    dict(norm="paper"),
    dict(norm="ghost", ghost_batch_size=2),
    dict(norm="batch", stem="separable", table="caffe"),
    dict(norm="batch", last_bn=True, init_scale=2.0, drop_rate=0.1),  # an ensemble member (Sec. 4.2.3)
]


def _check_forward_backward(model: nn.Module, shape: tuple[int, ...], num_classes: int) -> None:
    model.train()
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()  # every output, so every parameter is on the path
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} received an all-zero gradient"


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_model_builds_runs_and_learns(name: str) -> None:
    assert name in timm.list_models("bn_*")
    torch.manual_seed(0)
    kwargs = SMALL if name == "bn_inception_small" else {}
    shape = INPUTS[name]
    model = timm.create_model(name, num_classes=7, in_chans=shape[1], img_size=shape[-1], **kwargs)
    _check_forward_backward(model, shape, 7)


@pytest.mark.parametrize("variant", INCEPTION_VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_every_variant_builds_runs_and_learns(variant: dict) -> None:
    torch.manual_seed(0)
    model = timm.create_model("bn_inception_small", **SMALL, **variant)
    _check_forward_backward(model, INPUTS["bn_inception_small"], 10)


@pytest.mark.parametrize("norm", ["none", "batch", "paper", "ghost"])
def test_mlp_variants_build_run_and_learn(norm: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model("bn_mlp", norm=norm, ghost_batch_size=2)
    _check_forward_backward(model, INPUTS["bn_mlp"], 10)
    has_bn = any(isinstance(m, _BatchNorm) for m in model.modules())
    assert has_bn == (norm != "none")
    assert all((layer.fc.bias is None) == (norm != "none") for layer in model.hidden)  # y = g(Wu + b)
    assert all(isinstance(m.act, nn.Sigmoid) for m in model.hidden)


def _acts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.ReLU | nn.Sigmoid)]


@pytest.mark.parametrize("act, cls", [("relu", nn.ReLU), ("sigmoid", nn.Sigmoid)])
def test_nonlinearity_choice_is_really_used(act: str, cls: type) -> None:
    model = timm.create_model("bn_inception_small", act=act, **SMALL).eval()
    acts = _acts(model)
    assert acts and all(isinstance(m, cls) for m in acts)
    assert len({id(m) for m in acts}) == len(acts)  # one instance per use: a hook sees one layer
    outputs = []
    for m in acts:
        m.register_forward_hook(lambda mod, i, o: outputs.append(o))
    model(torch.randn(2, 1, 28, 28))
    assert len(outputs) == len(acts)
    low = 0.0 if act == "sigmoid" else -1e-30
    assert all(o.min() >= low for o in outputs)
    if act == "sigmoid":
        assert all(o.max() <= 1.0 for o in outputs)
        assert any(o.min() > 0 and o.max() < 1 and o.std() > 0 for o in outputs)


@pytest.mark.parametrize("name", REGISTERED)
def test_probe_modules_are_named_nonlinearities_of_the_model(name: str) -> None:
    model = timm.create_model(name, **(SMALL if name == "bn_inception_small" else {}))
    probes = model.probe_modules()
    assert 3 <= len(probes) <= 5
    members = {id(m) for m in _acts(model)}
    assert all(id(m) in members for m in probes.values())
    assert len({id(m) for m in probes.values()}) == len(probes)
    if name == "bn_mlp":
        assert list(probes) == ["hidden1", "hidden2", "hidden3_last"]
        assert probes["hidden3_last"] is model.hidden[-1].act
    else:
        assert list(probes) == ["3a_3x3", "4c_3x3", "5b_3x3"]
    seen = {}

    def record(probe: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple) -> None:
            seen[probe] = args[0].shape

        return hook

    for probe, m in probes.items():
        m.register_forward_pre_hook(record(probe))
    model.eval()(torch.randn(INPUTS[name][1:]).unsqueeze(0).expand(2, -1, -1, -1).contiguous())
    assert set(seen) == set(probes)


def test_bn_layers_follow_norm_and_bn_keywords() -> None:
    kinds = {"batch": nn.BatchNorm2d, "paper": PaperBatchNorm, "ghost": GhostBatchNorm}
    for norm, cls in kinds.items():
        model = timm.create_model(
            "bn_inception_small", norm=norm, bn_eps=1e-3, bn_momentum=0.01, ghost_batch_size=8, **SMALL
        )
        layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        assert layers and all(type(m) is cls for m in layers)
        assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in layers)
        if norm == "ghost":
            assert all(m.ghost_batch_size == 8 for m in layers)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.bias is None for c in convs)  # beta replaces the bias (Sec. 3.2)
    baseline = timm.create_model("bn_inception_small", norm="none", **SMALL)
    assert not any(isinstance(m, _BatchNorm) for m in baseline.modules())
    assert all(c.bias is not None for c in baseline.modules() if isinstance(c, nn.Conv2d))


def test_state_dict_loads_across_bn_implementations() -> None:
    torch.manual_seed(0)
    models = {
        n: timm.create_model("bn_inception_small", norm=n, **SMALL) for n in ("batch", "paper", "ghost")
    }
    source = models["batch"].state_dict()
    for model in models.values():
        model.load_state_dict(source, strict=True)
    x = torch.randn(3, 1, 28, 28)
    outs = [m.eval()(x) for m in models.values()]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-4, atol=1e-5)


def test_lrn_and_dropout_keywords() -> None:
    model = timm.create_model("bn_inception", lrn=True, drop_rate=0.4)
    lrns = [name for name, m in model.named_modules() if isinstance(m, nn.LocalResponseNorm)]
    assert lrns == ["features.pool1.1", "features.conv2.2"]  # after pool1 and after conv2, as GoogLeNet
    assert model.head_drop.p == 0.4
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in timm.create_model("bn_inception").modules())


def test_stem_keyword() -> None:
    separable = timm.create_model("bn_inception", stem="separable").features.conv1.conv
    assert [tuple(c.weight.shape) for c in separable] == [(24, 1, 7, 7), (64, 24, 1, 1)]
    assert separable[0].groups == 3 and separable[0].stride == (2, 2)
    plain = timm.create_model("bn_inception", stem="plain").features.conv1.conv
    assert tuple(plain.weight.shape) == (64, 3, 7, 7)


def test_last_bn_is_per_activation_in_the_last_module() -> None:
    model = timm.create_model("bn_inception_small", last_bn=True, **SMALL)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PerActivationBatchNorm)]
    names = [n for n, _ in layers]
    assert names == [
        "features.inception_5b.branch_1x1.bn",
        "features.inception_5b.branch_3x3.1.bn",
        "features.inception_5b.branch_dbl.2.bn",
        "features.inception_5b.branch_pool.1.bn",
    ]
    assert sum(m.shape[0] for _, m in layers) == model.num_features
    assert all(m.shape[1:] == (4, 4) for _, m in layers)  # 28 px -> 4x4 last grid
    assert all(m.bn.num_features == m.shape[0] * 16 for _, m in layers)
    _check_forward_backward(model, (3, 1, 28, 28), 10)
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(2, 1, 40, 40))  # 5x5 last grid
    big = timm.create_model("bn_inception", last_bn=True, img_size=64)
    assert {m.shape[1:] for m in big.modules() if isinstance(m, PerActivationBatchNorm)} == {(2, 2)}


def test_init_scale_multiplies_the_initial_conv_weights() -> None:
    torch.manual_seed(0)
    base = timm.create_model("bn_inception_small", **SMALL)
    torch.manual_seed(0)
    scaled = timm.create_model("bn_inception_small", init_scale=2.0, **SMALL)
    for (name, a), (_, b) in zip(base.named_parameters(), scaled.named_parameters(), strict=True):
        factor = 2.0 if name.endswith("conv.weight") or ".conv." in name else 1.0
        torch.testing.assert_close(b, a * factor, msg=name)


def test_timm_interface() -> None:
    model = timm.create_model("bn_inception_small", num_classes=10, **SMALL).eval()
    x = torch.randn(2, 1, 28, 28)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 4, 4)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert model.get_classifier() is model.fc
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize(
    "name, kwargs, input_size, mean_len",
    [
        ("bn_inception", {}, (3, 224, 224), 3),
        ("bn_inception", dict(img_size=299), (3, 299, 299), 3),
        ("bn_inception_small", dict(in_chans=1), (1, 28, 28), 1),
        ("bn_inception_small", dict(in_chans=3, img_size=32), (3, 32, 32), 3),
        ("bn_mlp", {}, (1, 28, 28), 1),
    ],
)
def test_pretrained_cfg_describes_the_model(
    name: str, kwargs: dict, input_size: tuple, mean_len: int
) -> None:
    model = timm.create_model(name, num_classes=10, **kwargs)
    cfg = resolve_data_config(model=model)
    assert cfg["input_size"] == input_size
    assert len(cfg["mean"]) == len(cfg["std"]) == mean_len
    assert 0 < cfg["crop_pct"] <= 1
    assert model.pretrained_cfg["num_classes"] == 10


def test_create_model_passes_its_own_arguments_through() -> None:
    model = timm.create_model(
        "bn_inception", pretrained_cfg_overlay=dict(crop_pct=0.9), cache_dir="/nonexistent"
    )
    assert model.pretrained_cfg["crop_pct"] == 0.9
    for name in REGISTERED:
        with pytest.raises(ValueError, match="no pretrained weights"):
            timm.create_model(name, pretrained=True)
