"""Faults a cluster user meets, with loader workers on: Ctrl-C twice (to every process of the terminal's
group), a worker killed (the out-of-memory killer's SIGKILL), one torchrun process killed. Each run ends on
its own, promptly, says what happened in one line, leaves nothing running and keeps its last good
checkpoint for a relaunch. (SIGTERM and a relaunch: test_user_paths.py.)
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from bn_inception.engine.checkpoint import load_checkpoint
from bn_inception.engine.signals import EXIT_INTERRUPTED
from tests.conftest import child_processes
from tests.e2e.conftest import TREE_RUN, at_line, run

pytestmark = pytest.mark.xdist_group("e2e")  # one xdist worker runs the whole tier (pyproject.toml)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_ctrl_c_twice_at_once_is_one_request_saved_with_75(tree, user_env, e2e_home):
    run_dir = e2e_home / "runs" / "ctrl-c"
    args = ["python", "train.py", *TREE_RUN, f"data.root={tree}", "trainer.max_steps=12",
            f"hydra.run.dir={run_dir}"]  # fmt: skip

    def twice(command) -> None:  # a terminal sends Ctrl-C to its foreground process group, workers included
        os.killpg(command.pid, signal.SIGINT)
        time.sleep(0.05)  # within engine/signals.py's REPEAT_S: the same request (a launcher's repeat)
        os.killpg(command.pid, signal.SIGINT)

    run(args, user_env, on_line=at_line("| step 6/12 |", twice)).check(EXIT_INTERRUPTED)
    res = results(run_dir)
    assert res["status"] == "interrupted" and 6 <= res["steps"] < 12
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == res["steps"]
    assert not (run_dir / ".lock").exists()


def test_a_killed_loader_worker_stops_the_run_with_one_line_and_keeps_its_checkpoint(
    tree, user_env, e2e_home
):
    run_dir = e2e_home / "runs" / "worker-killed"
    args = ["python", "train.py", *TREE_RUN, f"data.root={tree}", "trainer.max_steps=12",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    killed = []

    def kill_a_worker(command) -> None:  # what the out-of-memory killer does
        killed.append(min(child_processes(command.pid)))
        os.kill(killed[0], signal.SIGKILL)

    ended = run(args, user_env, on_line=at_line("| step 6/12 |", kill_a_worker)).check(1)
    # noticed while waiting for a batch: our line with what to do (torch's own words, or a
    # ConnectionResetError when the worker died handing a batch over); elsewhere (torch's SIGCHLD handler):
    # "DataLoader worker (pid N) is killed by signal: Killed."
    error = ended.lines()[-1]
    ours, torchs = "error: a data loader worker died (", f"error: DataLoader worker (pid {killed[0]})"
    assert error.startswith((ours, torchs)), error
    assert results(run_dir)["status"] == "failed"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 4
    assert not (run_dir / ".lock").exists()


def test_torchrun_with_one_process_killed_ends_and_records_the_failure(tree, user_env, e2e_home):
    run_dir = e2e_home / "runs" / "rank-killed"
    args = ["torchrun", "--standalone", "--nproc_per_node=2", "train.py", *TREE_RUN, f"data.root={tree}",
            "trainer.max_steps=12", f"hydra.run.dir={run_dir}"]  # fmt: skip

    def kill_rank_1(command) -> None:  # a training process, not one of its loader workers
        for pid in child_processes(command.pid):
            if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes():
                os.kill(pid, signal.SIGKILL)

    ended = run(args, user_env, on_line=at_line("| step 2/12 |", kill_rank_1)).check(1)
    assert "exitcode  : -9" in ended.output  # torchrun names the killed process
    assert results(run_dir)["status"] == "failed" and not (run_dir / ".lock").exists()
