"""Stopping a run on a signal without losing it (SIGTERM, SIGINT, SIGUSR1, SIGUSR2).

SLURM and Kubernetes send SIGTERM before they kill a job; SLURM's warning before the time limit is SIGUSR2
under submitit (``--signal=USR2@300``) or USR1 in hand-written job scripts; Ctrl-C is SIGINT. The handler
only sets a flag; the loop finishes the step, writes ``last.pt`` and ``results.json`` (``interrupted``) and
the process exits :data:`EXIT_INTERRUPTED` (75, EX_TEMPFAIL: a job script or a ``podFailurePolicy`` can
requeue on it); ``resume=auto`` then continues exactly. Nothing is saved inside the handler, where any code
may be half-way through.

Launchers deliver one request more than once (srun's SIGTERM twice 6-25 ms apart, a requeue's, torchrun's
forwarded Ctrl-C), so only SIGINT escalates: a second Ctrl-C a second or more after the first exits at once
(130); a repeated SIGTERM/SIGUSR1/SIGUSR2 is the same request. A SIGKILL after ``KillWait`` interrupts what
it may: the next start repairs it (engine/checkpoint.py). Several processes agree at the next logging step
through one all-reduce, so all stop after the same step. A handler installed before ours (submitit's, which
requeues on its SIGUSR2) is called once the run is saved (:meth:`GracefulStop.pass_on`); ours stays in front
because submitit's exits inside the handler, mid-step.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: The exit status of a run stopped by a signal after saving: EX_TEMPFAIL from sysexits.h.
EXIT_INTERRUPTED = 75

SIGNALS = tuple(
    s
    for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", 0), getattr(signal, "SIGUSR2", 0))
    if s
)

#: A SIGINT this soon after the first is the same Ctrl-C forwarded by a launcher (torchrun), not a second one.
REPEAT_S = 1.0


class GracefulStop:
    """``with GracefulStop() as stop:`` installs the handlers (main thread only).

    ``stop.received`` is the first signal's name (None until then). On leaving, the previous handlers come
    back, except after a stop: then ours stay until the process exits, so the launcher's repeats of the
    request (srun's second SIGTERM, a requeue's) cannot kill it while it exits with 75.
    """

    def __init__(self, signals: tuple[int, ...] = SIGNALS) -> None:
        self.signals = signals
        self.received: str | None = None
        self._signum: int | None = None
        self._at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            if self._signum is None or sig == signal.SIGINT:
                signal.signal(sig, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._signum is None:
            self._signum, self.received, self._at = signum, signal.Signals(signum).name, time.monotonic()
            log.warning(
                "%s received: finishing this step, then saving checkpoints/last.pt%s",
                self.received,
                " (Ctrl-C again: stop at once)" if signum == signal.SIGINT else "",
            )
        elif signum == signal.SIGINT and time.monotonic() - self._at > REPEAT_S:
            raise SystemExit(128 + signum)  # a second Ctrl-C: no more waiting

    def requested(self, agree: Callable[[bool], bool] | None = None) -> bool:
        """True once a signal has arrived here, or (``agree``: an all-reduce over processes) anywhere."""
        local = self._signum is not None
        return agree(local) if agree is not None else local

    def pass_on(self) -> None:
        """Call the handler that was installed before ours for the signal received, now that the run is
        saved: submitit's requeue on its SIGUSR2. Default and ignore dispositions are left alone. submitit's
        handler ends with ``sys.exit(-1)`` once it has requeued; that exit is ours to make (75, as every
        saved stop), so it is not taken here."""
        previous = self._previous.get(self._signum) if self._signum is not None else None
        if callable(previous) and previous is not signal.default_int_handler:
            with contextlib.suppress(SystemExit):
                previous(self._signum, None)
