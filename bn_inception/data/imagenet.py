"""ILSVRC-2012 on disk: ``root`` (or Kaggle's ``root/ILSVRC/Data/CLS-LOC``) holds ``train/<wnid>/`` (label =
sorted wnid position, as torchvision/timm) and ``val/``, sorted into ``<wnid>/`` or flat with Kaggle's
``LOC_val_solution.csv`` or the devkit's ground truth (ILSVRC2012_IDs) plus an ID -> wnid map: ``meta.mat``
or a text map (wnid and ID per line, either order, as ILSVRC2014's ``map_clsloc.txt``; or wnids in ID order).
Label files not given are looked for in root, root/val, root's parent and the devkit folders below them.
:func:`list_imagenet_tree` lists into packed paths, stamping each folder for the tree index.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import re
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bn_inception.data.decode import IMAGE_EXTENSIONS
from bn_inception.data.packed import PackedPaths, concat, pack

log = logging.getLogger(__name__)

WNID_RE = re.compile(r"^n\d{8}$")
KAGGLE_VAL_CSV = "LOC_val_solution.csv"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
SYNSET_MAP_NAMES = ("meta.mat", "map_clsloc.txt", "synset_map.txt")
_LABEL_DIRS = ("", "val", "ILSVRC2012_devkit_t12/data", "devkit/data", "ILSVRC2012_devkit_t12", "devkit")
LISTS_FOLDERS, LISTS_IMAGES = 0, 1  # what a folder of the listing holds (a stamp's kind)


class DatasetLayoutError(ValueError):
    """The files on disk are not in a layout we can read; the message says what was found and expected."""


@dataclass
class ImageFolderSplit:
    paths: PackedPaths
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _preview(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _unreadable(path: str, e: OSError) -> DatasetLayoutError:
    why = f"cannot list folder {path}: {e.strerror or e}"
    if e.errno in (errno.EACCES, errno.EPERM):
        why = f"cannot read folder {path}: permission denied; give the user running this read and execute "
        why += f"access to it (e.g. chmod -R a+rX {path})"
    elif e.errno == errno.ELOOP:
        why = f"{path} is a symbolic link loop (following it leads back to itself); point the link at a real "
        why += "folder or remove it"
    elif e.errno == errno.ENOENT and os.path.islink(path):
        why = (
            f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; fix or remove the link"
        )
    return DatasetLayoutError(why)


def _entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        raise _unreadable(folder, e) from e


def _kind(entry: os.DirEntry) -> str:
    """'dir', 'file' or 'other'; a symbolic link that leads nowhere (a loop, a missing target) raises."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
        if entry.is_symlink():  # is_dir/is_file say False for a dangling link: say why instead
            os.stat(entry.path)
    except OSError as e:
        raise _unreadable(entry.path, e) from e
    return "other"


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_images(folder: str) -> list[str]:
    return sorted(e.name for e in _entries(folder) if is_image_name(e.name) and _kind(e) == "file")


def list_subdirs(folder: str) -> list[str]:
    return sorted(e.name for e in _entries(folder) if not e.name.startswith(".") and _kind(e) == "dir")


def resolve_imagenet_root(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(
            f"ImageNet root {root} does not exist; expected a folder with train/<wnid>/ and val/ "
            "(set data.root)"
        )
    for candidate in (root, root / "ILSVRC" / "Data" / "CLS-LOC"):
        if (candidate / "train").is_dir():
            return candidate
    found = _preview(list_subdirs(str(root))) or "nothing"
    raise DatasetLayoutError(
        f"no train/ folder in ImageNet root {root} (found: {found}); expected train/ and val/"
    )


@dataclass
class TreeListing:
    """A tree as listed, no dataset's checks applied; paths relative to ``base``. ``stamps``: every folder
    read as [relative path, kind, mtime taken before reading, number and CRC-32 of the names]."""

    base: Path
    train: ImageFolderSplit
    val: ImageFolderSplit
    val_layout: str  # sorted | flat
    val_where: str  # how messages name the val classes' source
    stamps: list[list] = field(default_factory=list)
    label_files: list[list] = field(default_factory=list)  # flat val: [path, mtime_ns, size] of each read
    listed_at_ns: int = 0  # wall-clock time the listing began


def names_crc(names: Sequence[str]) -> int:
    return zlib.crc32(os.fsencode("".join(name + "\n" for name in names)))


def list_folder(path: str, kind: int) -> list[str]:
    return list_subdirs(path) if kind == LISTS_FOLDERS else list_images(path)


def _stamped_listing(base: Path, rel: str, kind: int, stamps: list[list]) -> list[str]:
    path = str(base / rel)
    try:
        mtime = os.stat(path).st_mtime_ns  # before listing: a change made meanwhile makes the stamp stale
    except OSError as e:
        raise _unreadable(path, e) from e
    names = list_folder(path, kind)
    stamps.append([rel, kind, mtime, len(names), names_crc(names)])
    return names


def _list_class_folders(base: Path, split: str, stamps: list[list]) -> ImageFolderSplit:
    classes = _stamped_listing(base, split, LISTS_FOLDERS, stamps)
    parts, counts = [], []
    for wnid in classes:
        names = _stamped_listing(base, os.path.join(split, wnid), LISTS_IMAGES, stamps)
        parts.append(pack(os.path.join(split, wnid, name) for name in names))
        counts.append(len(names))
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), counts)
    return ImageFolderSplit(PackedPaths(*concat(parts), str(base)), labels, classes)


def _list_flat_val(base: Path, search_roots: Sequence[Path], val_labels, synset_map, stamps: list[list]):
    val_dir = base / "val"
    names = _stamped_listing(base, "val", LISTS_IMAGES, stamps)
    if not names:
        raise DatasetLayoutError(f"{val_dir} holds neither class folders nor images")
    stem_to_wnid, used = load_flat_val_labels(search_roots, val_labels, synset_map)
    stems = [os.path.splitext(n)[0] for n in names]
    unlabelled = [n for n, s in zip(names, stems, strict=True) if s not in stem_to_wnid]
    if unlabelled:
        raise DatasetLayoutError(
            f"{len(unlabelled)} of {len(names)} images in {val_dir} have no label in {used[0]}: "
            f"{_preview(unlabelled)}"
        )
    classes = sorted({stem_to_wnid[s] for s in stems})
    index = {c: i for i, c in enumerate(classes)}
    split = ImageFolderSplit(
        PackedPaths.of((os.path.join("val", n) for n in names), str(base)),
        np.array([index[stem_to_wnid[s]] for s in stems], dtype=np.int32),
        classes,
    )
    if len(stem_to_wnid) > len(names):
        log.info("%s labels %d images that are not in %s", used[0], len(stem_to_wnid) - len(names), val_dir)
    files = [[str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size] for p in used]
    return split, f"{val_dir} (labels {used[0].name})", files


def list_imagenet_tree(
    root: str | os.PathLike,
    val_labels: str | os.PathLike | None = None,
    synset_map: str | os.PathLike | None = None,
) -> TreeListing:
    started = time.time_ns()
    given_root = Path(root).expanduser()
    base = resolve_imagenet_root(given_root)
    stamps: list[list] = []
    train = _list_class_folders(base, "train", stamps)
    val_dir = base / "val"
    if not val_dir.is_dir():
        raise DatasetLayoutError(
            f"no val/ folder next to {base / 'train'}; expected val/<wnid>/ or a flat val/"
        )
    if list_subdirs(str(val_dir)):
        val = _list_class_folders(base, "val", stamps)
        return TreeListing(base, train, val, "sorted", str(val_dir), stamps, [], started)
    roots = list(dict.fromkeys([given_root, base, given_root.parent]))
    val, where, files = _list_flat_val(base, roots, val_labels, synset_map, stamps)
    return TreeListing(base, train, val, "flat", where, stamps, files, started)


def _check_same_classes(train_classes: Sequence[str], val_classes: Iterable[str], where: str) -> None:
    train_set, val_set = set(train_classes), set(val_classes)
    if train_set == val_set:
        return
    missing, extra = sorted(train_set - val_set), sorted(val_set - train_set)
    parts = [f"{where} has {len(val_set)} classes but train/ has {len(train_set)}"]
    if missing:
        parts.append(f"missing from val: {_preview(missing)}")
    if extra:
        parts.append(f"not in train: {_preview(extra)}")
    raise DatasetLayoutError("; ".join(parts) + "; val and train must have the same classes")


def _check_requested(available: Sequence[str], chosen: Sequence[str], folder: Path) -> None:
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} requested class folder(s) missing in {folder}: {_preview(missing)}"
        )


def _check_not_empty(split: ImageFolderSplit, chosen: Sequence[str], folder: Path, what: str) -> None:
    counts = np.bincount(split.labels, minlength=len(split.classes))
    position = {c: i for i, c in enumerate(split.classes)}
    empty = [c for c in chosen if counts[position[c]] == 0]
    if empty:
        raise DatasetLayoutError(
            f"{len(empty)} {what} class folder(s) in {folder} hold no images: {_preview(empty)}; "
            f"every class needs at least one image ({', '.join(IMAGE_EXTENSIONS)})"
        )


def relabel(split: ImageFolderSplit, chosen: Sequence[str]) -> ImageFolderSplit:
    position = {c: i for i, c in enumerate(chosen)}
    mapping = np.array([position.get(c, -1) for c in split.classes] or [-1], dtype=np.int64)
    labels = mapping[np.asarray(split.labels)] if len(split) else np.zeros(0, dtype=np.int64)
    if len(labels) and labels.min() >= 0:
        return ImageFolderSplit(split.paths, labels, list(chosen))
    rows = np.flatnonzero(labels >= 0)
    return ImageFolderSplit(split.paths.take(rows), labels[rows], list(chosen))


def select_classes(
    listing: TreeListing, classes: Sequence[str] | None = None
) -> tuple[ImageFolderSplit, ImageFolderSplit]:
    """Train and val splits labelled by sorted wnid, checked; ``classes``: only those (present, non-empty)."""
    train_dir, val_dir = listing.base / "train", listing.base / "val"
    if not listing.train.classes:
        raise DatasetLayoutError(
            f"found no class folders in {train_dir}; expected one folder per class named by WordNet id "
            "(e.g. n01440764/)"
        )
    if classes is not None:
        _check_requested(listing.train.classes, classes, train_dir)
    chosen = sorted(classes) if classes is not None else list(listing.train.classes)
    _check_not_empty(listing.train, chosen, train_dir, "train")
    if classes is None:
        _check_same_classes(chosen, listing.val.classes, listing.val_where)
    if listing.val_layout == "sorted":
        _check_requested(listing.val.classes, chosen, val_dir)
        _check_not_empty(listing.val, chosen, val_dir, "val")
    return relabel(listing.train, chosen), relabel(listing.val, chosen)


def scan_imagenet(
    root: str | os.PathLike,
    val_labels: str | os.PathLike | None = None,
    synset_map: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[ImageFolderSplit, ImageFolderSplit]:
    return select_classes(list_imagenet_tree(root, val_labels, synset_map), classes)


def find_label_file(roots: Iterable[Path], names: Sequence[str]) -> Path | None:
    for root in roots:
        for sub in _LABEL_DIRS:
            for name in names:
                candidate = root / sub / name
                if candidate.is_file():
                    return candidate
    return None


def read_kaggle_val_labels(path: Path) -> dict[str, str]:
    """{image stem: wnid} from Kaggle's LOC_val_solution.csv (ImageId, "wnid x y x y [wnid ...]")."""
    labels: dict[str, str] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                labels[row["ImageId"].strip()] = row["PredictionString"].split()[0]
            except (KeyError, IndexError, AttributeError) as e:
                raise DatasetLayoutError(
                    f"{path} is not Kaggle's LOC_val_solution.csv: expected columns ImageId,PredictionString "
                    f"with a wnid first in PredictionString, got row {row}"
                ) from e
    return labels


def read_synset_map(path: Path) -> dict[int, str]:
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat  # the devkit's meta.mat is the one MATLAB file we read

        try:
            synsets = loadmat(path, squeeze_me=True)["synsets"]
            fields = zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"], strict=True)
        except (KeyError, ValueError, TypeError, NotImplementedError) as e:
            raise DatasetLayoutError(
                f"{path} has no 'synsets' struct array ({e}); is it the ILSVRC2012 devkit's meta.mat? A text "
                "map (wnid and ILSVRC2012_ID per line) works too"
            ) from e
        return {int(i): str(w).strip() for i, w, children in fields if int(children) == 0}  # the leaves
    mapping = {}
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    for line_no, tokens in enumerate(lines, start=1):
        wnids = [t for t in tokens if WNID_RE.match(t)]
        numbers = [t for t in tokens if t.isdigit()]
        if not wnids:
            raise DatasetLayoutError(
                f"{path} line {line_no} has no WordNet id (n########): {' '.join(tokens)}"
            )
        mapping[int(numbers[0]) if numbers else line_no] = wnids[0]
    return mapping


def read_devkit_val_labels(ground_truth: Path, synset_map: Path) -> dict[str, str]:
    id_to_wnid = read_synset_map(synset_map)
    labels = {}
    for i, line in enumerate(Path(ground_truth).read_text().split(), start=1):
        ident = int(line)
        if ident not in id_to_wnid:
            raise DatasetLayoutError(
                f"{ground_truth} line {i} has ILSVRC2012_ID {ident}, which {synset_map} does not map "
                f"(it maps {len(id_to_wnid)} ids)"
            )
        labels[f"ILSVRC2012_val_{i:08d}"] = id_to_wnid[ident]
    return labels


def load_flat_val_labels(
    search_roots: Sequence[Path], val_labels: str | os.PathLike | None, synset_map: str | os.PathLike | None
) -> tuple[dict[str, str], list[Path]]:
    """{image stem: wnid} of a flat val/, and the files read (label file, then map)."""
    label_path = (
        Path(val_labels).expanduser()
        if val_labels
        else find_label_file(search_roots, (KAGGLE_VAL_CSV, DEVKIT_GROUND_TRUTH))
    )
    where = ", ".join(str(r) for r in search_roots)
    if label_path is None:
        raise DatasetLayoutError(
            f"val/ is flat but no label file was found near {where}; give data.val_labels = "
            f"{KAGGLE_VAL_CSV} (Kaggle) or {DEVKIT_GROUND_TRUTH} (devkit), or sort val/ into class folders "
            "with scripts/prepare_imagenet.py"
        )
    if not label_path.is_file():
        raise DatasetLayoutError(f"val label file {label_path} does not exist")
    if label_path.suffix.lower() == ".csv":
        return read_kaggle_val_labels(label_path), [label_path]
    map_path = (
        Path(synset_map).expanduser()
        if synset_map
        else find_label_file([label_path.parent, *search_roots], SYNSET_MAP_NAMES)
    )
    if map_path is None or not map_path.is_file():
        raise DatasetLayoutError(
            f"{label_path.name} holds ILSVRC2012_IDs, which need the devkit's meta.mat or a text map "
            f"(wnid and ID per line) to become WordNet ids; none found near {label_path.parent} or {where}; "
            "set data.synset_map"
        )
    return read_devkit_val_labels(label_path, map_path), [label_path, map_path]
