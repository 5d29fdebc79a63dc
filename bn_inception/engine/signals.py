"""Stopping a run on a signal without losing it (SIGTERM, SIGINT, SIGUSR1, SIGUSR2).

SLURM and Kubernetes send SIGTERM before they kill a job; SLURM sends a warning signal some time before the
time limit when asked (``--signal=USR2@300``: submitit's sbatch files ask for SIGUSR2, its default
``SUBMITIT_PREEMPT_SIGNAL``; USR1 is the usual choice in hand-written job scripts); Ctrl-C is SIGINT. The
handler only sets a flag: the training loop looks at it after each step, then finishes that step, writes
``checkpoints/last.pt`` and ``results.json`` (``status: interrupted``), flushes TensorBoard, and the process
exits with :data:`EXIT_INTERRUPTED` (75, EX_TEMPFAIL: "try again"), which a job script or a Kubernetes
``podFailurePolicy`` can treat as "requeue"; ``resume=auto`` then continues exactly. Saving is done in the
loop, not in the handler, where any code may be half-way through.

Launchers deliver one request more than once: under ``srun`` a time limit or a preemption sends SIGTERM
twice, 6-25 ms apart (slurmstepd's, then the one srun forwards), a requeue sends another, and torchrun
forwards the Ctrl-C its workers already got. So only SIGINT escalates: a second Ctrl-C, a second or more
after the first, exits at once (status 130); a repeated SIGTERM/SIGUSR1/SIGUSR2 is the same request. A
scheduler that stops waiting sends SIGKILL (SLURM after ``KillWait``, 30 s by default): whatever a kill
interrupts, the next start repairs (bn_inception/engine/checkpoint.py).

Under several processes each may see the signal at a different step: they agree at the next logging step
(``trainer.log_every``) through one all-reduce, so all stop after the same step.

A handler installed before ours is called once the run is saved (:meth:`GracefulStop.pass_on`):
submitit's, which on its SIGUSR2 dumps the job and requeues it with ``scontrol requeue`` (counting its
``max_num_timeout``). Ours stays in front of it because submitit's exits inside the handler, mid-step.
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
