"""BN-Inception (Figure 5) and its small-image sibling, built by one builder from a table of row specs.

The variants of the paper (Sec. 4.2) differ only in keyword values: ``norm`` (BN or not, and which
implementation), ``act``, ``lrn``, ``drop_rate``; the ensemble members of Sec. 4.2.3 add ``init_scale``,
``last_bn`` and a smaller ``drop_rate``. Get models through ``timm.create_model`` (see ``registry.py``).
"""

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from timm.layers import Format, SelectAdaptivePool2d
from timm.models import checkpoint, checkpoint_seq
from timm.models._features import feature_take_indices  # not re-exported by timm.models
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .batchnorm import NORMS, PerActivationBatchNorm, check_choice, make_norm
from .figure5 import ConvRow, InceptionRow, PoolRow, Row
from .layers import ACTS, ConvNormAct, check_positive, init_weight, like_parameters, make_act, separable_conv

STEMS = ("separable", "plain")
POOLS = ("tf", "caffe")  # pooling conventions, see pooling()
# timm's SelectAdaptivePool2d types ("fast*": the same pooling as x.mean / x.amax; "" = none).
GLOBAL_POOLS = (
    "avg",
    "max",
    "avgmax",
    "catavgmax",
    "fast",
    "fastavg",
    "fastmax",
    "fastavgmax",
    "fastcatavgmax",
    "",
)

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


def pooling(kind: str, stride: int, pool: str) -> nn.Module:
    """A 3x3 pooling layer (max or avg) of a Figure 5 row, in one of the two conventions (``pool=``).

    "tf": padding 1, floor mode, and an average over the window's real pixels only (TF-slim's SAME
    padding); every stride-2 layer then gives ceil(size / 2) at any input size, as the convolutions beside
    it. "caffe": the Caffe BN-Inception's pooling (its PyTorch port: pretrainedmodels ``bninception``),
    stride-2 pools without padding in ceil mode, and an average whose count includes the zero padding.
    """
    if kind == "avg":
        if stride == 1:
            return nn.AvgPool2d(3, 1, padding=1, count_include_pad=pool == "caffe")
        if pool == "caffe":
            return nn.AvgPool2d(3, stride, padding=0, ceil_mode=True, count_include_pad=True)
        return nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
    if stride == 2 and pool == "caffe":
        return nn.MaxPool2d(3, stride, padding=0, ceil_mode=True)
    return nn.MaxPool2d(3, stride, padding=1)


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
    if isinstance(row, InceptionRow) and pooled != halved:
        return 0
    return pooled


def final_grid(rows: Sequence[Row], size: int, pool: str) -> int:
    """The spatial size of the last row's output for inputs of ``size`` (one dimension; 0: not valid)."""
    for row in rows:
        size = row_output_size(row, size, pool)
    return size


class InceptionModule(nn.Module):
    """One inception row: the four branches of Figure 5 concatenated along channels.

    In a stride-2 row the stride sits on the 3x3 of branch 2, on the SECOND 3x3 of branch 3 (as every public
    port; the paper does not say) and on the pooling. The pooling follows ``pool`` (see :func:`pooling`).
    """

    def __init__(
        self,
        in_chans: int,
        row: InceptionRow,
        unit: UnitFactory,
        last_grid: tuple[int, int] | None = None,
        pool: str = "tf",
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
        pool_layer = pooling(row.pool, s, pool)
        self.branch_pool = (
            nn.Sequential(pool_layer, unit(in_chans, row.proj, 1, **out)) if row.proj else pool_layer
        )
        self.out_chans = row.out_channels(in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch_3x3(x), self.branch_dbl(x), self.branch_pool(x)]
        if self.branch_1x1 is not None:
            branches.insert(0, self.branch_1x1(x))
        return torch.cat(branches, 1)


def feature_rows(rows: Sequence[Row]) -> list[int]:
    """Positions of the rows whose outputs are the network's feature maps (``feature_info``): the first
    convolution, the end of the stem (its last convolution), and the last row at each grid size of the
    inception rows (before each stride-2 inception row, and the last row): conv1, conv2, 3b, 4d, 5b."""
    convs = [i for i, r in enumerate(rows) if isinstance(r, ConvRow)]
    before_reduction = [
        i - 1
        for i, r in enumerate(rows)
        if isinstance(r, InceptionRow) and r.stride == 2 and i > convs[-1] + 1
    ]
    return sorted({convs[0], convs[-1], *before_reduction, len(rows) - 1})


class BNInception(nn.Module):
    """BN-Inception and its Inception baseline, built from a table of Figure 5 rows.

    A timm model in every respect: ``forward_features`` / ``forward_head(pre_logits=...)``, ``global_pool``,
    ``reset_classifier``, ``feature_info`` (and ``features_only=True`` through ``timm.create_model``),
    ``forward_intermediates``, ``prune_intermediate_layers``, ``set_grad_checkpointing``, ``group_matcher``;
    it scripts with TorchScript and traces with torch.fx and ``torch.export`` (the input check below runs in
    eager mode and under torch.compile only).

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
        pool: the pooling convention (see :func:`pooling`): "tf" (the default; TF-slim's) or "caffe" (the
            Caffe BN-Inception's, needed to run its published weights, scripts/convert_caffe_bninception.py).
            With "caffe" the grid entering 3c and 4e must be even (any ``img_size`` that is a multiple of
            2 ** (number of stride-2 rows) is).
        global_pool: the pooling before the classifier: "avg" (Figure 5's), or timm's "max", "avgmax",
            "catavgmax" (and their "fast" forms), or "" (none: with ``num_classes=0`` ``forward`` returns the
            feature map; with classes, the classifier is a 1x1 convolution giving logits at every location).
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
        check_choice("norm", norm, NORMS)
        check_choice("act", act, ACTS)
        check_choice("stem", stem, STEMS)
        check_choice("pool", pool, POOLS)
        _check_hyperparameters(drop_rate, init_scale, bn_eps, bn_momentum, ghost_batch_size)
        if last_bn and norm == "none":
            raise ValueError(
                "last_bn=True needs BN; choose norm='batch', 'paper' or 'ghost' (got norm='none')"
            )
        self.name, self.norm, self.act, self.stem, self.in_chans = name, norm, act, stem, in_chans
        self.pool = pool
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.row_specs = tuple(rows)
        n_down = sum(r.stride == 2 for r in self.row_specs)
        # Each stride-2 layer must halve a grid of at least 2x2, else the last rows see padding only.
        self.min_input_size = 2**n_down
        for size in self.img_size:
            self._check_size(size, f"img_size={img_size!r}")
        unit = UnitFactory(norm, act, bn_eps, bn_momentum, ghost_batch_size, init_scale)
        self.features, self.num_features = self._build(self.row_specs, unit, in_chans, lrn, stem, last_bn)
        self._tap_positions = feature_rows(self.row_specs)  # positions in self.features of feature_info
        self.feature_info = self._feature_info()
        self.grad_checkpointing = False
        self.head_drop = nn.Dropout(drop_rate)
        self._reset_head(num_classes, global_pool)

    def _build(
        self, rows: Sequence[Row], unit: UnitFactory, chans: int, lrn: bool, stem: str, last_bn: bool
    ) -> tuple[nn.Sequential, int]:
        """The one builder: one module per Figure 5 row, in order."""
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        grid = self.img_size
        last_inception = [r for r in rows if isinstance(r, InceptionRow)][-1].name
        for row in rows:
            grid = tuple(row_output_size(row, g, self.pool) for g in grid)
            if isinstance(row, ConvRow):
                module, chans = self._conv_row(row, unit, chans, stem)
                if lrn and row.reduce:  # conv2 (GoogLeNet: LRN after the second convolution)
                    module = nn.Sequential(*module, _lrn())
            elif isinstance(row, PoolRow):
                module = pooling("max", row.stride, self.pool)
                if lrn and row.name == "pool1":  # GoogLeNet: LRN after the first conv + pool
                    module = nn.Sequential(module, _lrn())
            else:
                per_activation = grid if last_bn and row.name == last_inception else None
                module = InceptionModule(chans, row, unit, per_activation, self.pool)
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

    def _feature_info(self) -> list[dict]:
        """timm's ``feature_info``: channels, total stride and module of each feature map (feature_rows)."""
        info, reduction, chans = [], 1, self.in_chans
        for i, (row, module_name) in enumerate(zip(self.row_specs, self.features._modules, strict=True)):
            reduction *= row.stride
            chans = _out_channels(row, chans)
            if i in self._tap_positions:
                info.append(dict(num_chs=chans, reduction=reduction, module=f"features.{module_name}"))
        return info

    def _reset_head(self, num_classes: int, global_pool: str) -> None:
        check_choice("global_pool", global_pool, GLOBAL_POOLS)
        self.num_classes, self.global_pool_type = num_classes, global_pool
        # timm's selectable global pooling, flattened to (N, C) unless there is none. Its "fast" avgmax and
        # catavgmax compute the same 1x1 pooling as the plain ones, which TorchScript cannot compile.
        fast = "fast" if global_pool in ("avgmax", "catavgmax") else ""
        self.global_pool = SelectAdaptivePool2d(pool_type=fast + global_pool, flatten=bool(global_pool))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()  # the pre-logits width
        self.fc = self._classifier(num_classes)
        for module in (self.global_pool, self.fc):  # a reset head takes the network's mode
            module.train(self.training)

    def _classifier(self, num_classes: int) -> nn.Module:
        """A linear classifier of the pooled features; without pooling (``global_pool=""``), the same map as
        a 1x1 convolution giving logits at every location (timm's ``use_conv`` classifier)."""
        if num_classes <= 0:
            return nn.Identity()
        factory = like_parameters(self.features)
        if self.global_pool.is_identity():
            fc = nn.Conv2d(self.head_hidden_size, num_classes, 1, **factory)
        else:
            fc = nn.Linear(self.head_hidden_size, num_classes, **factory)
        init_weight(fc, "linear")
        return fc

    # ----- timm-style interface -----
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier of ``num_classes`` outputs (0: none); ``global_pool`` as the constructor's (None:
        keep the current pooling)."""
        self._reset_head(num_classes, self.global_pool_type if global_pool is None else global_pool)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer-wise learning-rate decay: the stem, then one group per inception
        stage (3, 4, 5; the rows' letters are not numbers, so fine and coarse groupings coincide)."""
        return dict(stem=r"^features\.(?:conv|pool)\d", blocks=r"^features\.inception_(\d)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each row's activations in the backward pass instead of storing them (timm's
        ``checkpoint_seq``), for larger batches. As with any activation checkpointing, BN layers in training
        mode see the recomputation as a second forward pass: their running statistics move twice per step
        (Algorithm 2, ``recompute_population_stats``, replaces them anyway)."""
        self.grad_checkpointing = enable

    def probe_modules(self) -> dict[str, nn.Module]:
        """The nonlinearities whose input distribution is logged (see ``PROBED_MODULES``): the ReLU/sigmoid
        after the 3x3 convolution of the 3x3 branch in 3a, 4c and 5b, named "3a_3x3", "4c_3x3", "5b_3x3"."""
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
        if self.training and self.norm != "none" and x.shape[0] < 2:
            raise ValueError(
                f"a batch of {x.shape[0]} cannot be batch-normalised in training mode (norm={self.norm!r}); "
                "use at least 2 examples or call model.eval()"
            )

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
        """timm's intermediate-feature interface: the ``feature_info`` maps selected by ``indices`` (None:
        all; an int n: the last n; a list: those positions), and unless ``intermediates_only`` the final
        feature map (``forward_features``'s; with ``stop_early`` the last selected map's). ``norm`` has no
        effect (no final norm layer); only NCHW output."""
        if output_fmt not in ("NCHW", Format.NCHW):
            raise ValueError(f"output_fmt={output_fmt!r} is not valid; {self.name} gives only 'NCHW'")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        positions = [self._tap_positions[i] for i in take]
        last = self._tap_positions[max_index] if stop_early or intermediates_only else len(self.features) - 1
        self.check_input(x)
        intermediates = []
        for i, module in enumerate(self.features[: last + 1]):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(module, x)
            else:
                x = module(x)
            if i in positions:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the rows after the last selected feature map (and the head, ``prune_head``) for feature
        extraction; returns the selected indices (timm's ``FeatureGetterNet`` calls it)."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        keep = self._tap_positions[max_index] + 1
        self.features = self.features[:keep]
        self.row_specs = self.row_specs[:keep]
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _out_channels(row: Row, in_chans: int) -> int:
    if isinstance(row, ConvRow):
        return row.out
    if isinstance(row, PoolRow):
        return in_chans
    return row.out_channels(in_chans)


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
