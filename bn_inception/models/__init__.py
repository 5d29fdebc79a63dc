"""Models: the Figure 5 table, its builder, the BN implementations, Algorithm 2, BN folding, the Sec. 4.1 MLP.

Importing this package registers ``bn_inception`` (and its pretrained tag ``bn_inception.caffe_port``),
``bn_inception_small`` and ``bn_mlp`` with timm.
"""

from .batchnorm import NORMS, GhostBatchNorm, PaperBatchNorm, PerActivationBatchNorm, make_norm  # noqa: F401
from .figure5 import PAPER_VARIANTS, TABLES, figure5_rows, small_rows  # noqa: F401
from .inception import STEMS, BNInception  # noqa: F401
from .inference import fold_bn, recompute_population_stats  # noqa: F401
from .mlp import BNMLP  # noqa: F401
from .registry import SMALL_WIDTH_MULT, bn_inception, bn_inception_small, bn_mlp  # noqa: F401
