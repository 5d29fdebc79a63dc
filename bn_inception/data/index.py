"""The tree index: an ImageNet-layout tree listed once, then read by every start and every process.

Why: listing ILSVRC-2012 (1,000 folders, 1.33M files) takes seconds on local disk and minutes on NFS or
Lustre, and 8-64 processes listing it at once is what cluster administrators complain about. The index
holds a :class:`~bn_inception.data.imagenet.TreeListing` (packed relative paths, labels, class lists, and a
stamp of every folder read); a start reads it instead of the tree.

Valid when (checked on every read, one log line and a rebuild when not):

- the file is whole: magic, format version, length and a CRC-32 of everything (a truncated or damaged file
  is "corrupt", never half-trusted);
- it was built for this root and these label settings (``data.root`` resolved, ``val_labels``,
  ``synset_map``);
- the tree has not changed since: every folder it listed has the modification time it had then (adding,
  removing or renaming a file or class folder changes its folder's time; ImageNet's 2,002 folders are
  2,002 ``stat`` calls, ~10 ms warm, instead of 1.33M directory entries), and the label files of a flat
  val/ have their size and time. A folder modified within ``RACY_WINDOW_S`` before the listing began is
  listed again and compared by its names (a change within the filesystem's timestamp resolution may leave
  the time as it was: git's "racily clean" entries).

Who lists: the process that takes ``<index>.lock`` (the project's one lock, ``bn_inception/files.py``:
it works on NFS and is taken over when its holder crashed or died); every other process, on this node or
another that sees the same file, waits for the lock to go and reads the index. So a tree is listed once per
index file: once per node with a node-local cache, once per cluster with a shared one, whatever the number
of processes. Two builders at once (a lost race on taking over a lock) cost a second listing, never a wrong
index: each writes its own temporary file and renames it into place.

Format (one file, replaced atomically): magic, 64-byte aligned numpy arrays, a JSON trailer (classes,
settings, folder names, where each array lies), then 16 bytes: trailer length, CRC-32 of all before it,
end magic. The arrays are memory-mapped on reading, so all processes of a node share one copy of them (the
page cache) and loader workers never copy them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from bn_inception.data.imagenet import (
    DatasetLayoutError,
    FolderStamps,
    ImageFolderSplit,
    TreeListing,
    list_folder,
    list_imagenet_tree,
    names_crc,
)
from bn_inception.data.packed import PackedPaths
from bn_inception.files import LockFile, describe, write_atomically

log = logging.getLogger(__name__)

MAGIC = b"BNIDX\x00\x01\n"
END_MAGIC = b"BNIX"
FORMAT_VERSION = 1
_ALIGN = 64
_FOOTER = struct.Struct("<QI4s")  # trailer length, CRC-32 of everything before the footer, END_MAGIC
RACY_WINDOW_S = 2.0  # NFS servers on older filesystems keep 1 s timestamps; the kernel's clock ticks are ms
POLL_S = 0.2  # how often a process waiting for the builder looks at the lock


class IndexUnusable(Exception):
    """Why an index file cannot be used as it is (the message goes into the one rebuild log line)."""


# ---------------------------------------------------------------------------------------------------------
# Key and location


def index_key(
    root: str | os.PathLike, val_labels: str | os.PathLike | None, synset_map: str | os.PathLike | None
) -> dict[str, str | None]:
    """The settings an index is built for: the resolved root and label files (absolute paths)."""

    def absolute(p):
        return str(Path(p).expanduser().resolve()) if p else None

    return {"root": absolute(root), "val_labels": absolute(val_labels), "synset_map": absolute(synset_map)}


def default_index_path(cache: Path, key: dict[str, str | None]) -> Path:
    """``cache/index/<root folder name>-<hash of the key>.idx``: one file per tree and label settings."""
    import hashlib

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(key["root"] or "root").name) or "root"
    return cache / "index" / f"{name}-{digest}.idx"


# ---------------------------------------------------------------------------------------------------------
# Writing and reading the file


def _listing_arrays(listing: TreeListing) -> dict[str, np.ndarray]:
    arrays = {}
    for name, split in (("train", listing.train), ("val", listing.val)):
        blob, offsets = split.paths.arrays()
        arrays[f"{name}_blob"] = blob
        arrays[f"{name}_offsets"] = offsets
        arrays[f"{name}_labels"] = np.asarray(split.labels, dtype=np.int32)
    stamps = listing.stamps
    arrays["stamp_kinds"] = np.asarray(stamps.kinds, dtype=np.uint8)
    arrays["stamp_mtime_ns"] = np.asarray(stamps.mtime_ns, dtype=np.int64)
    arrays["stamp_counts"] = np.asarray(stamps.counts, dtype=np.int64)
    arrays["stamp_crcs"] = np.asarray(stamps.crcs, dtype=np.int64)
    return arrays


def content_crc(listing: TreeListing) -> int:
    """CRC-32 of what a dataset is made of (paths, labels, classes): equal for identical trees wherever
    they are mounted and whenever they were listed. Ranks compare it."""
    crc = 0
    for split in (listing.train, listing.val):
        blob, offsets = split.paths.arrays()
        for part in (blob, offsets, np.asarray(split.labels, dtype=np.int32)):
            crc = zlib.crc32(memoryview(np.ascontiguousarray(part).view(np.uint8)), crc)
        crc = zlib.crc32(json.dumps(split.classes).encode(), crc)
    return crc


def write_index(path: str | os.PathLike, listing: TreeListing, key: dict[str, Any]) -> int:
    """Write ``listing`` to ``path`` atomically; returns its content CRC."""
    arrays = _listing_arrays(listing)
    content = content_crc(listing)

    def write(f) -> None:
        crc, pos, table = 0, 0, {}

        def put(data) -> None:
            nonlocal crc, pos
            f.write(data)
            crc = zlib.crc32(data, crc)
            pos += len(data)

        put(MAGIC)
        for name, array in arrays.items():
            put(b"\0" * (-pos % _ALIGN))
            table[name] = [pos, array.dtype.str, len(array)]
            put(memoryview(np.ascontiguousarray(array).view(np.uint8)))
        trailer = {
            "version": FORMAT_VERSION,
            "key": key,
            "base": str(listing.base),
            "train_classes": listing.train.classes,
            "val_classes": listing.val.classes,
            "val_layout": listing.val_layout,
            "val_where": listing.val_where,
            "stamp_names": listing.stamps.names,
            "label_files": listing.label_files,
            "listed_at_ns": listing.listed_at_ns,
            "content_crc": content,
            "arrays": table,
        }
        data = json.dumps(trailer, ensure_ascii=False).encode("utf-8", "surrogateescape")
        put(data)
        f.write(_FOOTER.pack(len(data), crc, END_MAGIC))

    write_atomically(path, write)
    return content


def _file_crc(f, length: int) -> int:
    f.seek(0)
    crc, left = 0, length
    while left:
        chunk = f.read(min(left, 1 << 22))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    return crc


def _read_trailer(f, size: int, check_crc: bool) -> dict[str, Any]:
    if size < len(MAGIC) + _FOOTER.size or f.read(len(MAGIC)) != MAGIC:
        raise IndexUnusable("corrupt (not an index file, or cut short)")
    f.seek(size - _FOOTER.size)
    length, crc, end = _FOOTER.unpack(f.read(_FOOTER.size))
    if end != END_MAGIC or length > size - _FOOTER.size - len(MAGIC):
        raise IndexUnusable("corrupt (cut short)")
    if check_crc and _file_crc(f, size - _FOOTER.size) != crc:
        raise IndexUnusable("corrupt (checksum mismatch)")
    f.seek(size - _FOOTER.size - length)
    return json.loads(f.read(length).decode("utf-8", "surrogateescape"))


def read_index(path: str | os.PathLike, check_crc: bool = True) -> tuple[dict[str, Any], TreeListing]:
    """(trailer, listing) of an index file, arrays memory-mapped; IndexUnusable says why not."""
    path = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            trailer = _read_trailer(f, size, check_crc)
    except FileNotFoundError as e:
        raise IndexUnusable("missing") from e
    except (OSError, ValueError) as e:
        raise IndexUnusable(f"unreadable ({e})") from e
    if trailer.get("version") != FORMAT_VERSION:
        raise IndexUnusable(f"from another format version ({trailer.get('version')} != {FORMAT_VERSION})")
    return trailer, _listing_from_file(path, trailer)


def prune_orphans(folder: Path, keep: Path) -> None:
    """Delete the index files in ``folder`` whose tree is gone (a deleted test tree, a moved dataset), so a
    shared cache folder does not grow without bound. Reads only their trailers."""
    for other in folder.glob("*.idx"):
        if other == keep:
            continue
        try:
            with open(other, "rb") as f:
                root = _read_trailer(f, os.fstat(f.fileno()).st_size, check_crc=False)["key"]["root"]
        except (OSError, ValueError, KeyError, TypeError, IndexUnusable):
            continue  # not ours to judge
        if root and not os.path.exists(root):
            with contextlib.suppress(OSError):
                other.unlink()


def _map(path: str, entry: list) -> np.ndarray:
    offset, dtype, count = entry
    if not count:
        return np.empty(0, dtype=dtype)
    # A plain ndarray view of the map (the map stays open through .base): indexing a memmap subclass
    # costs ~2 us more per path read.
    return np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=(count,)).view(np.ndarray)


def _listing_from_file(path: str, trailer: dict[str, Any]) -> TreeListing:
    arrays = {name: _map(path, entry) for name, entry in trailer["arrays"].items()}
    base = Path(trailer["base"])

    def split(name: str) -> ImageFolderSplit:
        paths = PackedPaths.from_arrays(arrays[f"{name}_blob"], arrays[f"{name}_offsets"], str(base))
        return ImageFolderSplit(paths, arrays[f"{name}_labels"], list(trailer[f"{name}_classes"]))

    stamps = FolderStamps(
        list(trailer["stamp_names"]),
        arrays["stamp_kinds"].tolist(),
        arrays["stamp_mtime_ns"].tolist(),
        arrays["stamp_counts"].tolist(),
        arrays["stamp_crcs"].tolist(),
    )
    return TreeListing(
        base,
        split("train"),
        split("val"),
        trailer["val_layout"],
        trailer["val_where"],
        stamps,
        [tuple(x) for x in trailer["label_files"]],
        int(trailer["listed_at_ns"]),
        int(trailer["content_crc"]),
    )


# ---------------------------------------------------------------------------------------------------------
# Is it still the tree?


def stale_reason(listing: TreeListing) -> str | None:
    """Why ``listing`` no longer describes its tree, or None when it still does (see the module docstring)."""
    stamps = listing.stamps
    racy_from = listing.listed_at_ns - int(RACY_WINDOW_S * 1e9)
    for rel, kind, mtime, count, crc in zip(
        stamps.names, stamps.kinds, stamps.mtime_ns, stamps.counts, stamps.crcs, strict=True
    ):
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
    """The listing in ``path`` if it is whole, built for ``key`` and still true of the tree."""
    trailer, listing = read_index(path)
    if trailer["key"] != key:
        raise IndexUnusable(f"built for other settings ({trailer['key']})")
    reason = stale_reason(listing)
    if reason:
        raise IndexUnusable(reason)
    return listing


# ---------------------------------------------------------------------------------------------------------
# The entry point


def load_tree_index(
    root: str | os.PathLike,
    val_labels: str | os.PathLike | None,
    synset_map: str | os.PathLike | None,
    path: str | os.PathLike,
    prune: bool = False,
) -> TreeListing:
    """The listing of the tree at ``root``, from the index at ``path``; listed (once, by one process) and
    written there when the index is missing, stale or corrupt, with one log line saying which. ``prune``:
    after writing, delete the other index files in its folder whose trees are gone (a cache folder)."""
    key = index_key(root, val_labels, synset_map)
    path = Path(path).expanduser()
    listed = [Path(key["root"]) / split for split in ("train", "val")] if key["root"] else []
    if path.is_dir() or any(path.resolve().is_relative_to(folder) for folder in listed):  # a typo'd path
        where = "a folder" if path.is_dir() else "inside the train/ or val/ folders it indexes"
        raise DatasetLayoutError(f"data.index={path} is {where}; give a file path outside them")
    try:
        return open_valid_index(path, key)
    except IndexUnusable as e:
        reason = str(e)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetLayoutError(
            f"cannot create the folder {path.parent} for the tree index: {e.strerror or e}; set data.index "
            "to a file in a folder you can write"
        ) from e
    lock = LockFile(f"{path}.lock")
    told = False
    try:
        while (holder := lock.try_acquire()) is not None:  # another process lists the tree: wait, then read
            if not told:
                log.info("waiting for %s to finish listing the tree into %s", describe(holder), path)
                told = True
            time.sleep(POLL_S)
    except OSError as e:
        raise DatasetLayoutError(
            f"cannot create {lock.path} for the tree index: {e.strerror or e}; set data.index to a file in a "
            "folder you can write"
        ) from e
    try:
        try:
            return open_valid_index(path, key)  # built by the process we waited for
        except IndexUnusable as e:
            reason = str(e)
        _log_rebuild(path, reason, key["root"])
        started = time.perf_counter()
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
        took = time.perf_counter() - started
        log.debug("indexed %d images in %.1f s", len(listing.train) + len(listing.val), took)
    finally:
        lock.release()
    del listing  # read it back mapped: its pages are then shared with every other process
    return read_index(path)[1]


def _log_rebuild(path: Path, reason: str, root: str | None) -> None:
    if reason == "missing":
        log.info("no tree index of %s at %s yet: listing the tree once", root, path)
    else:
        log.warning("tree index %s is %s: listing %s again", path, reason, root)


def check_ranks_agree(listing: TreeListing, index_path: str | os.PathLike) -> None:
    """With torch.distributed initialised, every rank must hold the same dataset (sample i is the same
    file everywhere, or the ranks' shards overlap and miss): compare the listings' content CRCs. Every
    rank must call this (it is a collective)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    mine = (listing.content_crc, len(listing.train), len(listing.val), socket.gethostname(), str(index_path))
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    for rank, theirs in enumerate(everyone):
        if theirs[0] != everyone[0][0]:
            raise DatasetLayoutError(
                f"ranks disagree on the tree at {listing.base}: rank 0 on {everyone[0][3]} has "
                f"{everyone[0][1]} train / {everyone[0][2]} val images (index {everyone[0][4]}), rank {rank} "
                f"on {theirs[3]} has {theirs[1]} / {theirs[2]} (index {theirs[4]}); every process must see "
                "the same files under data.root"
            )
