"""Models: the Figure 5 table, its builder, the BN implementations, Algorithm 2, BN folding, the Sec. 4.1 MLP.

Importing this package registers ``bn_inception``, ``bn_inception_small`` and ``bn_mlp`` with timm.
"""

from .batchnorm import NORMS, GhostBatchNorm, PaperBatchNorm, PerActivationBatchNorm, make_norm
from .figure5 import TABLES, figure5_rows, small_rows
from .inception import STEMS, BNInception
from .inference import fold_bn, recompute_population_stats
from .layers import ACTS
from .mlp import BNMLP
from .registry import SMALL_WIDTH_MULT, bn_inception, bn_inception_small, bn_mlp
from .variants import PAPER_VARIANTS

__all__ = [
    "ACTS",
    "BNMLP",
    "NORMS",
    "PAPER_VARIANTS",
    "SMALL_WIDTH_MULT",
    "STEMS",
    "TABLES",
    "BNInception",
    "GhostBatchNorm",
    "PaperBatchNorm",
    "PerActivationBatchNorm",
    "bn_inception",
    "bn_inception_small",
    "bn_mlp",
    "figure5_rows",
    "fold_bn",
    "make_norm",
    "recompute_population_stats",
    "small_rows",
]
