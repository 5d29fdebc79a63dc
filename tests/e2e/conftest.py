"""The end-to-end tier: the entry points run as a user types them, each under a timeout, on a small
generated ImageNet-layout tree read by loader worker processes.

What every command here must do besides its own job: end on its own within seconds of its last line (the
hang of issue 19: a run on an image tree trained, printed its summary and never exited), and leave none of
its processes behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Seconds a command may take from its last output line to its end (it prints nothing while it exits), or
#: half of all the time it ran if that is more: interpreter teardown alone (torch, timm, Hydra) took 2-5 s
#: on a 2-core machine shared with four training runs, and 7-25 s at a load average of 12, which
#: stretches the whole command alike. A command that never ends fails at its timeout.
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
    """How a command ended: status, everything it printed, how long it took after its last line, and its
    processes still alive after it ended."""

    command: list[str]
    returncode: int
    output: str
    wall_s: float  # from its start to its end
    linger_s: float  # from its last line to its end
    leftovers: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return self.output.splitlines()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines()[-n:])

    def check(self, status: int = 0) -> Ended:
        """Assert the exit status, a prompt end (see LINGER_S), and nothing left running."""
        assert self.returncode == status, f"exit {self.returncode}, expected {status}:\n{self.tail()}"
        allowed = max(LINGER_S, self.wall_s / 2)
        assert self.linger_s < allowed, f"ended {self.linger_s:.1f} s after its last line:\n{self.tail()}"
        assert not self.leftovers, f"processes left running: {self.leftovers}"
        return self


#: Every process a command starts inherits this variable, set to a value of its own: how its processes are
#: found, however they detach (torchrun starts each training process in a session of its own).
MARK = "BN_INCEPTION_E2E_COMMAND"


def command_processes(mark: str) -> dict[int, str]:
    """{pid: command line} of the live (not zombie) processes carrying ``MARK=mark``."""
    wanted, found = f"\0{MARK}={mark}\0".encode(), {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if wanted not in b"\0" + (entry / "environ").read_bytes() + b"\0":
                continue
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:  # it ended meanwhile
            continue
    return found


def signal_all(mark: str, sig: int) -> None:
    for pid in command_processes(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Sampler:
    """Samples, every ``every`` seconds while a command runs, its processes' resident memory: ``samples``
    is a list of (time, {pid: RSS in MiB}). Give it to :func:`run`."""

    def __init__(self, every: float = 0.1) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def sample(self, mark: str) -> None:
        page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self._stop.wait(self.every):
            rss = {}
            for pid in command_processes(mark):
                with contextlib.suppress(OSError, IndexError):  # it ended meanwhile
                    rss[pid] = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_mib
            if rss:
                self.samples.append((time.monotonic(), rss))


class Command:
    """A running command, as ``on_line`` callbacks see it: ``pid`` and ``signal(sig)``, which reaches every
    process of the command, as SLURM signals every process of a job step (loader workers included)."""

    def __init__(self, proc: subprocess.Popen, mark: str) -> None:
        self.proc, self.pid, self.mark = proc, proc.pid, mark

    def signal(self, sig: int) -> None:
        signal_all(self.mark, sig)


def run(
    args: list[str],
    env: dict[str, str],
    timeout: float = 180,
    on_line: Callable[[str, Command], None] | None = None,
    sampler: Sampler | None = None,
    cwd: Path = REPO,
) -> Ended:
    """Run ``args`` (``python`` is this interpreter) in a new session, as a shell would, calling
    ``on_line(line, command)`` for each output line as it comes (to send signals at chosen moments).

    A command still running after ``timeout`` seconds is killed with all its processes and fails the test.
    """
    command = [sys.executable if a == "python" else a for a in args]
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        command, cwd=cwd, env={**env, MARK: mark}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    running = Command(proc, mark)
    lines: list[str] = []
    started = time.monotonic()
    last = [started]

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            last[0] = time.monotonic()
            if on_line is not None:
                on_line(line, running)

    threads = [threading.Thread(target=read, daemon=True)]
    if sampler is not None:
        threads.append(threading.Thread(target=sampler.sample, args=(mark,), daemon=True))
    for thread in threads:
        thread.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_all(mark, signal.SIGKILL)
        proc.wait()
        tail = "\n".join(lines[-30:])
        pytest.fail(f"{' '.join(args)} did not end within {timeout} s; last lines:\n{tail}")
    finally:
        if sampler is not None:
            sampler.stop()
    ended = time.monotonic()
    leftovers = command_processes(mark)
    deadline = time.monotonic() + 2.0  # a process that is already exiting gets a moment
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.1)
        leftovers = command_processes(mark)
    signal_all(mark, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=10)
    output = "\n".join(lines)
    return Ended(command, proc.returncode, output, ended - started, ended - last[0], list(leftovers.values()))


def at_line(pattern: str, action: Callable[[Command], None]) -> Callable[[str, Command], None]:
    """An ``on_line`` that calls ``action(command)`` once, at the first line containing ``pattern``."""
    done = []

    def on_line(line: str, command: Command) -> None:
        if pattern in line and not done:
            done.append(True)
            action(command)

    return on_line


def signal_after(pattern: str, sig: int = signal.SIGTERM) -> Callable[[str, Command], None]:
    """An ``on_line`` that sends ``sig`` to every process of the command at the first line containing
    ``pattern``."""
    return at_line(pattern, lambda command: command.signal(sig))


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
