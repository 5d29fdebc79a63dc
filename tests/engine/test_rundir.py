"""One process per run directory: the lock refuses a live holder (naming it), takes over a dead, crashed or
restarted one, works with a holder on another host through its heartbeat, and leaves nothing behind when it
refuses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from bn_inception.engine.distributed import DistInfo
from bn_inception.engine.trainer import LOCK_NAME, owned_run_dir
from bn_inception.engine.trainer import TrainingError as RunDirBusy
from bn_inception.engine.trainer import lock_run_dir as RunLock
from bn_inception.files import _start_ticks


def write_lock(run_dir, host: str, pid: int, age_s: float = 0.0, **extra) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    record = {"host": host, "pid": pid, "started": time.time(), "token": "theirs", **extra}
    path.write_text(json.dumps(record))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_live_holder_is_named_and_nothing_changes(tmp_path, live_pid):
    write_lock(tmp_path, socket.gethostname(), live_pid, ticks=_start_ticks(live_pid))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunDirBusy, match=rf"in use by host {socket.gethostname()} pid {live_pid}"):
        RunLock(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # alive on this host, it holds the lock however long it has been stopped (Ctrl-Z) without a heartbeat
    write_lock(tmp_path, socket.gethostname(), live_pid, age_s=3600, ticks=_start_ticks(live_pid))
    with pytest.raises(RunDirBusy):
        RunLock(tmp_path)


@pytest.mark.parametrize("content", [b"", b'{"host": "vm", "pid"', b"\x00" * 64, b"[1, 2]"])
def test_an_empty_or_damaged_lock_is_taken_over(tmp_path, caplog, content):
    """A node crash can leave the lock file linked but its data never written (empty or garbage)."""
    (tmp_path / LOCK_NAME).write_bytes(content)
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "empty or damaged" in caplog.text and not list(tmp_path.iterdir())


def _take_and_hold(run_dir, barrier, results) -> None:
    barrier.wait()
    try:
        with RunLock(run_dir):
            results.put("held")
            time.sleep(1.0)  # longer than every other starter needs to look
    except RunDirBusy:
        results.put("refused")


def test_starters_racing_to_take_over_a_damaged_lock_leave_one_holder(tmp_path):
    """A requeue after a node crash may start several tasks at once on the same empty lock."""
    import multiprocessing as mp

    (tmp_path / LOCK_NAME).write_bytes(b"")
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_take_and_hold, args=(tmp_path, barrier, results)) for _ in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert sorted(results.get(timeout=5) for _ in procs) == ["held"] + ["refused"] * 5
    assert not list(tmp_path.iterdir())


def test_a_holder_whose_pid_is_now_this_process_or_another_is_taken_over(tmp_path, caplog, live_pid):
    # a restarted container: the dead job was pid 1 on this host name, and so is the new one
    write_lock(tmp_path, socket.gethostname(), os.getpid(), ticks=_start_ticks(os.getpid()) - 1)
    with RunLock(tmp_path):
        pass
    write_lock(tmp_path, socket.gethostname(), os.getpid())  # a record without a start time
    with RunLock(tmp_path):
        pass
    assert "this process's pid" in caplog.text
    # the holder's pid was reused by an unrelated process that started later
    write_lock(tmp_path, socket.gethostname(), live_pid, ticks=_start_ticks(live_pid) - 1)
    with RunLock(tmp_path):
        pass
    assert caplog.text.count("is another process now") == 2


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path, caplog):
    write_lock(tmp_path, socket.gethostname(), dead_pid())
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "is gone" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()  # released


def test_another_hosts_holder_counts_while_its_heartbeat_is_fresh(tmp_path):
    write_lock(tmp_path, "node-17", 12345, age_s=5)
    with pytest.raises(RunDirBusy, match="node-17 pid 12345"):
        RunLock(tmp_path)
    write_lock(tmp_path, "node-17", 12345, age_s=3600)
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == socket.gethostname()


def test_the_heartbeat_goes_on_after_a_failed_touch(tmp_path, monkeypatch):
    """A transient NFS error must not silence the holder for good (it would be taken over while alive)."""
    import bn_inception.files as lockfile

    real_utime, calls = os.utime, []

    def flaky_utime(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(116, "Stale file handle")
        return real_utime(path, *args, **kwargs)

    monkeypatch.setattr(lockfile, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(lockfile.os, "utime", flaky_utime)
    with RunLock(tmp_path):
        real_utime(tmp_path / LOCK_NAME, (0, 0))
        deadline = time.monotonic() + 10
        while (tmp_path / LOCK_NAME).stat().st_mtime == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / LOCK_NAME).stat().st_mtime > 0 and len(calls) >= 2


def test_two_lockers_one_wins(tmp_path):
    first = RunLock(tmp_path)
    with pytest.raises(RunDirBusy):
        RunLock(tmp_path)
    first.release()
    with RunLock(tmp_path):
        pass


def test_saves_a_kill_interrupted_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    leftovers = [tmp_path / "checkpoints" / ".last.pt.1a2b3c4d.tmp", tmp_path / ".results.json.9f8e.tmp",
                 tmp_path / f"{LOCK_NAME}.deadbeef"]  # fmt: skip
    for p in leftovers:
        p.write_text("half")
    (tmp_path / "checkpoints" / "last.pt").write_text("kept")
    with owned_run_dir(tmp_path, DistInfo(torch.device("cpu"))):
        assert not any(p.exists() for p in leftovers)
        assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.pt"]
    assert not (tmp_path / LOCK_NAME).exists()  # released
