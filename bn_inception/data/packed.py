"""File paths packed in two numpy arrays: all their bytes, and where each one starts.

ImageNet's 1.33M file names as Python ``str`` objects cost ~170 MB per process, and forked loader workers
copy the pages those objects live on as soon as they touch them (every access updates a refcount:
pytorch/pytorch#13246), so memory grows with every worker over an epoch. Packed, a path is its bytes plus
an 8-byte offset (~45 MB for ImageNet, relative to ``data.root``), held by two numpy objects whose data
pages nobody writes: workers share them for good. Read from the tree index (``bn_inception.data.index``)
the arrays are memory-mapped, so every process on a node shares one copy, the page cache's.

A view (``take``) selects rows without copying the bytes: subsets of ImageNet are a row array over the
full tree's index.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, islice

import numpy as np


class PathPacker:
    """Appends paths to a growing bytes buffer and offset array (no Python object per path is kept)."""

    def __init__(self) -> None:
        self._blob = bytearray()
        self._offsets = array("q", [0])

    def add(self, path: str) -> None:
        self._blob += os.fsencode(path)
        self._offsets.append(len(self._blob))

    def add_folder(self, folder: str, names: list[str]) -> None:
        """Add ``folder/name`` for each of ``names``: one folder of a listing in a few C-level calls
        (~3x faster than ``add`` per path, which matters for 1.33M of them)."""
        if not names:
            return
        prefix = os.fsencode(os.path.join(folder, ""))
        encoded = [os.fsencode(name) for name in names]
        self._blob += prefix + prefix.join(encoded)
        ends = accumulate((len(prefix) + len(e) for e in encoded), initial=self._offsets[-1])
        self._offsets.extend(islice(ends, 1, None))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 bytes, int64 offsets of length n + 1); the packer must not be used afterwards."""
        blob = np.frombuffer(self._blob, dtype=np.uint8) if self._blob else np.empty(0, np.uint8)
        return blob, np.frombuffer(self._offsets, dtype=np.int64)


class PackedPaths(Sequence):
    """A read-only sequence of path strings, ``root`` joined to each stored (relative) path; see the module
    docstring. Build one from strings (``PackedPaths(paths)``), from arrays (``from_arrays``), or as a
    row selection of another (``take``)."""

    def __init__(self, paths: Iterable[str] = (), root: str = "") -> None:
        """``paths`` relative to ``root`` (or absolute, with no root)."""
        packer = PathPacker()
        for path in paths:
            packer.add(path)
        blob, offsets = packer.arrays()
        self._set(blob, offsets, root, None)

    @classmethod
    def from_arrays(
        cls, blob: np.ndarray, offsets: np.ndarray, root: str = "", rows: np.ndarray | None = None
    ) -> PackedPaths:
        packed = cls.__new__(cls)
        packed._set(blob, offsets, root, rows)
        return packed

    def _set(self, blob: np.ndarray, offsets: np.ndarray, root: str, rows: np.ndarray | None) -> None:
        self._blob, self._offsets, self.root = blob, offsets, os.fspath(root)
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        # Reads go through memoryviews (Python ints and bytes out of them, no numpy scalar per access):
        # ~2 us a path instead of ~8. They are single objects too: nothing per path for workers to copy.
        self._bytes = memoryview(np.ascontiguousarray(blob, dtype=np.uint8)).cast("B")
        self._ends = memoryview(np.ascontiguousarray(offsets, dtype=np.int64)).cast("B").cast("q")
        self._row_of = None if self._rows is None else memoryview(self._rows).cast("B").cast("q")
        self._n = len(self._rows) if self._rows is not None else len(offsets) - 1
        self._prefix = os.path.join(self.root, "") if self.root else ""

    def __len__(self) -> int:
        return self._n

    def relative(self, index: int) -> str:
        """The stored path (relative to ``root`` when one is set)."""
        if not -self._n <= index < self._n:
            raise IndexError(f"path index {index} out of range for {self._n} paths")
        row = index % self._n if self._row_of is None else self._row_of[index]
        return str(self._bytes[self._ends[row] : self._ends[row + 1]], "utf-8", "surrogateescape")

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        return self._prefix + self.relative(int(index))  # stored paths are relative to root

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(bytes, offsets) of an unselected sequence (what the tree index stores)."""
        if self._rows is not None:
            raise ValueError("a row selection of paths has no arrays of its own; store the full listing")
        return self._blob, self._offsets

    def take(self, rows: Sequence[int] | np.ndarray) -> PackedPaths:
        """The paths at ``rows`` (indices into this sequence), sharing the bytes."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} paths")
        mapped = self._rows[rows] if self._rows is not None else rows
        return PackedPaths.from_arrays(self._blob, self._offsets, self.root, mapped)

    def __reduce__(self):
        # Memory maps do not survive pickling (spawned workers, tests): send plain arrays.
        rows = None if self._rows is None else np.asarray(self._rows)
        return PackedPaths.from_arrays, (np.asarray(self._blob), np.asarray(self._offsets), self.root, rows)
