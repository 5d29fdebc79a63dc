"""The three Batch Normalization implementations the models choose between, and the per-activation wrapper.

- ``norm="batch"``: torch's fused ``nn.BatchNorm1d/2d`` (cuDNN on GPU): the fast default.
- ``norm="paper"``: :class:`PaperBatchNorm`, Algorithm 1 written from the paper (Sec. 3) with the backward
  pass from the paper's own equations in a custom ``torch.autograd.Function``: the reference the fast path
  is tested against.
- ``norm="ghost"``: :class:`GhostBatchNorm`, statistics over groups of ``ghost_batch_size`` examples, so a
  device batch of 256 still normalises over the paper's 32-image mini-batches (training.md).

All three subclass torch's ``_BatchNorm``, so they share its parameters and buffers (``weight``, ``bias``,
``running_mean``, ``running_var``, ``num_batches_tracked``, in that order and shape): a state dict loads
across them, and code that finds BN layers by ``isinstance(m, _BatchNorm)`` (Algorithm 2, BN folding,
weight-decay filters) handles all of them.

Conventions shared with torch (and why):
- ``momentum`` is the weight of the NEW batch in the running averages (``running = (1 - momentum) * running
  + momentum * batch``); ``None`` means a cumulative (equal-weight) average. Caffe and TF state the complement
  (a "decay" / "moving_average_fraction" of 0.9 = momentum 0.1); copying Caffe's 0.9 into torch's momentum
  is a known porting mistake that makes the running statistics follow the last batch almost entirely.
- ``running_var`` holds the unbiased batch variance n/(n-1) * sigma2_B, n the number of values per channel
  (m*p*q for a convolution, Sec. 3.2), as Algorithm 2 prescribes for the population variance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

NORMS = ("batch", "paper", "ghost", "none")


def check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    """Raise a one-line ValueError naming the bad value and the valid ones."""
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(repr(v) for v in valid)}")


def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Every dimension but the channel one: per activation for (N, C) input, per feature map for (N, C, H, W)
    (Sec. 3.2: all locations of a feature map are normalised together, effective batch m' = m*p*q)."""
    return (0, *range(2, x.ndim))


def _channel_view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast against ``x``."""
    return t.view(1, -1, *([1] * (x.ndim - 2)))


class _PaperBatchNormFunction(torch.autograd.Function):
    """Algorithm 1 forward; backward from the paper's chain-rule equations (Sec. 3), not from autograd.

    Returns ``y`` and the (non-differentiable) batch mean and biased variance, which the module uses for its
    running statistics.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps: float):  # noqa: ANN001, ANN205 (autograd.Function signature)
        dims = _reduce_dims(x)
        mu = x.mean(dims, keepdim=True)  # mu_B
        xc = x - mu  # x_i - mu_B
        var = (xc * xc).mean(dims, keepdim=True)  # sigma2_B, the biased (1/m) variance
        inv_std = torch.rsqrt(var + eps)  # 1 / sqrt(sigma2_B + eps)
        xhat = xc * inv_std
        y = xhat * _channel_view(gamma, x) + _channel_view(beta, x)  # y_i = gamma * xhat_i + beta
        ctx.save_for_backward(xc, inv_std, gamma)
        mu, var = mu.flatten(), var.flatten()
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


class _RunningStatsMixin:
    """torch's running-statistics bookkeeping, shared by the two hand-written BN layers."""

    def _average_factor(self) -> float:
        """The weight of this batch in the running averages; counts the batch as torch does."""
        if not (self.training and self.track_running_stats):
            return 0.0
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative average, as torch (used by Algorithm 2)
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor, factor: float) -> None:
        with torch.no_grad():
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
            self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)

    def _uses_batch_stats(self) -> bool:
        return self.training or self.running_mean is None

    def _affine_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.weight is not None:
            return self.weight, self.bias
        ones = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
        return ones, torch.zeros_like(ones)

    def _normalize_with_running(self, x: torch.Tensor) -> torch.Tensor:
        """Inference (Algorithm 2, last step): a fixed per-channel affine transform."""
        gamma, beta = self._affine_params(x)
        scale = gamma * torch.rsqrt(self.running_var + self.eps)
        shift = beta - self.running_mean * scale
        return x * _channel_view(scale, x) + _channel_view(shift, x)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.ndim not in (2, 3, 4, 5):
            raise ValueError(
                f"{type(self).__name__} expects (N, C) or (N, C, ...) input, got shape {tuple(x.shape)}"
            )


class PaperBatchNorm(_RunningStatsMixin, _BatchNorm):
    """Algorithm 1 of the paper with its own backward pass; a drop-in replacement for ``nn.BatchNorm1d/2d``.

    Per activation for (N, C) input, per feature map for (N, C, H, W) input (Sec. 3.2). Same parameters,
    buffers, defaults and running-statistics rule as torch's BatchNorm (see the module docstring).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        factor = self._average_factor()
        if not self._uses_batch_stats():
            return self._normalize_with_running(x)
        gamma, beta = self._affine_params(x)
        y, mu, var = _PaperBatchNormFunction.apply(x, gamma, beta, self.eps)
        if self.training and self.track_running_stats:
            n = x.numel() // x.shape[1]
            self._update_running(mu, var * (n / max(n - 1, 1)), factor)
        return y


class GhostBatchNorm(_RunningStatsMixin, _BatchNorm):
    """BN whose training statistics come from consecutive groups of ``ghost_batch_size`` examples.

    Each group is normalised with its own mean and variance, exactly as if it were a separate mini-batch
    (Hoffer et al. 2017, "ghost batch normalization"); this keeps the paper's 32-example BN statistics
    (Sec. 4.2) whatever the device batch is.

    A batch that is not a multiple of the group size: the batch is cut into consecutive groups of
    ``ghost_batch_size`` and the remainder forms one smaller group of its own; a remainder of a single
    example (whose variance would be 0) joins the group before it. A batch no larger than the group size
    is one group, i.e. ordinary BN. The running statistics move once per forward, towards the average of
    the groups' means and of their unbiased variances (Algorithm 2's estimate with m = the group size).
    Inference uses the running statistics, as ordinary BN.
    """

    def __init__(self, num_features: int, ghost_batch_size: int = 32, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if ghost_batch_size < 2:
            raise ValueError(f"ghost_batch_size={ghost_batch_size} is not valid; it must be at least 2")
        self.ghost_batch_size = ghost_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def _group_sizes(self, n: int) -> tuple[int, int]:
        """(number of full-size groups processed together, size of the trailing group or 0)."""
        g = self.ghost_batch_size
        full, rest = divmod(n, g)
        if rest == 1 and full > 0:  # one example cannot be a group of its own
            return full - 1, g + 1
        return full, rest

    def _normalize_groups(
        self, x: torch.Tensor, groups: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalise ``x`` as ``groups`` equal groups; returns (xhat, group means, biased group variances)."""
        xg = x.reshape(groups, x.shape[0] // groups, *x.shape[1:])
        dims = (1, *range(3, xg.ndim))
        var, mean = torch.var_mean(xg, dim=dims, correction=0, keepdim=True)
        xhat = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        return xhat, mean.reshape(groups, -1), var.reshape(groups, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        full, rest = self._group_sizes(x.shape[0])
        factor = self._average_factor()
        if full + (rest > 0) <= 1 or not self._uses_batch_stats():
            # One group (or inference): ordinary BN, torch's fused kernel.
            track = not self.training or self.track_running_stats
            return F.batch_norm(
                x,
                self.running_mean if track else None,
                self.running_var if track else None,
                self.weight,
                self.bias,
                self._uses_batch_stats(),
                factor,
                self.eps,
            )
        g = self.ghost_batch_size
        # (slice of the batch, number of equal groups in it, group size): full groups, then the trailing one.
        spans = [(slice(0, full * g), full, g)] + ([(slice(full * g, None), 1, rest)] if rest else [])
        results = [self._normalize_groups(x[span], groups) for span, groups, _ in spans]
        xhat = torch.cat([xhat for xhat, _, _ in results]) if len(results) > 1 else results[0][0]
        gamma, beta = self._affine_params(x)
        y = xhat * _channel_view(gamma, x) + _channel_view(beta, x)
        if self.training and self.track_running_stats:
            per_example = x[0].numel() // x.shape[1]  # p*q values per channel per example
            with torch.no_grad():
                means = torch.cat([mean for _, mean, _ in results])
                unbiased = torch.cat(
                    [
                        var * (size * per_example / max(size * per_example - 1, 1))
                        for (_, _, var), (_, _, size) in zip(results, spans, strict=True)
                    ]
                )
            self._update_running(means.mean(0), unbiased.mean(0), factor)
        return y


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
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"per-activation BN (last_bn=True) was built for activations {self.shape} (set by img_size), "
                f"got {tuple(x.shape[1:])}; build the model with img_size matching the input"
            )
        return self.bn(x.flatten(1)).view(x.shape)


def make_norm(
    norm: str,
    num_features: int,
    *,
    conv: bool,
    eps: float,
    momentum: float | None,
    ghost_batch_size: int,
) -> nn.Module:
    """One BN layer of the chosen kind (``conv``: per feature map of (N, C, H, W), else per activation of
    (N, C)); ``norm="none"`` gives an identity."""
    check_choice("norm", norm, NORMS)
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        cls = nn.BatchNorm2d if conv else nn.BatchNorm1d
        return cls(num_features, eps=eps, momentum=momentum)
    if norm == "paper":
        return PaperBatchNorm(num_features, eps=eps, momentum=momentum)
    return GhostBatchNorm(num_features, ghost_batch_size=ghost_batch_size, eps=eps, momentum=momentum)
