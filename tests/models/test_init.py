"""The initialisation lets the non-BN Inception baseline learn at the paper's learning rate (training.md)."""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F

import bn_inception  # noqa: F401


def _class_patterns(n: int, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny generated task: each class is a fixed random 28x28 pattern, seen through noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(classes, 1, 28, 28, generator=g)
    labels = torch.arange(n) % classes
    return templates[labels] + 0.5 * torch.randn(n, 1, 28, 28, generator=g), labels


def test_activations_keep_their_scale_through_the_baseline() -> None:
    # He fan-in init: without BN, the signal neither dies nor explodes over the ~20 layers of the network.
    torch.manual_seed(0)
    model = timm.create_model("bn_inception_small", norm="none").eval()
    x, _ = _class_patterns(16)
    with torch.no_grad():
        feats = model.forward_features(x)
    rms = feats.square().mean().sqrt().item()
    assert 0.1 < rms < 10.0, rms


def test_baseline_without_bn_learns_at_the_paper_learning_rate() -> None:
    # Fit one batch of 32 at the Inception baseline's settings (Sec. 4.2: lr 0.0015, batch 32; momentum 0.9).
    # On a Fashion-MNIST slice the same model goes from loss 2.18 (steps 1-100) to 0.68 (steps 501-600).
    torch.manual_seed(0)
    model = timm.create_model("bn_inception_small", norm="none")  # Inception: ReLU, no BN
    opt = torch.optim.SGD(model.parameters(), lr=0.0015, momentum=0.9)
    x, y = _class_patterns(32)
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.6 * math.log(10) < losses[0], losses  # from above chance to clearly below it
