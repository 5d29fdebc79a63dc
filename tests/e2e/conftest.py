"""The end-to-end tier: the entry points run as a user types them, each in its own session under a timeout,
on a small generated ImageNet-layout tree read by loader worker processes.

What every command here must do besides its own job: end on its own within seconds of its last line (the
hang of issue 19: a run on an image tree trained, printed its summary and never exited), and leave no
process of its session behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Seconds a command may take from its last output line to its end: it prints nothing while it exits, and
#: interpreter teardown alone took 2-5 s on a 2-core machine shared with four training runs.
LINGER_S = 15.0

#: A tiny run on the tree: 32 px (the small network), 8 steps of 16 images, evaluated twice; two loader
#: workers per loader, as the ImageNet path runs (data.workers >= 1).
TREE_RUN = [
    "data=imagenet",
    "data.input_size=32",
    "data.workers=2",
    "trainer.batch_size=16",
    "trainer.max_steps=8",
    "trainer.eval_every=4",
    "trainer.log_every=2",
    "trainer.eval_batch_size=16",
    "trainer.probe_images=16",
]


@dataclass
class Ended:
    """How a command ended: status, everything it printed, how long it took after its last line, and the
    processes of its session still alive after it ended."""

    command: list[str]
    returncode: int
    output: str
    linger_s: float
    leftovers: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return self.output.splitlines()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines()[-n:])

    def check(self, status: int = 0, linger_s: float = LINGER_S) -> Ended:
        """Assert the exit status, a prompt end, and nothing left running."""
        assert self.returncode == status, f"exit {self.returncode}, expected {status}:\n{self.tail()}"
        assert self.linger_s < linger_s, f"ended {self.linger_s:.1f} s after its last line:\n{self.tail()}"
        assert not self.leftovers, f"processes left running: {self.leftovers}"
        return self


def session_processes(sid: int) -> list[str]:
    """'pid command' of the live (not zombie) processes whose session is ``sid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            try:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                cmdline = ""
            found.append(f"{stat.parent.name} {cmdline[:120]}")
    return found


class SessionSampler:
    """Samples, every ``every`` seconds from its first ``start(sid)`` until ``stop()``, the live processes of
    session ``sid`` and their resident memory: ``samples`` is a list of (time, {pid: RSS in MiB})."""

    def __init__(self, every: float = 0.1) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, sid: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._sample, args=(sid,), daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _sample(self, sid: int) -> None:
        page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self._stop.wait(self.every):
            rss = {}
            for pid in (int(entry.split()[0]) for entry in session_processes(sid)):
                with contextlib.suppress(OSError, IndexError):  # it ended meanwhile
                    rss[pid] = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_mib
            if rss:
                self.samples.append((time.monotonic(), rss))


def run(
    args: list[str],
    env: dict[str, str],
    timeout: float = 180,
    on_line: Callable[[str, subprocess.Popen], None] | None = None,
    cwd: Path = REPO,
) -> Ended:
    """Run ``args`` (``python`` is this interpreter) in a new session, as a shell would, calling
    ``on_line(line, process)`` for each output line as it comes (to send signals at chosen moments).

    A command still running after ``timeout`` seconds is killed with its whole session and fails the test.
    """
    command = [sys.executable if a == "python" else a for a in args]
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    last = [time.monotonic()]

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            last[0] = time.monotonic()
            if on_line is not None:
                on_line(line, proc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        proc.wait()
        last = "\n".join(lines[-30:])
        pytest.fail(f"{' '.join(args)} did not end within {timeout} s; last lines:\n{last}")
    ended = time.monotonic()
    leftovers = session_processes(proc.pid)
    deadline = time.monotonic() + 2.0  # a process that is already exiting gets a moment
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.1)
        leftovers = session_processes(proc.pid)
    if leftovers:
        kill_session(proc.pid)
    reader.join(timeout=10)
    return Ended(command, proc.returncode, "\n".join(lines), ended - last[0], leftovers)


def kill_session(sid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGKILL)


def signal_session_after(
    pattern: str, sig: int = signal.SIGTERM, nth: int = 1
) -> Callable[[str, subprocess.Popen], None]:
    """An ``on_line`` that sends ``sig`` to the command's whole process group (as SLURM does: the loader
    workers get it too) when the ``nth`` line containing ``pattern`` appears."""
    seen = [0]

    def on_line(line: str, proc: subprocess.Popen) -> None:
        if pattern in line:
            seen[0] += 1
            if seen[0] == nth:
                os.killpg(proc.pid, sig)

    return on_line


@pytest.fixture(scope="session")
def e2e_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def user_env(e2e_home) -> dict[str, str]:
    """A user's shell: `python` on PATH, no GPU, one thread per process (2 cores shared by the processes
    of a test), a private cache for tree indexes."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=str(REPO),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        XDG_CACHE_HOME=str(e2e_home / "cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def tree(e2e_home) -> Path:
    """An ImageNet-layout tree (train/<wnid>/, val/<wnid>/): 4 classes, 32 training and 8 validation
    images each, 24-40 px."""
    from bn_inception.data.synthetic import make_synthetic_imagenet

    return make_synthetic_imagenet(
        e2e_home / "imagenet", num_classes=4, train_per_class=32, val_per_class=8, min_size=24, max_size=40
    ).root
