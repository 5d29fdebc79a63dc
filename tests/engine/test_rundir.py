"""One process per run directory: the lock refuses a live holder (naming it), takes over a dead one, works
with a holder on another host through its heartbeat, and leaves nothing behind when it refuses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from bn_inception.engine.rundir import LOCK_NAME, RunDirBusy, RunLock, remove_interrupted_saves


def write_lock(run_dir, host: str, pid: int, age_s: float = 0.0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps({"host": host, "pid": pid, "started": time.time(), "token": "theirs"}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_holder_is_named_and_nothing_changes(tmp_path):
    write_lock(tmp_path, socket.gethostname(), os.getpid())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunDirBusy, match=rf"in use by host {socket.gethostname()} pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path, caplog):
    write_lock(tmp_path, socket.gethostname(), dead_pid())
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "is gone" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()  # released


def test_another_hosts_holder_counts_while_its_heartbeat_is_fresh(tmp_path):
    write_lock(tmp_path, "node-17", 12345, age_s=5)
    with pytest.raises(RunDirBusy, match="node-17 pid 12345"):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, "node-17", 12345, age_s=3600)
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == socket.gethostname()


def test_two_lockers_one_wins(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(RunDirBusy):
        RunLock(tmp_path).acquire()
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
    assert sorted(remove_interrupted_saves(tmp_path)) == sorted(leftovers)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.pt"]
