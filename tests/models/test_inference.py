"""Algorithm 2 (population statistics) and BN folding."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import bn_inception
from bn_inception.models import GhostBatchNorm, PaperBatchNorm, PerActivationBatchNorm

BN_1D = {
    "batch": lambda: nn.BatchNorm1d(1),
    "paper": lambda: PaperBatchNorm(1),
    "ghost": lambda: GhostBatchNorm(1, ghost_batch_size=32),
}


def _t(values: list, *shape: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(*shape)


@pytest.mark.parametrize("kind", BN_1D)
def test_population_stats_hand_example_fully_connected(kind: str) -> None:
    # Batch means 2 and 4 -> E[x] = 3; biased batch variances 1 and 4 -> Var[x] = m/(m-1) * 2.5 = 5 (m = 2).
    model = nn.Sequential(BN_1D[kind]())
    batches = [(_t([1, 3], 2, 1), torch.zeros(2), "extra"), (_t([2, 6], 2, 1), torch.zeros(2), "extra")]
    assert bn_inception.recompute_population_stats(model, batches, num_batches=2) == 2
    bn = model[0]
    torch.testing.assert_close(bn.running_mean, _t([3.0], 1))
    torch.testing.assert_close(bn.running_var, _t([5.0], 1))


@pytest.mark.parametrize("cls", [nn.BatchNorm2d, PaperBatchNorm])
def test_population_stats_hand_example_convolution_uses_m_times_pq(cls: type) -> None:
    # Two images of 1x2 pixels per batch: m' = m*p*q = 4 values per statistic (Sec. 3.2).
    # Batch 1: {0, 2, 4, 6}: mean 3, biased var 5. Batch 2: {1, 1, 1, 5}: mean 2, biased var 3.
    # E[x] = 2.5; Var[x] = 4/3 * (5 + 3)/2 = 16/3.
    model = nn.Sequential(cls(1))
    batches = [(_t([0, 2, 4, 6], 2, 1, 1, 2), None), (_t([1, 1, 1, 5], 2, 1, 1, 2), None)]
    bn_inception.recompute_population_stats(model, batches, num_batches=5)  # only 2 available: uses 2
    torch.testing.assert_close(model[0].running_mean, _t([2.5], 1))
    torch.testing.assert_close(model[0].running_var, _t([16 / 3], 1))


def test_population_stats_ghost_groups_are_the_mini_batches() -> None:
    # One batch of 4 in groups of 2: {1, 3} and {2, 6}, the same numbers as two mini-batches of 2.
    model = nn.Sequential(GhostBatchNorm(1, ghost_batch_size=2))
    bn_inception.recompute_population_stats(model, [(_t([1, 3, 2, 6], 4, 1), None)], num_batches=1)
    torch.testing.assert_close(model[0].running_mean, _t([3.0], 1))
    torch.testing.assert_close(model[0].running_var, _t([5.0], 1))


def test_population_stats_per_activation() -> None:
    # Activations (1, 1, 2): location 0 sees 1, 3 | 2, 6 (E 3, Var 5); location 1 sees 0, 0 | 2, 2
    # (E 1, Var 0).
    model = nn.Sequential(PerActivationBatchNorm(nn.BatchNorm1d(2), (1, 1, 2)))
    batches = [(_t([1, 0, 3, 0], 2, 1, 1, 2),), (_t([2, 2, 6, 2], 2, 1, 1, 2),)]
    bn_inception.recompute_population_stats(model, batches, num_batches=2)
    torch.testing.assert_close(model[0].bn.running_mean, _t([3.0, 1.0], 2))
    torch.testing.assert_close(model[0].bn.running_var, _t([5.0, 0.0], 2))


def _small(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("bn_inception_small", width_mult=0.125, **kwargs)


def _batches(n: int, batch: int = 8) -> list:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 1, 28, 28, generator=g), torch.zeros(batch)) for _ in range(n)]


@pytest.mark.parametrize("training", [True, False])
def test_population_stats_freeze_the_model_and_restore_its_mode(training: bool) -> None:
    model = _small(drop_rate=0.4)
    model.train(training)
    params = {k: v.clone() for k, v in model.named_parameters()}
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    tracked = [m.num_batches_tracked.clone() for m in layers]
    first = model.features.conv1.bn
    seen = []
    first.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    batches = _batches(3)
    assert bn_inception.recompute_population_stats(model, batches, num_batches=3) == 3
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    assert all(m.training == training for m in model.modules())
    assert all(m.momentum == 0.1 for m in layers)
    assert all(torch.equal(m.num_batches_tracked, t) for m, t in zip(layers, tracked, strict=True))
    means = torch.stack([x.mean((0, 2, 3)) for x in seen])
    variances = torch.stack([x.var((0, 2, 3), correction=0) for x in seen])
    m = seen[0].numel() // seen[0].shape[1]
    torch.testing.assert_close(first.running_mean, means.mean(0))
    torch.testing.assert_close(first.running_var, m / (m - 1) * variances.mean(0))


def test_population_stats_reject_bad_input_and_skip_models_without_bn() -> None:
    assert bn_inception.recompute_population_stats(_small(norm="none"), _batches(1), 1) == 0
    model = _small()
    before = model.features.conv1.bn.running_mean.clone()
    with pytest.raises(ValueError, match="at least 2 examples"):
        bn_inception.recompute_population_stats(model, _batches(1, batch=1), 1)
    assert torch.equal(model.features.conv1.bn.running_mean, before)  # restored after the failure
    with pytest.raises(ValueError, match="no batches"):
        bn_inception.recompute_population_stats(model, [], 1)


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize(
    "name, kwargs, input_shape",
    [
        ("bn_inception_small", dict(width_mult=0.125, norm="batch"), (3, 1, 28, 28)),
        ("bn_inception_small", dict(width_mult=0.125, norm="paper", stem="separable"), (3, 1, 28, 28)),
        ("bn_inception_small", dict(width_mult=0.125, norm="ghost", last_bn=True), (3, 1, 28, 28)),
        ("bn_mlp", dict(norm="batch"), (3, 1, 28, 28)),
    ],
)
def test_fold_bn_keeps_eval_outputs(name: str, kwargs: dict, input_shape: tuple) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs)
    _randomize_bn(model)
    model.eval()
    x = torch.randn(input_shape)
    folded = bn_inception.fold_bn(model)
    remaining = [m for m in folded.modules() if isinstance(m, _BatchNorm)]
    per_activation = [m.bn for m in folded.modules() if isinstance(m, PerActivationBatchNorm)]
    assert remaining == per_activation  # only per-activation BN cannot be folded
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, _BatchNorm) for m in model.modules())  # the original is untouched
