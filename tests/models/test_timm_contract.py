"""The timm contract: our models behave as built-in timm classification models in every timm tool.

Checked here, on tiny widths: the pretrained cfg (input size, pool size, first conv, classifier, crop),
global pooling and classifier resets, ``features_only``, ``forward_intermediates`` and pruning, gradient
checkpointing, TorchScript, torch.fx, ``torch.compile(fullgraph=True)``, ``torch.export``, channels_last
and timm's layer-wise learning-rate groups.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.data import create_transform, resolve_data_config
from timm.models import group_parameters
from timm.optim import create_optimizer_v2
from torch import nn

import bn_inception  # noqa: F401
from bn_inception.data.transforms import eval_sizes
from bn_inception.evaluation.crops import crop_resize_sizes
from bn_inception.models.inception import GLOBAL_POOLS

SMALL = dict(width_mult=0.125)


def _small(**kwargs) -> nn.Module:
    return timm.create_model("bn_inception_small", **{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("bn_inception", {}),
        ("bn_inception", dict(stem="plain", img_size=160, num_classes=7)),
        ("bn_inception", dict(table="caffe", stem="plain", pool="caffe")),
        ("bn_inception_small", SMALL),
        ("bn_inception_small", dict(SMALL, in_chans=3, img_size=32, stem="separable", pool="caffe")),
    ],
    ids=["default", "plain-160", "caffe", "small", "small-rgb-32-caffe"],
)
def test_pretrained_cfg_is_complete_and_true(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    cfg, state = model.pretrained_cfg, model.state_dict()
    chans, size = cfg["input_size"][0], cfg["input_size"][1]
    assert cfg["input_size"] == (model.in_chans, *model.img_size)
    assert cfg["num_classes"] == model.num_classes and cfg["classifier"] + ".weight" in state
    x = torch.randn(1, *cfg["input_size"])
    seen = []
    first = model.get_submodule(cfg["first_conv"])
    first.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        feats = model.forward_features(x)
    assert seen[0] is x  # the first conv named by the cfg is the one that sees the image
    assert feats.shape == (1, model.num_features, *cfg["pool_size"])
    # timm's preprocessing from the cfg is our single-crop evaluation (evaluate.py, crops=1).
    transform = create_transform(**resolve_data_config(model=model))
    resize, crop = transform.transforms[0], transform.transforms[1]
    assert resize.size == eval_sizes(size)[0] == crop_resize_sizes(1, size)[0]
    assert tuple(crop.size) == (size, size) and len(cfg["mean"]) == len(cfg["std"]) == chans


@pytest.mark.parametrize("global_pool", GLOBAL_POOLS)
def test_global_pool_and_classifier_resets(global_pool: str) -> None:
    torch.manual_seed(0)
    model = _small(num_classes=0, global_pool=global_pool).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    pooled = {
        "avg": feats.mean((2, 3)),
        "max": feats.amax((2, 3)),
        "avgmax": 0.5 * (feats.mean((2, 3)) + feats.amax((2, 3))),
        "catavgmax": torch.cat([feats.mean((2, 3)), feats.amax((2, 3))], 1),
        "": feats,
    }[global_pool.removeprefix("fast") or ("avg" if global_pool else "")]
    torch.testing.assert_close(out, pooled)
    assert model.head_hidden_size == (out.shape[1] if global_pool else model.num_features)
    if global_pool:
        model.reset_classifier(5)  # keeps the pooling
        assert model(x).shape == (2, 5)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    model.reset_classifier(0, "")
    assert model(x).shape == feats.shape
    model.reset_classifier(3, "avg")
    assert model(x).shape == (2, 3) and model.head_hidden_size == model.num_features
    model.reset_classifier(3, "")  # no pooling, classes: the classifier at every location (a 1x1 conv)
    dense = model(x)
    assert dense.shape == (2, 3, *feats.shape[-2:])
    weight, bias = model.fc.weight.flatten(1), model.fc.bias
    torch.testing.assert_close(dense[..., 1, 2], feats[..., 1, 2] @ weight.T + bias)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(global_pool="sum"), ["global_pool='sum'", "'catavgmax'"]),
        (dict(pool="same"), ["pool='same'", "'tf'", "'caffe'"]),
        (dict(pool="caffe"), ["img_size=28", "odd 7-pixel grid at inception_4e", "e.g. 32"]),
    ],
)
def test_bad_pooling_keywords_are_one_line(kwargs: dict, words: list) -> None:
    with pytest.raises(ValueError) as info:
        _small(**kwargs)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words), str(info.value)


def test_caffe_pooling_refuses_an_odd_grid_in_eager_mode() -> None:
    model = timm.create_model("bn_inception_small", pool="caffe", img_size=32, **SMALL).eval()
    with pytest.raises(ValueError, match="odd 5-pixel grid at inception_4e"):
        model(torch.randn(2, 1, 20, 20))  # 20 -> 10 -> 5 at 4e


def test_features_only_gives_the_stem_and_stage_ends() -> None:
    x = torch.randn(2, 3, 96, 96)
    torch.manual_seed(0)
    features = timm.create_model("bn_inception", features_only=True).eval()
    assert features.feature_info.channels() == [192, 320, 576, 1024]
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    assert features.feature_info.module_name() == [
        "features.conv2",
        "features.inception_3b",
        "features.inception_4d",
        "features.inception_5b",
    ]
    torch.manual_seed(0)
    getter = timm.create_model("bn_inception", features_only=True, feature_cls="getter").eval()
    torch.manual_seed(0)
    first = timm.create_model("bn_inception", features_only=True, out_indices=(0, 4)).eval()
    with torch.no_grad():
        maps, by_getter, ends = features(x), getter(x), first(x)
    assert [tuple(m.shape) for m in maps] == [
        (2, c, 96 // r, 96 // r) for c, r in [(192, 4), (320, 8), (576, 16), (1024, 32)]
    ]
    for a, b in zip(maps, by_getter, strict=True):
        torch.testing.assert_close(a, b)
    assert [tuple(m.shape) for m in ends] == [(2, 64, 48, 48), (2, 1024, 3, 3)]
    torch.testing.assert_close(ends[1], maps[3])


def test_forward_intermediates_and_pruning() -> None:
    torch.manual_seed(0)
    model = _small().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [m.shape[1] for m in maps] == [i["num_chs"] for i in model.feature_info]
        assert [m.shape[-1] for m in maps] == [-(-28 // i["reduction"]) for i in model.feature_info]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        early, picked = model.forward_intermediates(x, indices=[2, 1], stop_early=True)
    for a, b in zip(last_two, maps[-2:], strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(early, maps[2])
    assert len(picked) == 2
    with pytest.raises(ValueError, match="output_fmt='NHWC'"):
        model.forward_intermediates(x, output_fmt="NHWC")
    assert model.prune_intermediate_layers(indices=[1, 2]) == [1, 2]
    assert list(model.features._modules)[-1] == "inception_3b" and model.num_classes == 0
    with torch.no_grad():
        pruned = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    for a, b in zip(pruned, maps[1:3], strict=True):
        torch.testing.assert_close(a, b)


def test_grad_checkpointing_keeps_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = _small().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    x = torch.randn(4, 1, 28, 28)
    out_a, out_b = plain(x), checkpointed(x)
    torch.testing.assert_close(out_a, out_b)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
    _, maps = checkpointed.forward_intermediates(x)
    assert len(maps) == len(checkpointed.feature_info)


# Every code path of the family in a few models, each combining several keywords; TorchScript is slow to
# compile, so it runs on the lines that hold every hand-written layer (paper BN, ghost BN, per-activation BN,
# LRN, both stems and pooling conventions, the head's pooling), torch.fx on all.
VARIANTS = [
    ("bn_inception_small", dict(SMALL), False),
    (
        "bn_inception_small",
        dict(
            SMALL, norm="paper", last_bn=True, lrn=True, stem="separable", act="sigmoid", global_pool="avgmax"
        ),
        True,
    ),
    (
        "bn_inception_small",
        dict(
            SMALL,
            norm="ghost",
            ghost_batch_size=2,
            pool="caffe",
            img_size=32,
            table="caffe",
            global_pool="catavgmax",
            drop_rate=0.2,
        ),
        True,
    ),  # fmt: skip
    ("bn_inception_small", dict(SMALL, norm="none", lrn=True, drop_rate=0.4, global_pool="max"), False),
    ("bn_mlp", dict(norm="ghost", ghost_batch_size=2), True),
]


def _input(model: nn.Module, batch: int = 5) -> torch.Tensor:
    return torch.randn(batch, model.in_chans, *model.img_size, generator=torch.Generator().manual_seed(3))


def _seeded(fn, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    torch.manual_seed(7)  # the same dropout masks
    return fn(x)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # still timm's contract
@pytest.mark.parametrize("name, kwargs, script", VARIANTS, ids=lambda v: v if isinstance(v, str) else None)
def test_torchscript_and_fx_compute_what_eager_computes(name: str, kwargs: dict, script: bool) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs)
    x = _input(model)
    scripted = torch.jit.script(copy.deepcopy(model)) if script else None
    for mode in ("eval", "train"):
        eager = copy.deepcopy(model).train(mode == "train")
        traced = torch.fx.symbolic_trace(copy.deepcopy(eager))
        expected = _seeded(eager, x)
        torch.testing.assert_close(_seeded(traced, x), expected, rtol=1e-5, atol=1e-6)
        if scripted is not None:
            scripted.train(mode == "train")
            torch.testing.assert_close(_seeded(scripted, x), expected, rtol=1e-5, atol=1e-6)
    _seeded(traced, x).square().mean().backward()  # the trace trains: every parameter gets a gradient
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in traced.parameters())


def test_compile_fullgraph_export_and_channels_last() -> None:
    torch.manual_seed(0)
    model = _small()
    x = _input(model)
    torch._dynamo.reset()
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True, backend="eager")  # fails on a graph break
    torch.testing.assert_close(compiled(x), copy.deepcopy(model)(x))
    model.eval()
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out = cl_model.forward_features(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, model.forward_features(x), rtol=1e-4, atol=1e-5)


def test_group_matcher_gives_timm_layer_decay_the_stem_and_stages() -> None:
    model = timm.create_model("bn_inception")
    groups = list(group_parameters(model, model.group_matcher()).values())
    assert len(groups) == 5  # stem, stages 3, 4, 5, classifier
    assert all(n.startswith(("features.conv1.", "features.conv2.")) for n in groups[0])
    for stage, names in zip("345", groups[1:4], strict=True):
        assert all(n.startswith(f"features.inception_{stage}") for n in names)
    assert set(groups[4]) == {"fc.weight", "fc.bias"}
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.5)
    assert sorted({g["lr_scale"] for g in optimizer.param_groups}) == [0.0625, 0.125, 0.25, 0.5, 1.0]
