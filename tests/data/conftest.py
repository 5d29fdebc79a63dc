"""Fixtures for the data tests: tiny generated ImageNet-layout trees and Fashion-MNIST IDX files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from bn_inception.data.synthetic import make_synthetic_imagenet


@pytest.fixture
def make_tree(tmp_path):
    """make_tree(name="tree", **make_synthetic_imagenet kwargs) -> SyntheticTree under tmp_path."""

    def make(name: str = "tree", **kwargs):
        kwargs.setdefault("min_size", 20)
        kwargs.setdefault("max_size", 40)
        return make_synthetic_imagenet(tmp_path / name, **kwargs)

    return make


def write_idx(path: Path, array: np.ndarray) -> None:
    """A uint8 array as a gzipped IDX file (magic 0x0000080<ndim>, big-endian uint32 sizes, data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()))


@pytest.fixture
def idx_root(tmp_path) -> Path:
    """A folder with generated Fashion-MNIST-format IDX files (gzipped): 64 train, 16 test images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, n in (("train", 64), ("t10k", 16)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test's tree indexes (and generated trees) go to its own cache folder, not ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
