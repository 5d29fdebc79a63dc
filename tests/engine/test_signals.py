"""The signal handler only asks the loop to stop; the launchers' repeated deliveries of one request do not
escalate, a second Ctrl-C does; the previous handler (submitit's requeue) is called after the save."""

from __future__ import annotations

import os
import signal

import pytest

import bn_inception.engine.signals as signals_module
from bn_inception.engine.signals import SIGNALS, GracefulStop


@pytest.fixture
def restore_handlers():
    """A stopped GracefulStop leaves its handlers in place (the process is exiting): put pytest's back."""
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("restore_handlers")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_a_repeated_scheduler_signal_is_the_same_request(sig):
    """srun delivers a time limit's or a preemption's SIGTERM twice, 6-25 ms apart; a requeue adds one."""
    with GracefulStop() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), sig)
        assert stop.requested() and stop.received == signal.Signals(sig).name
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.Signals(sig).name  # still running, still the first request
    os.kill(os.getpid(), sig)  # after a stop ours stays until the process exits: a late repeat is harmless


@pytest.mark.usefixtures("restore_handlers")
def test_a_second_ctrl_c_stops_at_once_but_not_the_one_torchrun_forwards(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(signals_module.time, "monotonic", lambda: clock[0])
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == "SIGINT"
        clock[0] += 0.01  # torchrun forwards the Ctrl-C its workers already got
        os.kill(os.getpid(), signal.SIGINT)
        clock[0] += 2.0  # the user presses Ctrl-C again
        with pytest.raises(SystemExit) as exit_info:
            os.kill(os.getpid(), signal.SIGINT)
        assert exit_info.value.code == 130


def test_handlers_are_restored_and_a_previous_handler_runs_after_the_save(restore_handlers):
    seen = []

    def submitit_like(signum, frame):
        seen.append(signum)
        raise SystemExit(-1)  # submitit's handler exits once it has requeued: the exit status is ours

    signal.signal(signal.SIGUSR2, submitit_like)
    with GracefulStop():
        pass
    assert signal.getsignal(signal.SIGUSR2) is submitit_like  # no signal: everything put back
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert seen == []  # not before the run is saved
    stop.pass_on()
    assert seen == [signal.SIGUSR2]


def test_processes_stop_together_when_one_saw_the_signal():
    with GracefulStop() as stop:
        assert stop.requested(agree=lambda mine: mine or True)  # another process saw it
        assert not stop.requested(agree=lambda mine: mine)
