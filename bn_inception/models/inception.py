"""BN-Inception (Figure 5) and its small-image sibling, built by one builder from a table of row specs.

The variants of the paper (Sec. 4.2) differ only in keyword values: ``norm`` (BN or not, and which
implementation), ``act``, ``lrn``, ``drop_rate``; the ensemble members of Sec. 4.2.3 add ``init_scale``,
``last_bn`` and a smaller ``drop_rate``. Get models through ``timm.create_model`` (see ``registry.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .batchnorm import NORMS, PerActivationBatchNorm, check_choice, make_norm
from .figure5 import ConvRow, InceptionRow, PoolRow, Row
from .layers import ACTS, ConvNormAct, check_positive, init_weight, make_act, separable_conv

STEMS = ("separable", "plain")

# GoogLeNet's LRN (its Caffe recipe: local_size 5, alpha 1e-4, beta 0.75; torch divides alpha by the size as
# Caffe does), after pool1 and after conv2. Only the Inception baseline and BN-Baseline use it (Sec. 4.2.1).
LRN_SIZE, LRN_ALPHA, LRN_BETA = 5, 1e-4, 0.75

# The probed nonlinearities (Figure 1's view on Inception): the 3x3 unit of the 3x3 branch, one unit type
# present in every module (also in the stride-2 ones), in the first (3a), the middle (4c) and the last (5b)
# inception module, so drift can be compared across depth; 5b's feeds the classifier, like the last hidden
# layer that Figure 1 looks at.
PROBED_MODULES = ("3a", "4c", "5b")


@dataclass(frozen=True)
class UnitFactory:
    """Makes every conv -> BN -> nonlinearity unit of one variant, so a variant is a handful of values."""

    norm: str
    act: str
    bn_eps: float
    bn_momentum: float | None
    ghost_batch_size: int
    init_scale: float

    def __call__(
        self,
        in_chans: int,
        out_chans: int,
        kernel: int,
        stride: int = 1,
        *,
        separable: bool = False,
        per_activation_grid: tuple[int, int] | None = None,
    ) -> ConvNormAct:
        bias = self.norm == "none"  # beta replaces the bias under BN (Sec. 3.2)
        if separable:
            conv = separable_conv(in_chans, out_chans, kernel, stride, bias)
            init_weight(conv[0], "linear", self.init_scale)
            init_weight(conv[1], self.act, self.init_scale)
        else:
            conv = nn.Conv2d(in_chans, out_chans, kernel, stride, padding=kernel // 2, bias=bias)
            init_weight(conv, self.act, self.init_scale)
        return ConvNormAct(conv, self._norm(out_chans, per_activation_grid), make_act(self.act))

    def _norm(self, channels: int, per_activation_grid: tuple[int, int] | None) -> nn.Module:
        if per_activation_grid is None:
            return make_norm(self.norm, channels, conv=True, **self._bn_kwargs())
        features = channels * per_activation_grid[0] * per_activation_grid[1]
        inner = make_norm(self.norm, features, conv=False, **self._bn_kwargs())
        return PerActivationBatchNorm(inner, (channels, *per_activation_grid))

    def _bn_kwargs(self) -> dict:
        return dict(eps=self.bn_eps, momentum=self.bn_momentum, ghost_batch_size=self.ghost_batch_size)


class InceptionModule(nn.Module):
    """One inception row: the four branches of Figure 5 concatenated along channels.

    In a stride-2 row the stride sits on the 3x3 of branch 2, on the SECOND 3x3 of branch 3 (as every public
    port; the paper does not say) and on the pooling. Pooling is 3x3 with padding 1; average pooling excludes
    the padding from its count, as TF-slim's SAME padding.
    """

    def __init__(
        self, in_chans: int, row: InceptionRow, unit: UnitFactory, last_grid: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        s = row.stride
        out = dict(per_activation_grid=last_grid)  # the units whose outputs form this module's output
        self.branch_1x1 = unit(in_chans, row.n1x1, 1, **out) if row.n1x1 else None
        self.branch_3x3 = nn.Sequential(
            unit(in_chans, row.n3x3_reduce, 1), unit(row.n3x3_reduce, row.n3x3, 3, s, **out)
        )
        self.branch_dbl = nn.Sequential(
            unit(in_chans, row.dbl_reduce, 1),
            unit(row.dbl_reduce, row.dbl_3x3, 3),
            unit(row.dbl_3x3, row.dbl_3x3, 3, s, **out),
        )
        if row.pool == "avg":
            pool = nn.AvgPool2d(3, s, padding=1, count_include_pad=False)
        else:
            pool = nn.MaxPool2d(3, s, padding=1)
        self.branch_pool = nn.Sequential(pool, unit(in_chans, row.proj, 1, **out)) if row.proj else pool
        self.out_chans = row.out_channels(in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch_3x3(x), self.branch_dbl(x), self.branch_pool(x)]
        if self.branch_1x1 is not None:
            branches.insert(0, self.branch_1x1(x))
        return torch.cat(branches, 1)


def _out_size(size: int, stride: int) -> int:
    """Spatial size after a layer: every stride-2 layer here is k x k with padding k//2 (odd k), floor mode,
    which gives ceil(size / 2) at every input size."""
    return (size - 1) // stride + 1


class BNInception(nn.Module):
    """BN-Inception and its Inception baseline, built from a table of Figure 5 rows.

    Args:
        rows: the row specs (``figure5.figure5_rows`` or ``figure5.small_rows``).
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier (GoogLeNet / Inception: 0.4; BN-x5 and later: 0).
        norm: "batch" (torch's BN), "paper" (Algorithm 1 with the paper's backward), "ghost" (statistics over
            ``ghost_batch_size`` examples) or "none" (the Inception baseline: convolutions keep their bias).
        act: "relu" or "sigmoid" (BN-x5-Sigmoid).
        lrn: Local Response Normalization after pool1 and after conv2, where GoogLeNet has it.
        stem: "separable" (Figure 5's depth-multiplier-8 first convolution) or "plain" (one convolution).
        ghost_batch_size: examples per BN group when ``norm="ghost"``.
        init_scale: multiplies the initial convolution weights (Sec. 4.2.3's "larger initial weights").
        last_bn: per-activation ("non-convolutional") BN in the last hidden layer (Sec. 4.2.3). Our reading:
            the last hidden layer is the output of the last inception module (5b), the 7x7x1024 activations
            at 224 that the classifier sees through average pooling. With ``last_bn`` the BN of each unit that
            produces 5b's output (the last unit of each of its four branches) normalises every activation
            (channel, row, column) on its own, over the batch only, with its own gamma and beta, instead of
            sharing statistics across the locations of a feature map. The other BN layers are unchanged.
            The grid is fixed by ``img_size``; an input of another size is refused. Needs a BN ``norm``.
        bn_eps: BN's epsilon (default 1e-5: torch's and the Caffe port's; TF-slim uses 1e-3).
        bn_momentum: weight of the new batch in BN's running averages, PyTorch's convention (default 0.1, i.e.
            Caffe/TF "decay" 0.9; copying Caffe's 0.9 here would be the known porting mistake). The paper
            does not use running averages: Algorithm 2 (``recompute_population_stats``) replaces them.
        img_size: the input size the model is built for (the pretrained cfg's input size, ``last_bn``'s grid).
        name: the registered name, for error messages.
    """

    def __init__(
        self,
        rows: Sequence[Row],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        norm: str = "batch",
        act: str = "relu",
        lrn: bool = False,
        stem: str = "separable",
        ghost_batch_size: int = 32,
        init_scale: float = 1.0,
        last_bn: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float | None = 0.1,
        img_size: int | tuple[int, int] = 224,
        name: str = "bn_inception",
    ) -> None:
        super().__init__()
        check_choice("norm", norm, NORMS)
        check_choice("act", act, ACTS)
        check_choice("stem", stem, STEMS)
        _check_hyperparameters(drop_rate, init_scale, bn_eps, bn_momentum, ghost_batch_size)
        if last_bn and norm == "none":
            raise ValueError(
                "last_bn=True needs BN; choose norm='batch', 'paper' or 'ghost' (got norm='none')"
            )
        self.name, self.norm, self.act, self.stem, self.in_chans = name, norm, act, stem, in_chans
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.row_specs = tuple(rows)
        unit = UnitFactory(norm, act, bn_eps, bn_momentum, ghost_batch_size, init_scale)
        self.features, self.num_features = self._build(self.row_specs, unit, in_chans, lrn, stem, last_bn)
        n_down = sum(r.stride == 2 for r in self.row_specs)
        # Each stride-2 layer must halve a grid of at least 2x2, else the last rows see padding only.
        self.min_input_size = 2**n_down
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))  # Figure 5's "avg pool"
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = self._classifier(num_classes)

    def _build(
        self, rows: Sequence[Row], unit: UnitFactory, chans: int, lrn: bool, stem: str, last_bn: bool
    ) -> tuple[nn.Sequential, int]:
        """The one builder: one module per Figure 5 row, in order."""
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        grid = self.img_size
        last_inception = [r for r in rows if isinstance(r, InceptionRow)][-1].name
        for row in rows:
            grid = tuple(_out_size(g, row.stride) for g in grid)
            if isinstance(row, ConvRow):
                module, chans = self._conv_row(row, unit, chans, stem)
                if lrn and row.reduce:  # conv2 (GoogLeNet: LRN after the second convolution)
                    module = nn.Sequential(*module, _lrn())
            elif isinstance(row, PoolRow):
                module = nn.MaxPool2d(3, row.stride, padding=1)
                if lrn and row.name == "pool1":  # GoogLeNet: LRN after the first conv + pool
                    module = nn.Sequential(module, _lrn())
            else:
                per_activation = grid if last_bn and row.name == last_inception else None
                module = InceptionModule(chans, row, unit, per_activation)
                chans = module.out_chans
            layers[_module_name(row)] = module
        return nn.Sequential(layers), chans

    @staticmethod
    def _conv_row(row: ConvRow, unit: UnitFactory, chans: int, stem: str) -> tuple[nn.Module, int]:
        if row.stem:
            return unit(chans, row.out, row.kernel, row.stride, separable=stem == "separable"), row.out
        if row.reduce:  # conv2: "1x1 reduce, then 3x3" as one row
            return nn.Sequential(
                unit(chans, row.reduce, 1), unit(row.reduce, row.out, row.kernel, row.stride)
            ), row.out
        return unit(chans, row.out, row.kernel, row.stride), row.out

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        fc = nn.Linear(self.num_features, num_classes)
        init_weight(fc, "linear")
        return fc

    # ----- timm-style interface -----
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r} is not valid; only 'avg' (Figure 5) is supported")
        self.num_classes = num_classes
        self.fc = self._classifier(num_classes)

    def probe_modules(self) -> dict[str, nn.Module]:
        """The nonlinearities whose input distribution is logged (see ``PROBED_MODULES``): the ReLU/sigmoid
        after the 3x3 convolution of the 3x3 branch in 3a, 4c and 5b, named "3a_3x3", "4c_3x3", "5b_3x3"."""
        return {
            f"{n}_3x3": getattr(self.features, f"inception_{n}").branch_3x3[1].act for n in PROBED_MODULES
        }

    def check_input(self, x: torch.Tensor) -> None:
        """One-line ValueErrors for input the network cannot take."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.name} expects input (N, {self.in_chans}, H, W), got shape {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"input {x.shape[-2]}x{x.shape[-1]} is too small for {self.name}: it needs at least "
                f"{self.min_input_size}x{self.min_input_size} (one 2x downsampling per stride-2 layer)"
                + ("; use bn_inception_small for small images" if self.name == "bn_inception" else "")
            )
        if self.training and self.norm != "none" and x.shape[0] < 2:
            raise ValueError(
                f"a batch of {x.shape[0]} cannot be batch-normalised in training mode (norm={self.norm!r}); "
                "use at least 2 examples or call model.eval()"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _module_name(row: Row) -> str:
    return f"inception_{row.name}" if isinstance(row, InceptionRow) else row.name


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=1.0)


def _check_hyperparameters(
    drop_rate: float, init_scale: float, bn_eps: float, bn_momentum: float | None, ghost_batch_size: int
) -> None:
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate={drop_rate!r} is not valid; it must be in [0, 1)")
    check_positive("init_scale", init_scale)
    check_positive("bn_eps", bn_eps)
    if bn_momentum is not None and not 0.0 <= bn_momentum <= 1.0:
        raise ValueError(
            f"bn_momentum={bn_momentum!r} is not valid; it is the weight of the NEW batch (PyTorch), "
            "in [0, 1], e.g. 0.1 for Caffe/TF decay 0.9"
        )
    if int(ghost_batch_size) != ghost_batch_size or ghost_batch_size < 2:
        raise ValueError(f"ghost_batch_size={ghost_batch_size!r} is not valid; it must be an integer >= 2")
