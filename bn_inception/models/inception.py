"""BN-Inception (Figure 5) and its small-image sibling, built by one builder from a table of row specs.

The variants of the paper (Sec. 4.2) differ only in keyword values: ``norm`` (BN or not, and which
implementation), ``act``, ``lrn``, ``drop_rate``; the ensemble members of Sec. 4.2.3 add ``init_scale``,
``last_bn`` and a smaller ``drop_rate``. Get models through ``timm.create_model`` (see ``registry.py``).
"""

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from timm.layers import Format, SelectAdaptivePool2d
from timm.models import checkpoint, checkpoint_seq
from timm.models._features import feature_take_indices  # not re-exported by timm.models
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .batchnorm import PerActivationBatchNorm, make_norm
from .figure5 import FEATURE_ROWS, ConvRow, InceptionRow, PoolRow, Row
from .layers import (
    ConvNormAct,
    check_batch,
    check_choice,
    check_positive,
    init_weight,
    like_parameters,
    make_act,
)

STEMS = ("separable", "plain")
POOLS = ("tf", "caffe")  # pooling conventions, see pooling()
# timm's SelectAdaptivePool2d types ("fast*": the same pooling as x.mean / x.amax; "" = none).
_POOLINGS = ("avg", "max", "avgmax", "catavgmax")
GLOBAL_POOLS = (*_POOLINGS, "", *(f"fast{p}" for p in ("", *_POOLINGS)))

# GoogLeNet's LRN (its Caffe recipe: local_size 5, alpha 1e-4, beta 0.75; torch divides alpha by the size as
# Caffe does), after pool1 and after conv2. Only the Inception baseline and BN-Baseline use it (Sec. 4.2.1).
LRN = partial(nn.LocalResponseNorm, 5, alpha=1e-4, beta=0.75, k=1.0)

# The probed nonlinearities (Figure 1's view on Inception): the 3x3 unit of the 3x3 branch (present in every
# module) in the first, middle and last inception module, so drift compares across depth; 5b's feeds the
# classifier, like the last hidden layer that Figure 1 looks at.
PROBED_MODULES = ("3a", "4c", "5b")


@dataclass(frozen=True)
class Units:
    """Makes every conv -> BN -> nonlinearity unit of one variant, so a variant is a handful of values."""

    norm: str
    act: str
    init_scale: float
    bn: dict  # make_norm's eps, momentum and ghost_batch_size

    def __call__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, *, separable: bool = False, grid: tuple = ()
    ) -> ConvNormAct:
        """One unit; ``grid`` (H, W): per-activation BN over ``cout`` x H x W activations (``last_bn``)."""
        bias = self.norm == "none"  # beta replaces the bias under BN (Sec. 3.2)
        if (
            separable
        ):  # Figure 5's "convolution*": depthwise (multiplier 8), then 1x1, as TF-slim's inception_v2
            # (7x7 at RGB: 1,176 + 1,536 = 2,712 weights, GoogLeNet's "2.7K" first layer)
            depthwise = nn.Conv2d(cin, cin * 8, kernel, stride, padding=kernel // 2, groups=cin, bias=False)
            conv = nn.Sequential(depthwise, nn.Conv2d(cin * 8, cout, 1, bias=bias))
            init_weight(conv[0], "linear", self.init_scale)
            init_weight(conv[1], self.act, self.init_scale)
        else:
            conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=bias)
            init_weight(conv, self.act, self.init_scale)
        if grid:
            inner = make_norm(self.norm, cout * grid[0] * grid[1], conv=False, **self.bn)
            bn = PerActivationBatchNorm(inner, (cout, *grid))
        else:
            bn = make_norm(self.norm, cout, conv=True, **self.bn)
        return ConvNormAct(conv, bn, make_act(self.act))


def pooling(kind: str, stride: int, pool: str) -> nn.Module:
    """A 3x3 pooling layer (max or avg) of a Figure 5 row, in one of the two conventions (``pool=``).

    "tf": padding 1, floor mode, and an average over the window's real pixels only (TF-slim's SAME
    padding); every stride-2 layer then gives ceil(size / 2) at any input size, as the convolutions beside
    it. "caffe": the Caffe BN-Inception's pooling (its PyTorch port: pretrainedmodels ``bninception``),
    stride-2 pools without padding in ceil mode, and an average whose count includes the zero padding.
    """
    pad = dict(padding=0, ceil_mode=True) if pool == "caffe" and stride == 2 else dict(padding=1)
    if kind == "avg":
        return nn.AvgPool2d(3, stride, count_include_pad=pool == "caffe", **pad)
    return nn.MaxPool2d(3, stride, **pad)


def row_output_size(row: Row, size: int, pool: str) -> int:
    """The spatial size after ``row`` for an input grid of ``size`` (one dimension); 0 where the row cannot
    take it (``pool="caffe"``: an odd grid entering a stride-2 inception row, whose padded convolutions give
    ceil(size / 2) and whose unpadded ceil-mode pooling floor(size / 2), so the branches cannot be joined)."""
    if row.stride == 1:
        return size
    halved = (size - 1) // 2 + 1  # k x k, padding k // 2, floor mode: ceil(size / 2)
    if pool == "tf" or isinstance(row, ConvRow):
        return halved
    pooled = size // 2  # 3x3, no padding, ceil mode (valid from size 2)
    return 0 if isinstance(row, InceptionRow) and pooled != halved else pooled


def final_grid(rows: Sequence[Row], size: int, pool: str) -> int:
    """The spatial size of the last row's output for inputs of ``size`` (one dimension; 0: not valid)."""
    for row in rows:
        size = row_output_size(row, size, pool)
    return size


class InceptionModule(nn.Module):
    """One inception row: the four branches of Figure 5 concatenated along channels.

    In a stride-2 row the stride sits on the 3x3 of branch 2, on the SECOND 3x3 of branch 3 (as every public
    port; the paper does not say) and on the pooling. ``grid``: the output grid, for per-activation BN in
    the units that form the module's output (``last_bn``)."""

    def __init__(self, cin: int, row: InceptionRow, unit: Units, grid: tuple = (), pool: str = "tf") -> None:
        super().__init__()
        s, out = row.stride, dict(grid=grid)
        self.branch_1x1 = unit(cin, row.n1x1, 1, **out) if row.n1x1 else None
        self.branch_3x3 = nn.Sequential(
            unit(cin, row.n3x3_reduce, 1), unit(row.n3x3_reduce, row.n3x3, 3, s, **out)
        )
        self.branch_dbl = nn.Sequential(
            unit(cin, row.dbl_reduce, 1),
            unit(row.dbl_reduce, row.dbl_3x3, 3),
            unit(row.dbl_3x3, row.dbl_3x3, 3, s, **out),
        )
        pool_layer = pooling(row.pool, s, pool)
        self.branch_pool = (
            nn.Sequential(pool_layer, unit(cin, row.proj, 1, **out)) if row.proj else pool_layer
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch_3x3(x), self.branch_dbl(x), self.branch_pool(x)]
        if self.branch_1x1 is not None:
            branches.insert(0, self.branch_1x1(x))
        return torch.cat(branches, 1)


class BNInception(nn.Module):
    """BN-Inception and its Inception baseline, built from a table of Figure 5 rows (``figure5_rows`` or
    ``small_rows``); the keywords are listed in the README's "Models" section.

    A timm model in every respect (``forward_head(pre_logits=...)``, ``reset_classifier``, ``feature_info``,
    ``forward_intermediates``, grad checkpointing, ``group_matcher``); it scripts, fx-traces and exports (the
    input check runs in eager mode and under torch.compile only). ``name``: the registered name, for errors;
    ``img_size``: the input it is built for (the cfg, ``last_bn``'s grid). ``last_bn`` (Sec. 4.2.3's
    "non-convolutional, per-activation BN in the last hidden layers") is per-activation BN in the units that
    produce 5b's output, the activations the classifier sees through average pooling.
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
        pool: str = "tf",
        global_pool: str = "avg",
        ghost_batch_size: int = 32,
        init_scale: float = 1.0,
        last_bn: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float | None = 0.1,
        img_size: int | tuple[int, int] = 224,
        name: str = "bn_inception",
    ) -> None:
        super().__init__()
        check_choice("stem", stem, STEMS)
        check_choice("pool", pool, POOLS)
        check_positive("init_scale", init_scale)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate={drop_rate!r} is not valid; it must be in [0, 1)")
        if last_bn and norm == "none":
            raise ValueError(
                "last_bn=True needs BN; choose norm='batch', 'paper' or 'ghost' (got norm='none')"
            )
        self.name, self.norm, self.act, self.stem, self.pool = name, norm, act, stem, pool
        self.in_chans = in_chans
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_classes, self.drop_rate, self.row_specs = num_classes, drop_rate, tuple(rows)
        # Each stride-2 layer must halve a grid of at least 2x2, else the last rows see padding only.
        self.min_input_size = 2 ** sum(r.stride == 2 for r in self.row_specs)
        for size in self.img_size:
            self._check_size(size, f"img_size={img_size!r}")
        bn = dict(eps=bn_eps, momentum=bn_momentum, ghost_batch_size=ghost_batch_size)
        self.features = self._build(Units(norm, act, init_scale, bn), lrn, last_bn)  # and feature_info
        self._tap_positions = [i for i, r in enumerate(self.row_specs) if r.name in FEATURE_ROWS]
        self.grad_checkpointing = False
        self.head_drop = nn.Dropout(drop_rate)
        self._reset_head(num_classes, global_pool)

    def _build(self, unit: Units, lrn: bool, last_bn: bool) -> nn.Sequential:
        """The one builder: one module per Figure 5 row, in order; timm's ``feature_info`` on the way."""
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        grid, chans, reduction, self.feature_info = self.img_size, self.in_chans, 1, []
        last_inception = [r for r in self.row_specs if isinstance(r, InceptionRow)][-1].name
        for row in self.row_specs:
            grid = tuple(row_output_size(row, g, self.pool) for g in grid)
            if isinstance(row, PoolRow):
                module = pooling("max", row.stride, self.pool)
                if lrn and row.name == "pool1":  # GoogLeNet: LRN after the first conv + pool
                    module = nn.Sequential(module, LRN())
            elif isinstance(row, InceptionRow):
                module = InceptionModule(
                    chans, row, unit, grid if last_bn and row.name == last_inception else (), self.pool
                )
            elif row.stem:
                module = unit(chans, row.out, row.kernel, row.stride, separable=self.stem == "separable")
            elif row.reduce:  # conv2: "1x1 reduce, then 3x3" as one row (GoogLeNet: LRN after it)
                module = nn.Sequential(
                    unit(chans, row.reduce, 1), unit(row.reduce, row.out, row.kernel, row.stride)
                )
                if lrn:
                    module.append(LRN())
            else:
                module = unit(chans, row.out, row.kernel, row.stride)
            name = f"inception_{row.name}" if isinstance(row, InceptionRow) else row.name
            layers[name], chans, reduction = module, row.out_channels(chans), reduction * row.stride
            if row.name in FEATURE_ROWS:
                self.feature_info.append(dict(num_chs=chans, reduction=reduction, module=f"features.{name}"))
        self.num_features = chans
        return nn.Sequential(layers)

    def _reset_head(self, num_classes: int, global_pool: str) -> None:
        check_choice("global_pool", global_pool, GLOBAL_POOLS)
        self.num_classes, self.global_pool_type = num_classes, global_pool
        # timm's selectable global pooling, flattened to (N, C) unless there is none. Its "fast" avgmax and
        # catavgmax compute the same 1x1 pooling as the plain ones, which TorchScript cannot compile.
        fast = "fast" if global_pool in ("avgmax", "catavgmax") else ""
        self.global_pool = SelectAdaptivePool2d(pool_type=fast + global_pool, flatten=bool(global_pool))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()  # the pre-logits width
        # A linear classifier of the pooled features; without pooling the same map as a 1x1 convolution
        # giving logits at every location (timm's ``use_conv`` classifier).
        self.fc = nn.Identity()
        if num_classes > 0:
            layer = nn.Conv2d if self.global_pool.is_identity() else nn.Linear
            kernel = (1,) if self.global_pool.is_identity() else ()
            self.fc = layer(self.head_hidden_size, num_classes, *kernel, **like_parameters(self.features))
            init_weight(self.fc, "linear")
        for module in (self.global_pool, self.fc):  # a reset head takes the network's mode
            module.train(self.training)

    # ----- timm-style interface -----
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier of ``num_classes`` outputs (0: none); ``global_pool`` None keeps the pooling."""
        self._reset_head(num_classes, self.global_pool_type if global_pool is None else global_pool)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's layer-wise learning-rate decay groups: the stem, then one per inception stage (3, 4, 5)."""
        return dict(stem=r"^features\.(?:conv|pool)\d", blocks=r"^features\.inception_(\d)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each row's activations in the backward pass; BN's running statistics then move twice per
        step (a second forward pass; Algorithm 2 replaces them anyway)."""
        self.grad_checkpointing = enable

    def probe_modules(self) -> dict[str, nn.Module]:
        """The nonlinearities whose input distribution is logged (``PROBED_MODULES``): the ReLU/sigmoid after
        the 3x3 convolution of the 3x3 branch in 3a, 4c and 5b, named "3a_3x3", "4c_3x3", "5b_3x3"."""
        return {
            f"{n}_3x3": getattr(self.features, f"inception_{n}").branch_3x3[1].act for n in PROBED_MODULES
        }

    def _check_size(self, size: int, what: str) -> None:
        """A one-line ValueError for a side the network cannot take (``what`` names it in the message)."""
        if size < self.min_input_size:
            raise ValueError(
                f"{what} is too small for {self.name}: it needs at least "
                f"{self.min_input_size}x{self.min_input_size} (one 2x downsampling per stride-2 layer)"
                + ("; use bn_inception_small for small images" if self.name == "bn_inception" else "")
            )
        grid = size
        for row in self.row_specs:
            out = row_output_size(row, grid, self.pool)
            if out == 0:
                bigger = self.min_input_size * -(-size // self.min_input_size)
                raise ValueError(
                    f"{what} gives an odd {grid}-pixel grid at inception_{row.name}, which pool='caffe' "
                    "(padded stride-2 convolutions beside ceil-mode pooling) cannot halve consistently; use "
                    f"a size that is a multiple of {self.min_input_size}, e.g. {bigger}"
                )
            grid = out

    def check_input(self, x: torch.Tensor) -> None:
        """One-line ValueErrors for input the network cannot take."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.name} expects input (N, {self.in_chans}, H, W), got shape {tuple(x.shape)}"
            )
        for size in x.shape[-2:]:
            self._check_size(int(size), f"input {x.shape[-2]}x{x.shape[-1]}")
        check_batch(self, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # The check reads shapes as Python numbers: eager mode and torch.compile run it; TorchScript and fx
        # (symbolic shapes) skip it. TorchScript drops the branch only when this test stands alone.
        if not torch.jit.is_scripting():  # noqa: SIM102
            if not is_fx_symbolic_tracing():
                self.check_input(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.features, x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's interface: the ``feature_info`` maps picked by ``indices`` (timm's convention) and, unless
        ``intermediates_only``, the final map; ``norm`` has no effect (no final norm layer); NCHW only."""
        if output_fmt not in ("NCHW", Format.NCHW):
            raise ValueError(f"output_fmt={output_fmt!r} is not valid; {self.name} gives only 'NCHW'")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        positions = [self._tap_positions[i] for i in take]
        last = self._tap_positions[max_index] if stop_early or intermediates_only else len(self.features) - 1
        self.check_input(x)
        intermediates, recompute = [], self.grad_checkpointing and not torch.jit.is_scripting()
        for i, module in enumerate(self.features[: last + 1]):
            x = checkpoint(module, x) if recompute else module(x)
            if i in positions:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the rows after the last selected feature map (and the head, ``prune_head``): timm API."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        keep = self._tap_positions[max_index] + 1
        self.features, self.row_specs = self.features[:keep], self.row_specs[:keep]
        if prune_head:
            self.reset_classifier(0, "")
        return take
