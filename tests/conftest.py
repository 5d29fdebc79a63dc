"""Shared fixtures: tests run on CPU, fast, on tiny generated data."""

from __future__ import annotations

import contextlib
import io
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


class _Stream:
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def wait_stream(self, other: _Stream) -> None:
        self.calls.append(("wait_stream", self.name, other.name))


class CudaStreamCalls:
    """Stand-ins for torch.cuda's stream API, ``Tensor.record_stream`` and torchvision's nvJPEG decode that
    record the calls made, in order: the GPU decode's stream protocol checked without a GPU. The stand-in
    decoder puts images of each JPEG's size on ``device`` (the CPU, or fake CUDA under FakeTensorMode); with
    ``fail_batched`` its batched call raises as nvJPEG does on a file it cannot take."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import torch
        import torchvision.io

        self.calls: list[tuple] = []
        self.device, self.fail_batched, self.streams = "cpu", False, 0
        self.current = self.consumer = _Stream("training", self.calls)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: self.current)
        monkeypatch.setattr(torch.cuda, "Stream", self._new_stream)
        monkeypatch.setattr(torch.cuda, "stream", self._use)
        monkeypatch.setattr(
            torch.Tensor, "record_stream", lambda t, s: self.calls.append(("record_stream", s.name))
        )
        monkeypatch.setattr(torchvision.io, "decode_jpeg", self._decode)

    def _new_stream(self, device=None, **kwargs) -> _Stream:
        self.streams += 1
        return _Stream(f"side{self.streams}", self.calls)

    @contextlib.contextmanager
    def _use(self, stream: _Stream):
        previous, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = previous

    def _decode(self, data, mode=None, device=None):
        import torch
        from PIL import Image
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        batched = isinstance(data, list)
        self.calls.append(("decode", self.current.name, len(data) if batched else 1))
        if batched and self.fail_batched:
            raise RuntimeError("Error while decoding JPEG images: nvjpeg cannot take one of them")
        images = []
        for t in data if batched else [data]:
            with unset_fake_temporarily(), torch._C.DisableTorchFunction():  # the stand-in's own read
                width, height = Image.open(io.BytesIO(t.numpy().tobytes())).size
            images.append(torch.zeros(3, height, width, dtype=torch.uint8, device=self.device))
        return images if batched else images[0]


@pytest.fixture
def cuda_streams(monkeypatch) -> CudaStreamCalls:
    from bn_inception.data.device import _decode_stream

    _decode_stream.cache_clear()  # the side stream is made once per device: a stand-in one here
    yield CudaStreamCalls(monkeypatch)
    _decode_stream.cache_clear()
