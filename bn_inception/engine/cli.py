"""What train.py and evaluate.py share: config resolvers, one-line errors, quiet non-zero ranks."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def register_resolvers() -> None:
    """``${mul:a,b}``: configs state the paper's relations (lr = 0.0015 x 5), not their products."""
    if not OmegaConf.has_resolver("mul"):
        OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))


def process_rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def quiet_unless_main() -> None:
    """Processes other than rank 0 log warnings only, and not into the run's log file (rank 0 owns it)."""
    if process_rank() == 0:
        return
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)


def one_line_errors(known: tuple[type[BaseException], ...], multirun: Callable[[], bool]):
    """Report ``known`` errors as one line (``error: ...``) instead of a traceback.

    A single run exits with status 1; inside a sweep the error is re-raised so Hydra records the job
    as failed and goes on to the next one.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except known as e:
                message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if multirun():
                    log.error("error: %s", message)
                    raise
                print(f"error: {message}", file=sys.stderr)
                sys.exit(1)

        return wrapper

    return decorate
