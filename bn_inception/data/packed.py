"""File paths packed in two numpy arrays (their bytes, where each ends): ImageNet's 1.33M paths as ``str``
cost ~170 MB per process, copied by forked workers on refcount touches (pytorch/pytorch#13246); packed,
~45 MB in pages nobody writes (memory-mapped from the tree index: shared by a node's processes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np


def pack(paths: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [os.fsencode(p) for p in paths]
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return blob, np.concatenate([[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)])


def concat(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return pack([])
    starts = np.cumsum([0] + [len(b) for b, _ in parts[:-1]])
    offsets = [parts[0][1][:1]] + [o[1:] + s for (_, o), s in zip(parts, starts, strict=True)]
    return np.concatenate([b for b, _ in parts]), np.concatenate(offsets).astype(np.int64)


class PackedPaths(Sequence):
    """Read-only paths: ``root`` joined to each stored path, optionally a row selection sharing the bytes."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, root: str = "", rows: np.ndarray | None = None):
        self.blob, self.offsets, self.root, self.rows = blob, offsets, os.fspath(root), rows
        # Reads through memoryviews (Python ints and bytes, no numpy scalar per access): ~2 us a path.
        self._bytes = memoryview(np.ascontiguousarray(blob, dtype=np.uint8)).cast("B")
        self._ends = memoryview(np.ascontiguousarray(offsets, dtype=np.int64)).cast("B").cast("q")
        self._rows = (
            None if rows is None else memoryview(np.ascontiguousarray(rows, np.int64)).cast("B").cast("q")
        )
        self._n = len(offsets) - 1 if rows is None else len(rows)
        self._prefix = os.path.join(self.root, "") if self.root else ""

    @classmethod
    def of(cls, paths: Iterable[str], root: str = "") -> PackedPaths:
        return cls(*pack(paths), root)

    def __len__(self) -> int:
        return self._n

    def relative(self, index: int) -> str:
        if not -self._n <= index < self._n:
            raise IndexError(f"path index {index} out of range for {self._n} paths")
        row = index % self._n if self._rows is None else self._rows[index]
        return str(self._bytes[self._ends[row] : self._ends[row + 1]], "utf-8", "surrogateescape")

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        return self._prefix + self.relative(int(index))

    def take(self, rows: Sequence[int] | np.ndarray) -> PackedPaths:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} paths")
        return PackedPaths(self.blob, self.offsets, self.root, rows if self.rows is None else self.rows[rows])

    def __reduce__(self):  # memory maps do not pickle (spawned workers): send plain arrays
        rows = None if self.rows is None else np.asarray(self.rows)
        return PackedPaths, (np.asarray(self.blob), np.asarray(self.offsets), self.root, rows)
