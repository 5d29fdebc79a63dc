"""Shared fixtures: tests run on CPU, fast, on tiny generated data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def child_processes(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``: e.g. a loader's workers."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread, as the subprocess tests run (OMP_NUM_THREADS=1): the tests' models are tiny,
    and two OpenMP threads on 2 cores shared with a subprocess cost up to 10x (0.23 vs 0.02 s of CPU for a
    small forward pass, measured while writing the timm contract tests)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running the entry points as subprocesses (no GPU, quiet, importable package)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    return env


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
