"""The unit every network here is made of: a weight layer, then BN (or nothing), then the nonlinearity.

z = g(BN(Wu)) (Sec. 3.2): BN normalises the weight layer's output before the nonlinearity, so the weight
layer has no bias when BN follows (beta takes its role); without BN (the Inception baseline) it keeps it.

Initialisation (the paper states none; the non-BN baseline must learn at lr 0.0015, training.md): Gaussian
with variance gain**2 / fan_in (He et al. 2015), gain sqrt(2) before a ReLU, 1 before a sigmoid and with no
nonlinearity after (the separable stem's depthwise half, the classifier); zero biases, BN gamma 1, beta 0.
``init_scale`` multiplies the initial convolution weights (the ensemble's "larger initial weights", 4.2.3).
"""

import math

import torch
from torch import nn

ACTS = ("relu", "sigmoid")


def check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    """Raise a one-line ValueError naming the bad value and the valid ones."""
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(repr(v) for v in valid)}")


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} is not valid; it must be a positive number")


def check_batch(model: nn.Module, x: torch.Tensor) -> None:
    """BN cannot normalise one example in training mode (its variance is 0): a one-line ValueError."""
    if model.training and model.norm != "none" and x.shape[0] < 2:
        raise ValueError(
            f"a batch of {x.shape[0]} cannot be batch-normalised in training mode (norm={model.norm!r}); "
            "use at least 2 examples or call model.eval()"
        )


def make_act(act: str) -> nn.Module:
    """A fresh nonlinearity module: every use gets its own instance, so a forward pre-hook on it sees the
    input of exactly that nonlinearity (Figure 1's view)."""
    check_choice("act", act, ACTS)
    return nn.ReLU() if act == "relu" else nn.Sigmoid()


def init_weight(
    layer: nn.Conv2d | nn.Linear, nonlinearity: str, scale: float = 1.0, std: float = 0.0
) -> None:
    """Fan-in Gaussian initialisation (module docstring; ``nonlinearity``: "relu", "sigmoid" or "linear"),
    or with ``std`` a Gaussian of that std (the Sec. 4.1 MLP's "small random Gaussian values"); zero bias."""
    if std:
        nn.init.normal_(layer.weight, 0.0, std)
    else:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity=nonlinearity)
    if scale != 1.0:
        layer.weight.data.mul_(scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class ConvNormAct(nn.Module):
    """conv -> BN (or identity) -> nonlinearity; ``conv``: an ``nn.Conv2d`` or the separable stem's two."""

    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.act(self.bn(self.conv(x)))


class LinearNormAct(nn.Module):
    """fully connected -> BN (or identity) -> nonlinearity: y = g(BN(Wu)), or g(Wu + b) without BN."""

    def __init__(self, fc: nn.Linear, bn: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.fc, self.bn, self.act = fc, bn, act

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.act(self.bn(self.fc(x)))


def like_parameters(module: nn.Module) -> dict:
    """The device and dtype of ``module``'s parameters, for a layer built later (a new classifier)."""
    p = next(module.parameters(), None)
    return {} if p is None else dict(device=p.device, dtype=p.dtype)
