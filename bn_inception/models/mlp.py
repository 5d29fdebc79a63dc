"""The Sec. 4.1 network (Figure 1): 28x28 input -> 3 fully connected hidden layers of 100 sigmoid units
-> 10-way fully connected output; with BN on every hidden layer (before the sigmoid) in the BN variant."""

import math

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .batchnorm import make_norm
from .layers import LinearNormAct, check_batch, init_weight, like_parameters, make_act


class BNMLP(nn.Module):
    """y = g(Wu + b) per hidden layer without BN, y = g(BN(Wu)) with it (Sec. 3.2; the bias is dropped).

    ``in_chans * H * W`` input values; ``depth`` hidden layers of ``hidden`` units (3 and 100 in Sec. 4.1);
    ``norm`` "none" (Figure 1's baseline) or a BN kind on every hidden layer; ``act`` "sigmoid" (Sec. 4.1) or
    "relu"; ``drop_rate`` before the output layer (0: the paper has none). ``init_std``: std of the Gaussian
    initial weights ("small random Gaussian values", no number given); None = 1/sqrt(fan_in) per layer
    (LeCun: 0.036 for the 784-wide input, 0.1 for 100), so the sigmoids start in their near-linear range.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        img_size: int | tuple[int, int] = 28,
        hidden: int = 100,
        depth: int = 3,
        norm: str = "batch",
        act: str = "sigmoid",
        init_std: float | None = None,
        drop_rate: float = 0.0,
        bn_eps: float = 1e-5,
        bn_momentum: float | None = 0.1,
        ghost_batch_size: int = 32,
    ) -> None:
        super().__init__()
        if depth < 1 or hidden < 1:
            raise ValueError(f"depth={depth!r}, hidden={hidden!r} are not valid; both must be at least 1")
        self.norm, self.in_chans, self.num_classes, self.drop_rate = norm, in_chans, num_classes, drop_rate
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.in_features = in_chans * self.img_size[0] * self.img_size[1]
        self.init_std = init_std
        bn = dict(conv=False, eps=bn_eps, momentum=bn_momentum, ghost_batch_size=ghost_batch_size)
        layers, width = [], self.in_features
        for _ in range(depth):
            fc = nn.Linear(width, hidden, bias=norm == "none")
            init_weight(fc, "linear", std=init_std or 1.0 / math.sqrt(width))
            layers.append(LinearNormAct(fc, make_norm(norm, hidden, **bn), make_act(act)))
            width = hidden
        self.hidden = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = hidden
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes, self.fc = num_classes, nn.Identity()
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes, **like_parameters(self.hidden))
            init_weight(self.fc, "linear", std=self.init_std or 0.0)  # default: fan-in, gain 1
        self.fc.train(self.training)

    def probe_modules(self) -> dict[str, nn.Module]:
        """The nonlinearity of every hidden layer, "hidden1", ..., the last suffixed "_last" ("hidden3_last"):
        the layer Figure 1(b, c) follows ("a typical sigmoid input of the last hidden layer")."""
        names = [f"hidden{i + 1}" for i in range(len(self.hidden))]
        names[-1] += "_last"
        return {name: layer.act for name, layer in zip(names, self.hidden, strict=True)}

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim < 2 or x[0].numel() != self.in_features:
            raise ValueError(
                f"bn_mlp expects {self.in_features} values per example (in_chans={self.in_chans}, "
                f"img_size={self.img_size}), got input of shape {tuple(x.shape)}"
            )
        check_batch(self, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # Eager mode and torch.compile only, as BNInception.forward_features.
        if not torch.jit.is_scripting():  # noqa: SIM102
            if not is_fx_symbolic_tracing():
                self.check_input(x)
        return self.hidden(x.flatten(1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
