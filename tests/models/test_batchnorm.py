"""The paper's BN (Algorithm 1 + its backward) against torch's, and ghost BN against separate batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bn_inception.models import GhostBatchNorm, PaperBatchNorm
from bn_inception.models.batchnorm import _PaperBatchNormFunction

SHAPES = {"conv": (6, 4, 3, 5), "fc": (10, 7)}


def _torch_bn(shape: tuple[int, ...], **kwargs) -> nn.Module:
    return (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1], **kwargs)


def _pair(shape: tuple[int, ...], momentum: float | None = 0.1) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = PaperBatchNorm(shape[1], momentum=momentum).double()
    ref = _torch_bn(shape, momentum=momentum).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0)
        ours.bias.uniform_(-1.0, 1.0)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _forward_backward(bn: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_()
    y = bn(x)
    y.backward(dy)
    return y.detach(), x.grad, bn.weight.grad.clone(), bn.bias.grad.clone()


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_paper_bn_equals_torch_bn_in_float64(kind: str, momentum: float | None) -> None:
    shape = SHAPES[kind]
    ours, ref = _pair(shape, momentum)
    for step in range(3):  # several steps: running statistics accumulate the same way
        x = torch.randn(shape, dtype=torch.float64) * (step + 1) + step
        dy = torch.randn(shape, dtype=torch.float64)
        ours.zero_grad(), ref.zero_grad()
        for a, b in zip(_forward_backward(ours, x, dy), _forward_backward(ref, x, dy), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
        assert ours.num_batches_tracked == ref.num_batches_tracked
    ours.eval(), ref.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", SHAPES)
def test_paper_bn_uses_its_own_backward(kind: str) -> None:
    ours, _ = _pair(SHAPES[kind])
    y = ours(torch.randn(SHAPES[kind], dtype=torch.float64, requires_grad=True))
    assert "PaperBatchNormFunction" in type(y.grad_fn).__name__


@pytest.mark.parametrize("kind", SHAPES)
def test_paper_bn_gradcheck(kind: str) -> None:
    torch.manual_seed(0)
    shape = SHAPES[kind]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(shape[1], dtype=torch.float64, requires_grad=True)
    beta = torch.rand(shape[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, g, b: _PaperBatchNormFunction.apply(x, g, b, 1e-5)[0], (x, gamma, beta)
    )
    module = PaperBatchNorm(shape[1]).double()
    assert torch.autograd.gradcheck(module, (x,))


def test_paper_and_torch_bn_share_the_state_dict_layout() -> None:
    for shape in SHAPES.values():
        ours, ref = PaperBatchNorm(shape[1]), _torch_bn(shape)
        assert [(k, v.shape, v.dtype) for k, v in ours.state_dict().items()] == [
            (k, v.shape, v.dtype) for k, v in ref.state_dict().items()
        ]
        ref.load_state_dict(ours.state_dict())
        ours.load_state_dict(ref.state_dict())
        ghost = GhostBatchNorm(shape[1])
        ghost.load_state_dict(ref.state_dict())


def _separate_bn(x: torch.Tensor, sizes: list[int], weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.cat([F.batch_norm(part, None, None, weight, bias, training=True) for part in x.split(sizes)])


@pytest.mark.parametrize("shape", [(64, 3, 2, 2), (64, 5)])
def test_ghost_bn_of_64_equals_bn_on_each_half(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ghost = GhostBatchNorm(shape[1], ghost_batch_size=32).double()
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 2.0), ghost.bias.uniform_(-1, 1)
    x = torch.randn(shape, dtype=torch.float64)
    x[32:] = x[32:] * 3 + 2  # the halves have different statistics
    dy = torch.randn(shape, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    w, b = ghost.weight.detach().clone().requires_grad_(), ghost.bias.detach().clone().requires_grad_()
    y = ghost(x1)
    y.backward(dy)
    ref = _separate_bn(x2, [32, 32], w, b)
    ref.backward(dy)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ghost.weight.grad, w.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ghost.bias.grad, b.grad, rtol=1e-10, atol=1e-12)
    # Running statistics move towards the average of the halves' means and unbiased variances.
    dims = [0, *range(2, x.ndim)]
    halves = x.split(32)
    mean = torch.stack([h.mean(dims) for h in halves]).mean(0)
    var = torch.stack([h.var(dims, correction=1) for h in halves]).mean(0)
    torch.testing.assert_close(ghost.running_mean, 0.1 * mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ghost.running_var, 0.9 + 0.1 * var, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "batch, groups",
    [
        (70, [32, 32, 6]),  # the remainder is a group of its own
        (65, [32, 33]),  # a remainder of one joins the group before it
        (20, [20]),  # no larger than the group: ordinary BN
        (33, [33]),
    ],
)
def test_ghost_bn_with_a_batch_not_divisible_by_the_group(batch: int, groups: list[int]) -> None:
    torch.manual_seed(0)
    ghost = GhostBatchNorm(3, ghost_batch_size=32).double()
    x = torch.randn(batch, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(
        ghost(x), _separate_bn(x, groups, ghost.weight, ghost.bias), rtol=1e-12, atol=1e-12
    )


def test_ghost_bn_in_eval_mode_uses_running_statistics() -> None:
    ghost, ref = GhostBatchNorm(3, ghost_batch_size=4), nn.BatchNorm2d(3)
    for _ in range(3):
        ghost(torch.randn(4, 3, 2, 2) * 2 + 1)
    ref.load_state_dict(ghost.state_dict())
    ghost.eval(), ref.eval()
    x = torch.randn(5, 3, 2, 2)
    torch.testing.assert_close(ghost(x), ref(x))
