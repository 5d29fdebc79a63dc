"""The paper's Figure 5 (BN-Inception) as data: one row spec per table row, read by the one builder.

Columns follow the figure: a convolution row has its output width and optional 1x1 reduction (conv2 is "1x1
reduce 64, then 3x3 192"); an inception row has #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3,
pool type and projection (0 = pass-through). Two readings of the inconsistent 4c/4d rows (``table=``):
``"tf"`` (default), Google's TF-slim ``inception_v2`` port, 96-channel pool projections in 4c and 4d, so
every output matches the figure's output column (576, 576, then 1024 after 4e); ``"caffe"``, the literal
widths ("avg + 128") as the Caffe BN-Inception and its PyTorch port: 4c and 4d output 608, 4e 1056.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .layers import check_choice

TABLES = ("tf", "caffe")
# The rows whose outputs are timm's ``feature_info`` maps: the first convolution, the end of the stem, and
# the last row at each grid size (before 3c's and 4e's reductions, and the last): 2x ... 32x downsampled.
FEATURE_ROWS = ("conv1", "conv2", "3b", "4d", "5b")


@dataclass(frozen=True)
class ConvRow:
    """A convolution row: optional 1x1 reduction, then a ``kernel`` x ``kernel`` convolution to ``out``."""

    name: str
    out: int
    kernel: int
    stride: int = 1
    reduce: int = 0  # width of a 1x1 convolution before the main one (0 = none)
    stem: bool = False  # the first convolution: separable (depth multiplier 8) or plain, see ``stem=``

    def out_channels(self, in_channels: int) -> int:
        return self.out


@dataclass(frozen=True)
class PoolRow:
    """A 3x3 max-pooling row (padding 1, floor mode: 112 -> 56 at 224 and valid at every input size)."""

    name: str
    stride: int = 2

    def out_channels(self, in_channels: int) -> int:
        return in_channels


@dataclass(frozen=True)
class InceptionRow:
    """An inception module: four branches concatenated along channels (Figure 5's columns)."""

    name: str
    n1x1: int  # branch 1: 1x1 (0 = no branch, the stride-2 modules)
    n3x3_reduce: int  # branch 2: 1x1 ...
    n3x3: int  # ... then 3x3
    dbl_reduce: int  # branch 3: 1x1 ...
    dbl_3x3: int  # ... then two 3x3 (each this wide)
    pool: str  # branch 4: 3x3 "avg" or "max" pooling ...
    proj: int  # ... then a 1x1 projection (0 = the pooled input passes through)
    stride: int = 1  # 2 in 3c/4e: on the 3x3 of branch 2, the second 3x3 of branch 3 and the pooling

    def out_channels(self, in_channels: int) -> int:
        return self.n1x1 + self.n3x3 + self.dbl_3x3 + (self.proj or in_channels)


Row = ConvRow | PoolRow | InceptionRow
# The width columns, scaled by ``small_rows``.
WIDTHS = ("out", "reduce", "n1x1", "n3x3_reduce", "n3x3", "dbl_reduce", "dbl_3x3", "proj")


# Figure 5, 224x224 input; the trailing avg pool and fc rows are the model's head.
STEM_224: tuple[Row, ...] = (
    ConvRow("conv1", out=64, kernel=7, stride=2, stem=True),  # 112x112x64, the figure's "convolution*"
    PoolRow("pool1"),  # 56x56x64
    ConvRow("conv2", out=192, kernel=3, reduce=64),  # 56x56x192
    PoolRow("pool2"),  # 28x28x192
)

INCEPTION_ROWS_TF: tuple[InceptionRow, ...] = (
    InceptionRow("3a", 64, 64, 64, 64, 96, "avg", 32),  # 28x28x256
    InceptionRow("3b", 64, 64, 96, 64, 96, "avg", 64),  # 28x28x320
    InceptionRow("3c", 0, 128, 160, 64, 96, "max", 0, stride=2),  # 14x14x576
    InceptionRow("4a", 224, 64, 96, 96, 128, "avg", 128),  # 14x14x576
    InceptionRow("4b", 192, 96, 128, 96, 128, "avg", 128),  # 14x14x576
    InceptionRow("4c", 160, 128, 160, 128, 160, "avg", 96),  # 14x14x576 (TF-slim: 96, figure: 128)
    InceptionRow("4d", 96, 128, 192, 160, 192, "avg", 96),  # 14x14x576 (TF-slim: 96, figure: 128)
    InceptionRow("4e", 0, 128, 192, 192, 256, "max", 0, stride=2),  # 7x7x1024
    InceptionRow("5a", 352, 192, 320, 160, 224, "avg", 128),  # 7x7x1024
    InceptionRow("5b", 352, 192, 320, 192, 224, "max", 128),  # 7x7x1024
)

# The literal widths: "avg + 128" in 4c and 4d (608, 608, then 1056 after 4e), as the Caffe port.
INCEPTION_ROWS_CAFFE: tuple[InceptionRow, ...] = tuple(
    dataclasses.replace(r, proj=128) if r.name in ("4c", "4d") else r for r in INCEPTION_ROWS_TF
)

# The small-image stem of ``bn_inception_small`` (28-64 px): a 3x3 stride-1 first convolution and one
# pooling instead of a 7x7/2 convolution and two poolings, so the input is downsampled 8x instead of 32x
# (28 -> 14 at 3a, 7 after 3c, 4x4 after 4e). The rows after it are Figure 5's 3a..5b.
STEM_SMALL: tuple[Row, ...] = (
    ConvRow("conv1", out=64, kernel=3, stride=1, stem=True),
    PoolRow("pool1"),
    ConvRow("conv2", out=192, kernel=3, reduce=64),
)


def figure5_rows(table: str = "tf") -> tuple[Row, ...]:
    """Figure 5's rows conv1..5b for 224x224 input, with the chosen reading of 4c/4d."""
    check_choice("table", table, TABLES)
    return STEM_224 + (INCEPTION_ROWS_TF if table == "tf" else INCEPTION_ROWS_CAFFE)


def small_rows(table: str = "tf", width_mult: float = 1.0) -> tuple[Row, ...]:
    """The small-image network's rows: the small stem, then Figure 5's 3a..5b, every width times
    ``width_mult``, rounded, never below 1 (0 stays 0: an absent branch)."""

    def scaled(row: Row) -> Row:
        widths = {k: getattr(row, k) for k in WIDTHS if hasattr(row, k)}
        return dataclasses.replace(row, **{k: v and max(1, round(v * width_mult)) for k, v in widths.items()})

    return tuple(map(scaled, STEM_SMALL + figure5_rows(table)[len(STEM_224) :]))


# The model keywords of the paper's five ImageNet networks (Sec. 4.2, training.md's table); learning rate,
# weight decay, decay speed, shuffling and distortions belong to the training configs. BN-Baseline is "the
# same as Inception with BN before each nonlinearity" (Sec. 4.2.2), so it keeps Inception's LRN and 40%
# dropout (GoogLeNet's): the paper removes them only with the modifications of Sec. 4.2.1 (items 2 and 5).
PAPER_VARIANTS: dict[str, dict[str, object]] = {
    "inception": dict(norm="none", act="relu", lrn=True, drop_rate=0.4),
    "bn_baseline": dict(norm="batch", act="relu", lrn=True, drop_rate=0.4),
    "bn_x5": dict(norm="batch", act="relu", lrn=False, drop_rate=0.0),
    "bn_x30": dict(norm="batch", act="relu", lrn=False, drop_rate=0.0),
    "bn_x5_sigmoid": dict(norm="batch", act="sigmoid", lrn=False, drop_rate=0.0),
}
