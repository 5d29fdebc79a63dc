"""Shared by the engine tests: quick deterministic runs of train.py's config, in this process or not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bn_inception.cli import compose
from bn_inception.config import TrainConfig
from bn_inception.config import train_config as typed

REPO = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fashion = pytest.mark.skipif(not FASHION.exists(), reason="needs Debian's dataset-fashion-mnist")

# A quick run: few steps, a small val slice; deterministic so runs can be compared exactly.
QUICK = [
    "trainer.max_steps=12",
    "trainer.eval_every=4",
    "trainer.log_every=2",
    "trainer.eval_limit=64",
    "trainer.eval_batch_size=64",
    "trainer.probe_images=64",
    "trainer.progress=false",
    "trainer.deterministic=true",
    "data.workers=0",
]


def train_config(*overrides: str) -> TrainConfig:
    """train.py's composed, checked and typed config for these overrides (after QUICK)."""
    return typed(compose("train", [*QUICK, *overrides]))


@pytest.fixture
def one_thread():
    """One thread, as the subprocess tests run (OMP_NUM_THREADS=1): two OpenMP threads on a shared 2-core
    machine make a step 10x slower when another process holds a core. Restores determinism afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)
