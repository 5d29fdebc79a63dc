"""The model keywords of the paper's five ImageNet networks (Sec. 4.2, training.md's table).

Only what the model itself sees is here; learning rate, weight decay, decay speed, shuffling and
distortions belong to the training configs.

BN-Baseline is "the same as Inception with BN before each nonlinearity" (Sec. 4.2.2), so it keeps
Inception's LRN and 40% dropout: the paper removes them only as part of the accelerating modifications of
Sec. 4.2.1 (items 2 and 5), which BN-x5, BN-x30 and BN-x5-Sigmoid apply.
"""

from __future__ import annotations

GOOGLENET_DROPOUT = 0.4  # GoogLeNet's dropout before the classifier (training.md)

PAPER_VARIANTS: dict[str, dict[str, object]] = {
    "inception": dict(norm="none", act="relu", lrn=True, drop_rate=GOOGLENET_DROPOUT),
    "bn_baseline": dict(norm="batch", act="relu", lrn=True, drop_rate=GOOGLENET_DROPOUT),
    "bn_x5": dict(norm="batch", act="relu", lrn=False, drop_rate=0.0),
    "bn_x30": dict(norm="batch", act="relu", lrn=False, drop_rate=0.0),
    "bn_x5_sigmoid": dict(norm="batch", act="sigmoid", lrn=False, drop_rate=0.0),
}
