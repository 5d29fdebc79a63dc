"""Counter-based random numbers: augmentation as a pure function of (seed, epoch, sample index), so a resumed
run, any number of workers and any world size see the same crops, flips and colours. SplitMix64 (Steele et
al. 2014) hashes the counter; hand-written because neither torch nor numpy has a generator keyed per
element (numpy's Philox would need one Generator object per sample).
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps modulo 2**64 without warnings, which is what the mixer needs.
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def _as_u64(value: int) -> np.ndarray:
    return np.array([int(value) & _MASK64], dtype=np.uint64)


def sample_uniforms(seed: int, epoch: int, indices: np.ndarray | list[int], count: int) -> np.ndarray:
    """Uniform floats in [0, 1), shape (len(indices), count), a pure function of (seed, epoch, index, k)."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    key = _splitmix64(_splitmix64(_as_u64(seed)) ^ _as_u64(epoch))
    per_sample = _splitmix64(key ^ _splitmix64(idx))
    draws = _splitmix64(per_sample + np.arange(count, dtype=np.uint64).reshape(1, -1))
    # The top 53 bits fill a double's mantissa exactly: uniform on a 2**-53 grid in [0, 1).
    return (draws >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
