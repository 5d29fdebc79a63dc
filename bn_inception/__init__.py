"""bn-inception: a reproduction of Ioffe & Szegedy (2015), Batch Normalization.

Importing the package registers the models with timm (``timm.create_model("bn_inception", ...)``).
"""

from .models import fold_bn, recompute_population_stats

__all__ = ["fold_bn", "recompute_population_stats"]
