"""The BN layers the models choose between (``norm=``), and the per-activation wrapper.

``"batch"``: torch's fused ``nn.BatchNorm1d/2d`` (the default); ``"paper"``: :class:`PaperBatchNorm`,
Algorithm 1 (Sec. 3) with the paper's own backward equations, the reference the fast path is tested against;
``"ghost"``: :class:`GhostBatchNorm`, statistics over groups of ``ghost_batch_size`` (the paper's 32-image
mini-batches inside a larger device batch, training.md). All are torch ``_BatchNorm``s: the same parameters,
buffers and conventions (``momentum`` is the weight of the NEW batch, the complement of Caffe/TF's decay;
``running_var`` the unbiased n/(n-1) sigma2_B, n = m*p*q for a convolution, Sec. 3.2), so a state dict loads
across them and Algorithm 2, folding and weight-decay filters find them all by ``isinstance``.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import check_choice, check_positive

NORMS = ("batch", "paper", "ghost", "none")


def _reduce_dims(x: torch.Tensor) -> list[int]:
    """Every dimension but the channel one: per activation for (N, C) input, per feature map for (N, C, H, W)
    (Sec. 3.2: all locations of a feature map are normalised together, effective batch m' = m*p*q)."""
    return [0] + list(range(2, x.dim()))


def _channel_view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast against ``x``."""
    return t.view([1, -1] + [1] * (x.dim() - 2))


def _algorithm1(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1's forward: (y, mu_B, sigma2_B (biased), x - mu_B, 1/sqrt(sigma2_B + eps))."""
    dims = _reduce_dims(x)
    mu = x.mean(dims, keepdim=True)  # mu_B
    xc = x - mu  # x_i - mu_B
    var = (xc * xc).mean(dims, keepdim=True)  # sigma2_B, the biased (1/m) variance
    inv_std = torch.rsqrt(var + eps)  # 1 / sqrt(sigma2_B + eps)
    xhat = xc * inv_std
    y = xhat * _channel_view(gamma, x) + _channel_view(beta, x)  # y_i = gamma * xhat_i + beta
    return y, mu.flatten(), var.flatten(), xc, inv_std


class _PaperBatchNormFunction(torch.autograd.Function):
    """Algorithm 1 forward; backward from the paper's chain-rule equations (Sec. 3), not from autograd.

    Returns ``y`` and the (non-differentiable) batch mean and biased variance, which the module uses for its
    running statistics.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps: float):  # noqa: ANN001, ANN205 (autograd.Function signature)
        y, mu, var, xc, inv_std = _algorithm1(x, gamma, beta, eps)
        ctx.save_for_backward(xc, inv_std, gamma)
        ctx.mark_non_differentiable(mu, var)
        return y, mu, var

    @staticmethod
    def backward(ctx, dy, _dmu, _dvar):  # noqa: ANN001, ANN205
        xc, inv_std, gamma = ctx.saved_tensors
        dims = _reduce_dims(dy)
        m = dy.numel() // dy.shape[1]  # m' = m*p*q values per channel
        # The paper's equations, term by term:
        dxhat = dy * _channel_view(gamma, dy)  # dl/dxhat_i = dl/dy_i * gamma
        dvar = (dxhat * xc).sum(dims, keepdim=True) * -0.5 * inv_std**3  # dl/dsigma2_B
        dmu = (dxhat * -inv_std).sum(dims, keepdim=True) + dvar * (-2.0 * xc).sum(dims, keepdim=True) / m
        dx = dxhat * inv_std + dvar * 2.0 * xc / m + dmu / m  # dl/dx_i
        dgamma = (dy * xc * inv_std).sum(dims)  # dl/dgamma = sum dl/dy_i * xhat_i
        dbeta = dy.sum(dims)  # dl/dbeta = sum dl/dy_i
        return dx, dgamma, dbeta, None


# ``batch_norm`` below is what the hand-written layers run: a free function of tensors and plain values, so
# one body serves eager mode, TorchScript and torch.fx (``torch.fx.wrap``: a trace records it as one call
# instead of tracing into ghost BN's batch-size dependent grouping, which a trace cannot express).


def _update_running(
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    mean: torch.Tensor,
    unbiased_var: torch.Tensor,
    factor: float,
) -> None:
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.detach().to(running_mean.dtype), factor)
            running_var.lerp_(unbiased_var.detach().to(running_var.dtype), factor)


def _affine(weight: torch.Tensor | None, bias: torch.Tensor | None, x: torch.Tensor) -> list[torch.Tensor]:
    """gamma and beta, or 1 and 0 for a BN layer without affine parameters."""
    if weight is not None and bias is not None:
        return [weight, bias]
    ones = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    return [ones, torch.zeros_like(ones)]


def _normalize_groups(
    x: torch.Tensor, groups: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise ``x`` as ``groups`` equal groups; returns (xhat, group means, biased group variances)."""
    xg = x.reshape([groups, x.shape[0] // groups] + list(x.shape[1:]))
    dims = [1] + list(range(3, xg.dim()))
    var, mean = torch.var_mean(xg, dim=dims, correction=0, keepdim=True)
    xhat = ((xg - mean) * torch.rsqrt(var + eps)).reshape(x.shape)
    return xhat, mean.reshape(groups, -1), var.reshape(groups, -1)


@torch.fx.wrap
def batch_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    num_batches_tracked: torch.Tensor | None,
    use_batch_stats: bool,
    update_running: bool,
    momentum: float | None,
    eps: float,
    ghost_batch_size: int,
) -> torch.Tensor:
    """The hand-written layers' computation. In training, ``ghost_batch_size`` 0 (``PaperBatchNorm``):
    Algorithm 1 with the paper's backward (TorchScript cannot hold a custom ``autograd.Function``: there
    autograd derives the identical one); else statistics per group of that size (``GhostBatchNorm``).
    Otherwise the fixed affine map of the running statistics (Algorithm 2's last step, torch's kernel)."""
    if not use_batch_stats:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)
    factor = 0.0  # the weight of this batch in the running averages, counted as torch does
    if update_running and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        factor = 1.0 / float(num_batches_tracked.item()) if momentum is None else momentum  # None: cumulative
    if ghost_batch_size == 0:
        gamma, beta = _affine(weight, bias, x)
        if torch.jit.is_scripting():
            y, mu, var, _, _ = _algorithm1(x, gamma, beta, eps)
        else:
            y, mu, var = _PaperBatchNormFunction.apply(x, gamma, beta, eps)
        if update_running:
            n = x.numel() // x.shape[1]
            _update_running(running_mean, running_var, mu, var * (n / max(n - 1, 1)), factor)
        return y
    full, rest = x.shape[0] // ghost_batch_size, x.shape[0] % ghost_batch_size
    if rest == 1 and full > 0:  # one example cannot be a group of its own: it joins the last full group
        full, rest = full - 1, ghost_batch_size + 1
    if full + int(rest > 0) <= 1:  # one group: ordinary BN, torch's fused kernel
        mean_buf = running_mean if update_running else None
        var_buf = running_var if update_running else None
        return F.batch_norm(x, mean_buf, var_buf, weight, bias, True, factor, eps)
    # The full groups in one call, then the trailing smaller one (its own mini-batch).
    cut, per_example = full * ghost_batch_size, x[0].numel() // x.shape[1]  # p*q values per channel
    xhat, means, var = _normalize_groups(x[:cut], full, eps)
    m = ghost_batch_size * per_example
    unbiased = var * (m / (m - 1))
    if rest > 0:
        xhat_rest, mean_rest, var_rest = _normalize_groups(x[cut:], 1, eps)
        m = rest * per_example
        xhat, means = torch.cat([xhat, xhat_rest]), torch.cat([means, mean_rest])
        unbiased = torch.cat([unbiased, var_rest * (m / (m - 1))])
    gamma, beta = _affine(weight, bias, x)
    y = xhat * _channel_view(gamma, x) + _channel_view(beta, x)
    if update_running:
        _update_running(running_mean, running_var, means.mean(0), unbiased.mean(0), factor)
    return y


class _HandWrittenBatchNorm(_BatchNorm):
    """The input check (eager mode only: TorchScript and fx cannot evaluate it) and the call of
    ``batch_norm`` with this layer's buffers and flags."""

    ghost_batch_size: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips a branch only on this test alone)
            if not is_fx_symbolic_tracing() and x.ndim not in (2, 3, 4, 5):
                raise ValueError(
                    f"{type(self).__name__} expects (N, C) or (N, C, ...) input, got shape {tuple(x.shape)}"
                )
        use_batch_stats = self.training or self.running_mean is None
        update = self.training and self.track_running_stats and self.running_mean is not None
        return batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.num_batches_tracked,
            use_batch_stats, update, self.momentum, self.eps, self.ghost_batch_size,
        )  # fmt: skip


class PaperBatchNorm(_HandWrittenBatchNorm):
    """Algorithm 1 of the paper with its own backward pass; a drop-in replacement for ``nn.BatchNorm1d/2d``
    (per activation for (N, C) input, per feature map for (N, C, H, W), Sec. 3.2)."""

    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)
        self.ghost_batch_size = 0  # statistics over the whole batch


class GhostBatchNorm(_HandWrittenBatchNorm):
    """BN whose training statistics come from consecutive groups of ``ghost_batch_size`` examples, each
    normalised as a separate mini-batch (Hoffer et al. 2017): the paper's 32-example statistics (Sec. 4.2)
    whatever the device batch. A remainder forms a smaller group (one example joins the group before it); a
    batch no larger than a group is ordinary BN. The running statistics move once per forward, towards the
    groups' average mean and unbiased variance (Algorithm 2's estimate with m = the group size).
    """

    def __init__(self, num_features: int, ghost_batch_size: int = 32, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if int(ghost_batch_size) != ghost_batch_size or ghost_batch_size < 2:
            raise ValueError(
                f"ghost_batch_size={ghost_batch_size!r} is not valid; it must be an integer >= 2"
            )
        self.ghost_batch_size = int(ghost_batch_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"


class PerActivationBatchNorm(nn.Module):
    """Non-convolutional BN: every activation (c, h, w) has its own mean, variance, gamma and beta.

    The paper's ensemble members use "non-convolutional, per-activation BN in the last hidden layers"
    (Sec. 4.2.3) instead of the per-feature-map BN of Sec. 3.2. It wraps a BN layer of the chosen kind over
    the C*H*W flattened activations (statistics over the batch only), so the grid must be known when the
    layer is built and an input of another size is refused.
    """

    def __init__(self, bn: _BatchNorm, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.bn = bn

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips a branch only on this test alone)
            if not is_fx_symbolic_tracing() and tuple(x.shape[1:]) != self.shape:
                raise ValueError(
                    f"per-activation BN (last_bn=True) was built for activations {self.shape} (img_size), "
                    f"got {tuple(x.shape[1:])}; build the model with img_size matching the input"
                )
        return self.bn(x.flatten(1)).view(x.shape)


def make_norm(
    norm: str, num_features: int, *, conv: bool, eps: float, momentum: float | None, ghost_batch_size: int
) -> nn.Module:
    """One BN layer of the chosen kind (``conv``: per feature map of (N, C, H, W), else per activation of
    (N, C)); ``norm="none"`` gives an identity."""
    check_choice("norm", norm, NORMS)
    check_positive("bn_eps", eps)
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"bn_momentum={momentum!r} is not valid; it is the weight of the NEW batch (PyTorch), "
            "in [0, 1], e.g. 0.1 for Caffe/TF decay 0.9"
        )
    if norm == "none":
        return nn.Identity()
    if norm == "ghost":
        return GhostBatchNorm(num_features, ghost_batch_size=ghost_batch_size, eps=eps, momentum=momentum)
    cls = PaperBatchNorm if norm == "paper" else nn.BatchNorm2d if conv else nn.BatchNorm1d
    return cls(num_features, eps=eps, momentum=momentum)
