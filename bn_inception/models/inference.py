"""Inference with BN: Algorithm 2's population statistics, and folding BN into the preceding weight layer."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .layers import ConvNormAct, LinearNormAct

_logger = logging.getLogger(__name__)


def _bn_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BN layer with running statistics: torch's, the paper's, ghost BN, and the per-activation BN
    (which wraps one of those)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def _images(batch: object) -> torch.Tensor:
    return batch[0] if isinstance(batch, tuple | list) else batch


@torch.no_grad()
def recompute_population_stats(model: nn.Module, batches: Iterable, num_batches: int) -> int:
    """Algorithm 2: set every BN layer's statistics from ``num_batches`` training mini-batches.

    With the network frozen (no gradient, no parameter change, dropout off) and the BN layers normalising
    with batch statistics as in training, each BN layer gets
        running_mean = E_B[mu_B]                    (the average of the batch means)
        running_var  = m/(m-1) * E_B[sigma2_B]      (m/(m-1) times the average of the biased batch variances)
    Every batch counts equally (a smaller last batch included).

    Which m: the number of values each statistic is computed from. For a convolution that is the effective
    mini-batch m' = m*p*q of Sec. 3.2 ("we use the effective mini-batch of size m' = |B| = m*pq" for
    Algorithm 1, "and similarly for Algorithm 2"), which is also torch's convention for ``running_var``; per
    activation (fully connected, ``last_bn``) it is the batch size m; for ghost BN it is the group size
    (times p*q), since a group is the mini-batch its statistics come from. Implementation: each layer's
    cumulative-average mode (``momentum=None``, torch's convention, followed by our BN classes) averages the
    batch means and the unbiased batch variances, which equals the formula above for equal-sized batches.

    Args:
        model: the network, on the device it runs on; its train/eval mode is restored afterwards, and so are
            the BN layers' ``momentum`` and ``num_batches_tracked``.
        batches: an iterable of ``(images, labels, ...)`` tuples (e.g. a DataLoader); element 0 is used.
        num_batches: how many mini-batches to average over (fewer if ``batches`` runs out; a warning says so).

    Returns:
        The number of mini-batches used (0 for a model without BN, which is left untouched).
    """
    if num_batches < 1:
        raise ValueError(f"num_batches={num_batches!r} is not valid; it must be at least 1")
    layers = _bn_layers(model)
    if not layers:
        return 0
    device = next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}
    saved = [
        (m.momentum, m.num_batches_tracked.clone(), m.running_mean.clone(), m.running_var.clone())
        for m in layers
    ]
    try:
        model.eval()  # frozen: dropout off ...
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: equal weight per batch
            m.train()  # ... but BN normalises with batch statistics, as during training
        used = _feed(model, batches, num_batches, device)
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


def _feed(model: nn.Module, batches: Iterable, num_batches: int, device: torch.device) -> int:
    """Run up to ``num_batches`` batches through ``model``; how many ran."""
    used = 0
    for batch in batches:
        if used == num_batches:
            break
        images = _images(batch)
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
    return used


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every foldable BN folded into the weight layer before it.

    At inference BN is a fixed per-channel affine map (Algorithm 2), so W' = W * gamma / sqrt(Var + eps) and
    b' = (b - E[x]) * gamma / sqrt(Var + eps) + beta give the same outputs with one layer less (torch's
    ``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval``). Per-activation BN (``last_bn``) scales every location
    differently, which a convolution cannot express: it stays, as a fixed affine map. The copy is for
    inference only (its BN is gone); the original model is not changed.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(getattr(module, "bn", None), _BatchNorm):
            continue
        if isinstance(module, ConvNormAct):
            if isinstance(module.conv, nn.Sequential):  # separable stem: fold into the pointwise conv
                module.conv[-1] = fuse_conv_bn_eval(module.conv[-1], module.bn)
            else:
                module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, LinearNormAct):
            module.fc = fuse_linear_bn_eval(module.fc, module.bn)
            module.bn = nn.Identity()
    return folded
