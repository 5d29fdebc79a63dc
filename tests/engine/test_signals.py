"""The signal handler only asks the loop to stop; a second signal stops at once; the previous handler
(submitit's requeue) is called after the save."""

from __future__ import annotations

import os
import signal

import pytest

from bn_inception.engine.signals import GracefulStop


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_first_signal_asks_to_stop_second_exits_at_once(sig):
    with GracefulStop() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), sig)
        assert stop.requested() and stop.received == signal.Signals(sig).name
        with pytest.raises(SystemExit) as exit_info:
            os.kill(os.getpid(), sig)
        assert exit_info.value.code == 128 + sig


def test_handlers_are_restored_and_a_previous_handler_runs_after_the_save():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        with GracefulStop() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert seen == []  # not before the run is saved
            stop.pass_on()
            assert seen == [signal.SIGUSR1]
        os.kill(os.getpid(), signal.SIGUSR1)  # ours is gone: the previous one is back
        assert seen == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_processes_stop_together_when_one_saw_the_signal():
    with GracefulStop() as stop:
        assert stop.requested(agree=lambda mine: mine or True)  # another process saw it
        assert not stop.requested(agree=lambda mine: mine)
