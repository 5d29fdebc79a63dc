"""Stopping a run on a signal without losing it (SIGTERM, SIGINT, SIGUSR1).

SLURM and Kubernetes send SIGTERM before they kill a job; SLURM sends SIGUSR1 some time before the limit
when asked (``--signal=USR1@90``; the shipped slurm launcher asks); Ctrl-C is SIGINT. The handler only
sets a flag: the training loop looks at it after each step, then finishes that step, writes
``checkpoints/last.pt`` and ``results.json`` (``status: interrupted``), flushes TensorBoard, and the
process exits with :data:`EXIT_INTERRUPTED` (75, EX_TEMPFAIL: "try again"), which a job script or a
Kubernetes ``podFailurePolicy`` can treat as "requeue"; ``resume=auto`` then continues exactly. Saving is
done in the loop, not in the handler, where any code may be half-way through.

A second signal exits at once (status 128 + the signal's number, as a shell reports a killed process);
a save in progress then leaves at most a temporary file, which the next start removes.

Under several processes each may see the signal at a different step: they agree at the next logging step
(``trainer.log_every``) through one all-reduce, so all stop after the same step.

A handler installed before ours (submitit's, which requeues a SLURM job on SIGUSR1) is called after the
checkpoint is written, so its requeue happens with nothing lost.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: The exit status of a run stopped by a signal after saving: EX_TEMPFAIL from sysexits.h.
EXIT_INTERRUPTED = 75

SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s)


class GracefulStop:
    """``with GracefulStop() as stop:`` installs the handlers (main thread only), restores them after.

    ``stop.received`` is the first signal's name (None until then).
    """

    def __init__(self, signals: tuple[int, ...] = SIGNALS) -> None:
        self.signals = signals
        self.received: str | None = None
        self._signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._signum is not None:  # the second signal: no more waiting
            raise SystemExit(128 + signum)
        self._signum, self.received = signum, signal.Signals(signum).name
        log.warning(
            "%s received: finishing this step, then saving checkpoints/last.pt (again: stop at once)",
            self.received,
        )

    def requested(self, agree: Callable[[bool], bool] | None = None) -> bool:
        """True once a signal has arrived here, or (``agree``: an all-reduce over processes) anywhere."""
        local = self._signum is not None
        return agree(local) if agree is not None else local

    def pass_on(self) -> None:
        """Call the handler that was installed before ours for the signal received (e.g. submitit's requeue
        on SIGUSR1), now that the run is saved. Default and ignore dispositions are left alone."""
        previous = self._previous.get(self._signum) if self._signum is not None else None
        if callable(previous) and previous not in (signal.default_int_handler,):
            previous(self._signum, None)
