"""The tree index: an ImageNet-layout tree listed once (seconds locally, minutes on NFS, and 8-64 processes
listing at once is what cluster administrators complain about), then read by every start and process.

Used only if whole (a CRC-32), built for this root and label settings, and every listed folder keeps its
mtime (2,002 ``stat`` calls, not 1.33M entries) and a flat val/'s label files their size and time; a
folder modified within ``RACY_WINDOW_S`` before the listing is compared by its names (git's "racily
clean"). Else one log line says why and the holder of ``<index>.lock`` (files.LockFile: NFS-safe, taken
over from a crashed holder) lists again while the others wait. Format: consecutive ``.npy`` records (JSON
metadata, six arrays, the CRC), memory-mapped on reading so a node's processes share the page cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bn_inception.data.imagenet import (
    DatasetLayoutError,
    ImageFolderSplit,
    TreeListing,
    list_folder,
    list_imagenet_tree,
    names_crc,
)
from bn_inception.data.packed import PackedPaths
from bn_inception.files import LockFile, describe, write_atomically

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
RACY_WINDOW_S = 2.0  # NFS servers on older filesystems keep 1 s timestamps
POLL_S = 0.2  # how often a process waiting for the builder looks at the lock
_ARRAYS = [f"{split}_{part}" for split in ("train", "val") for part in ("blob", "offsets", "labels")]


class IndexUnusable(Exception):
    """Why an index file cannot be used (the message goes into the one rebuild log line)."""


def index_key(root, val_labels, synset_map) -> dict[str, str | None]:
    return {
        k: str(Path(p).expanduser().resolve()) if p else None
        for k, p in (("root", root), ("val_labels", val_labels), ("synset_map", synset_map))
    }


def default_index_path(cache: Path, key: dict[str, str | None]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(key["root"] or "root").name) or "root"
    return cache / "index" / f"{name}-{digest}.idx"


def _crc(arrays: list[np.ndarray], crc: int = 0) -> int:
    for array in arrays:
        crc = zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"), crc)
    return crc


def content_crc(listing: TreeListing) -> int:
    splits = (listing.train, listing.val)
    arrays = [a for s in splits for a in (s.paths.blob, s.paths.offsets, np.asarray(s.labels, np.int32))]
    return _crc(arrays, zlib.crc32(json.dumps([s.classes for s in splits]).encode()))


def write_index(path: str | os.PathLike, listing: TreeListing, key: dict[str, Any]) -> None:
    meta = {
        "version": FORMAT_VERSION,
        "key": key,
        "base": str(listing.base),
        "classes": [listing.train.classes, listing.val.classes],
        "val_layout": listing.val_layout,
        "val_where": listing.val_where,
        "stamps": listing.stamps,
        "label_files": listing.label_files,
        "listed_at_ns": listing.listed_at_ns,
    }
    head = np.frombuffer(json.dumps(meta).encode("utf-8", "surrogateescape"), dtype=np.uint8)
    arrays = [head]
    for split in (listing.train, listing.val):
        arrays += [split.paths.blob, split.paths.offsets, np.asarray(split.labels, dtype=np.int32)]

    def write(f) -> None:
        for array in [*arrays, np.array([_crc(arrays)], dtype=np.uint32)]:
            np.save(f, array)

    write_atomically(path, write)


def _next_array(f, path: str, regions: list[tuple[int, int]]) -> np.ndarray:
    # Memory-mapped, as a plain ndarray view: indexing a memmap costs more. Its bytes' place goes to regions.
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    offset, count = f.tell(), int(np.prod(shape))
    f.seek(offset + count * dtype.itemsize)
    regions.append((offset, count * dtype.itemsize))
    if not count:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape).view(np.ndarray)


def _file_crc(f, regions: list[tuple[int, int]]) -> int:
    """``_crc`` of the arrays, read through the file rather than their maps: touching every mapped page would
    put the whole index in each process's resident memory; reads leave it in the node's shared page cache."""
    crc = 0
    for offset, size in regions:
        f.seek(offset)
        while size > 0:
            chunk = f.read(min(size, 1 << 20))
            if not chunk:
                raise EOFError("index cut short")
            crc, size = zlib.crc32(chunk, crc), size - len(chunk)
    return crc


def _read_meta(f) -> dict[str, Any]:
    meta = json.loads(np.load(f).tobytes().decode("utf-8", "surrogateescape"))
    if meta.get("version") != FORMAT_VERSION:
        raise IndexUnusable(f"from another format version ({meta.get('version')} != {FORMAT_VERSION})")
    return meta


def read_index(path: str | os.PathLike) -> tuple[dict[str, Any], TreeListing]:
    path = str(path)
    try:
        with open(path, "rb") as f:
            meta = _read_meta(f)
            f.seek(0)
            regions: list[tuple[int, int]] = []
            arrays = [_next_array(f, path, regions) for _ in range(len(_ARRAYS) + 1)]
            stored = _next_array(f, path, [])
            crc = _file_crc(f, regions)
    except FileNotFoundError as e:
        raise IndexUnusable("missing") from e
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise IndexUnusable("corrupt, cut short or from an older version") from e
    if stored.shape != (1,) or crc != int(stored[0]):
        raise IndexUnusable("corrupt (checksum mismatch)")
    base = str(meta["base"])
    train, val = (
        ImageFolderSplit(PackedPaths(arrays[k + 1], arrays[k + 2], base), arrays[k + 3], list(classes))
        for k, classes in zip((0, 3), meta["classes"], strict=True)
    )
    listing = TreeListing(
        Path(base), train, val, meta["val_layout"], meta["val_where"], meta["stamps"], meta["label_files"],
        meta["listed_at_ns"],
    )  # fmt: skip
    return meta, listing


def prune_orphans(folder: Path, keep: Path) -> None:
    """Delete the index files in ``folder`` whose tree is gone, so a cache folder does not grow unbounded."""
    for other in folder.glob("*.idx"):
        try:
            with open(other, "rb") as f:
                root = _read_meta(f)["key"]["root"]
        except (OSError, EOFError, ValueError, KeyError, TypeError, IndexUnusable):
            continue  # not ours to judge
        if other != keep and root and not os.path.exists(root):
            with contextlib.suppress(OSError):
                other.unlink()


def stale_reason(listing: TreeListing) -> str | None:
    racy_from = listing.listed_at_ns - int(RACY_WINDOW_S * 1e9)
    for rel, kind, mtime, count, crc in listing.stamps:
        path = os.path.join(listing.base, rel)
        try:
            now = os.stat(path).st_mtime_ns
        except OSError:
            return f"stale ({rel}/ is gone)"
        if now != mtime:
            return f"stale ({rel}/ changed since it was indexed)"
        if now >= racy_from:  # modified just before the listing: the time alone cannot be trusted
            try:
                names = list_folder(path, kind)
            except DatasetLayoutError:
                return f"stale ({rel}/ can no longer be listed)"
            if len(names) != count or names_crc(names) != crc:
                return f"stale ({rel}/ changed since it was indexed)"
    for file, mtime, size in listing.label_files:
        try:
            st = os.stat(file)
        except OSError:
            return f"stale ({file} is gone)"
        if (st.st_mtime_ns, st.st_size) != (mtime, size):
            return f"stale ({file} changed since it was indexed)"
    return None


def open_valid_index(path: str | os.PathLike, key: dict[str, Any]) -> TreeListing:
    meta, listing = read_index(path)
    if meta["key"] != key:
        raise IndexUnusable(f"built for other settings ({meta['key']})")
    if reason := stale_reason(listing):
        raise IndexUnusable(reason)
    return listing


def _lock(path: Path) -> LockFile:
    lock = LockFile(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if (holder := lock.try_acquire()) is not None:
            log.info("waiting for %s to finish listing the tree into %s", describe(holder), path)
            while lock.try_acquire() is not None:
                time.sleep(POLL_S)
    except OSError as e:
        raise DatasetLayoutError(
            f"cannot create the folder {path.parent} for the tree index: {e.strerror or e}; set data.index "
            "to a file in a folder you can write"
        ) from e
    return lock


def load_tree_index(
    root, val_labels, synset_map, path: str | os.PathLike, prune: bool = False
) -> TreeListing:
    """The listing of ``root`` from the index at ``path``, (re)built by one process when unusable;
    ``prune``: then delete the folder's index files whose trees are gone."""
    key = index_key(root, val_labels, synset_map)
    path = Path(path).expanduser()
    listed = [Path(key["root"]) / split for split in ("train", "val")]
    if path.is_dir() or any(path.resolve().is_relative_to(folder) for folder in listed):  # a typo'd path
        where = "a folder" if path.is_dir() else "inside the train/ or val/ folders it indexes"
        raise DatasetLayoutError(f"data.index={path} is {where}; give a file path outside them")
    with contextlib.suppress(IndexUnusable):
        return open_valid_index(path, key)
    lock = _lock(path)
    try:
        try:
            return open_valid_index(path, key)  # built by the process we waited for
        except IndexUnusable as e:
            if str(e) == "missing":
                log.info("no tree index of %s at %s yet: listing the tree once", key["root"], path)
            else:
                log.warning("tree index %s is %s: listing %s again", path, e, key["root"])
        listing = list_imagenet_tree(root, val_labels, synset_map)
        try:
            write_index(path, listing, key)
        except OSError as e:  # a full disk or quota: the folder was writable, the data did not fit
            raise DatasetLayoutError(
                f"cannot write the tree index {path}: {e.strerror or e}; free disk space there, or set "
                "data.index to a file on another disk"
            ) from e
        if prune:
            prune_orphans(path.parent, path)
    finally:
        lock.release()
    del listing  # read it back mapped: its pages are then shared with every other process
    return read_index(path)[1]


def check_ranks_agree(listing: TreeListing, index_path: str | os.PathLike) -> None:
    """A collective: every rank must hold the same dataset, or the ranks' shards overlap and miss."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    mine = (content_crc(listing), len(listing.train), len(listing.val), socket.gethostname(), str(index_path))
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    first = everyone[0]
    for rank, theirs in enumerate(everyone):
        if theirs[0] != first[0]:
            raise DatasetLayoutError(
                f"ranks disagree on the tree at {listing.base}: rank 0 on {first[3]} has {first[1]} train / "
                f"{first[2]} val images (index {first[4]}), rank {rank} on {theirs[3]} has {theirs[1]} / "
                f"{theirs[2]} (index {theirs[4]}); every process must see the same files under data.root"
            )
