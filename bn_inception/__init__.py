"""bn-inception: a reproduction of Ioffe & Szegedy (2015), Batch Normalization.

Importing the package registers the models with timm (``timm.create_model("bn_inception", ...)``): at once
if timm is already imported, otherwise the moment it is (a post-import hook, ``wrapt.when_imported``), so
that the command-line front (``bn_inception.config``, ``bn_inception.cli``) can load without torch and
``train.py --help`` or a typo's error answer in a fraction of a second.
"""

from importlib import import_module
from typing import Any

import wrapt

__all__ = ["fold_bn", "recompute_population_stats"]


@wrapt.when_imported("timm")
def _register_models(_timm: Any) -> None:
    import_module("bn_inception.models")  # its registry module decorates the entry points with timm's


def __getattr__(name: str) -> Any:  # PEP 562: the heavy names load on first use
    if name in __all__:
        return getattr(import_module("bn_inception.models"), name)
    raise AttributeError(f"module 'bn_inception' has no attribute {name!r}")
