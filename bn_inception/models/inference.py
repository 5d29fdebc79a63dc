"""Inference with BN: Algorithm 2's population statistics, and folding BN into the preceding weight layer."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .layers import ConvNormAct, LinearNormAct

_logger = logging.getLogger(__name__)


@torch.no_grad()
def recompute_population_stats(model: nn.Module, batches: Iterable, num_batches: int) -> int:
    """Algorithm 2: set every BN layer's statistics from ``num_batches`` training mini-batches (fewer, with a
    warning, if ``batches`` runs out); returns the number used (0: no BN, the model is untouched).

    The network frozen (no gradient, dropout off) and BN normalising with batch statistics as in training,
    each layer gets E_B[mu_B] and m/(m-1) E_B[sigma2_B], every batch counting equally: torch's cumulative
    average (``momentum=None``) of the batch means and unbiased variances, with m the values per statistic
    (m*p*q for a convolution, Sec. 3.2; the group size for ghost BN). ``batches``: tensors or ``(images,
    ...)`` tuples, run on the model's device. The modes, ``momentum`` and ``num_batches_tracked`` are
    restored afterwards, and the statistics too if it fails.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches={num_batches!r} is not valid; it must be at least 1")
    # Every BN layer with running statistics: torch's, the paper's, ghost BN (also inside per-activation BN).
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    device = next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}
    saved = [
        (m.momentum, m.num_batches_tracked.clone(), m.running_mean.clone(), m.running_var.clone())
        for m in layers
    ]
    used = 0
    try:
        model.eval()  # frozen: dropout off ...
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: equal weight per batch
            m.train()  # ... but BN normalises with batch statistics, as during training
        for batch in itertools.islice(batches, num_batches):
            images = batch[0] if isinstance(batch, tuple | list) else batch
            if images.shape[0] < 2:
                raise ValueError(
                    "recompute_population_stats needs batches of at least 2 examples (m/(m-1)), "
                    f"got {images.shape[0]}"
                )
            model(images.to(device, non_blocking=True))
            used += 1
        if used == 0:
            raise ValueError(
                "recompute_population_stats got no batches; pass a non-empty iterable of (images, labels)"
            )
    except BaseException:
        for m, (_, _, mean, var) in zip(layers, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        raise
    finally:
        for m, (momentum, tracked, _, _) in zip(layers, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
        for m, training in modes.items():
            m.train(training)
    if used < num_batches:
        _logger.warning(
            "recompute_population_stats: asked for %d batches, the iterable gave %d", num_batches, used
        )
    return used


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every foldable BN folded into the weight layer before it.

    At inference BN is a fixed per-channel affine map (Algorithm 2), so W' = W * gamma / sqrt(Var + eps) and
    b' = (b - E[x]) * gamma / sqrt(Var + eps) + beta give the same outputs with one layer less (torch's
    ``fuse_*_bn_eval``). Per-activation BN (``last_bn``) scales every location differently, which a
    convolution cannot express: it stays. The original model is not changed.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, ConvNormAct | LinearNormAct) or not isinstance(module.bn, _BatchNorm):
            continue
        if isinstance(module, LinearNormAct):
            module.fc = fuse_linear_bn_eval(module.fc, module.bn)
        elif isinstance(module.conv, nn.Sequential):  # separable stem: fold into the pointwise conv
            module.conv[-1] = fuse_conv_bn_eval(module.conv[-1], module.bn)
        else:
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
        module.bn = nn.Identity()
    return folded
