"""ILSVRC-2012 on disk: class folders, validation labels in the layouts users actually have, subsets.

Accepted layouts (``root`` is the folder holding ``train/`` and ``val/``; Kaggle's download, where they sit
in ``ILSVRC/Data/CLS-LOC/``, is found from its top folder too):

- ``train/<wnid>/*.JPEG``; class index = position of the WordNet id in sorted order (torchvision/timm).
- ``val/<wnid>/*.JPEG`` (sorted, e.g. by ``scripts/prepare_imagenet.py`` or soumith's valprep.sh), or
- ``val/*.JPEG`` flat, labelled by either
  * Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token is the wnid), or
  * the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (ILSVRC2012_ID 1..1000, one per image in file
    order) plus the ID -> wnid map: the devkit's ``meta.mat`` (read without scipy, see matfile.py), or a
    text file with one line per class holding the wnid and its ILSVRC2012_ID in either order, extra words
    ignored (the ILSVRC2014+ devkit's ``map_clsloc.txt`` is such a file), or one wnid per line in ID order.
    ``scripts/prepare_imagenet.py --export-synset-map`` writes that text file from meta.mat.

Label files are looked for (when not given) in root, root/val, root's parent, and the devkit folders
``ILSVRC2012_devkit_t12/data`` and ``devkit/data`` below them.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bn_inception.data.decode import IMAGE_EXTENSIONS
from bn_inception.data.matfile import read_mat

log = logging.getLogger(__name__)

WNID_RE = re.compile(r"^n\d{8}$")
KAGGLE_VAL_CSV = "LOC_val_solution.csv"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
SYNSET_MAP_NAMES = ("meta.mat", "map_clsloc.txt", "synset_map.txt")
_LABEL_DIRS = ("", "val", "ILSVRC2012_devkit_t12/data", "devkit/data", "ILSVRC2012_devkit_t12", "devkit")
IMAGENET100_FILE = "imagenet100.txt"


class DatasetLayoutError(ValueError):
    """The files on disk are not in a layout we can read; the message says what was found and expected."""


@dataclass
class ImageFolderSplit:
    """A split as plain data: file paths, integer labels, and the class names (wnids) in label order."""

    paths: list[str]
    labels: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _preview(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_images(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and is_image_name(e.name))


def list_subdirs(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def resolve_imagenet_root(root: str | os.PathLike) -> Path:
    """The folder holding train/ and val/: ``root`` itself or Kaggle's ``root/ILSVRC/Data/CLS-LOC``."""
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


def scan_class_folders(
    folder: Path, classes: Sequence[str] | None = None, what: str = "train"
) -> dict[str, list[str]]:
    """{class name: sorted image file names} for the class subfolders of ``folder``.

    ``classes`` restricts the scan to those folders (subsets never list the other 900 classes).
    """
    present = list_subdirs(str(folder))
    if not present:
        raise DatasetLayoutError(
            f"found no class folders in {folder}; expected one folder per class named by WordNet id "
            "(e.g. n01440764/)"
        )
    if classes is not None:
        missing = sorted(set(classes) - set(present))
        if missing:
            raise DatasetLayoutError(
                f"{len(missing)} requested class folder(s) missing in {folder}: {_preview(missing)}"
            )
        present = sorted(classes)
    files = {c: list_images(str(folder / c)) for c in present}
    empty = [c for c, names in files.items() if not names]
    if empty:
        raise DatasetLayoutError(
            f"{len(empty)} {what} class folder(s) in {folder} hold no images: {_preview(empty)}; "
            f"every class needs at least one image ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


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
    """{ILSVRC2012_ID: wnid} from the devkit's meta.mat or a text map (see the module docstring)."""
    if path.suffix.lower() == ".mat":
        synsets = read_mat(path).get("synsets")
        if not isinstance(synsets, list):
            raise DatasetLayoutError(
                f"{path} has no 'synsets' struct array; is it the ILSVRC2012 devkit's meta.mat?"
            )
        mapping = {}
        for record in synsets:
            ident = int(np.asarray(record["ILSVRC2012_ID"]).ravel()[0])
            if int(np.asarray(record["num_children"]).ravel()[0]) == 0:  # leaves are the 1000 classes
                mapping[ident] = str(record["WNID"]).strip()
        return mapping
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
    """{image stem: wnid} from ILSVRC2012_validation_ground_truth.txt (line i = ILSVRC2012_val_000000i)."""
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
) -> tuple[dict[str, str], Path]:
    """{image stem: wnid} for a flat val folder, from the given or auto-detected label file."""
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
        return read_kaggle_val_labels(label_path), label_path
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
    return read_devkit_val_labels(label_path, map_path), label_path


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


def scan_imagenet(
    root: str | os.PathLike,
    val_labels: str | os.PathLike | None = None,
    synset_map: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[ImageFolderSplit, ImageFolderSplit]:
    """Train and val splits of an ImageNet-layout tree; ``classes`` restricts both to those wnids."""
    given_root = Path(root).expanduser()
    base = resolve_imagenet_root(given_root)
    train_files = scan_class_folders(base / "train", classes, "train")
    class_names = sorted(train_files)
    index = {c: i for i, c in enumerate(class_names)}
    train = ImageFolderSplit([], [], class_names)
    for c in class_names:
        folder = str(base / "train" / c)
        train.paths.extend(os.path.join(folder, n) for n in train_files[c])
        train.labels.extend([index[c]] * len(train_files[c]))

    val_dir = base / "val"
    if not val_dir.is_dir():
        raise DatasetLayoutError(
            f"no val/ folder next to {base / 'train'}; expected val/<wnid>/ or a flat val/"
        )
    val = ImageFolderSplit([], [], class_names)
    if list_subdirs(str(val_dir)):
        present = list_subdirs(str(val_dir))
        if classes is None:
            _check_same_classes(class_names, present, str(val_dir))
        val_files = scan_class_folders(val_dir, class_names, "val")
        for c in class_names:
            val.paths.extend(os.path.join(str(val_dir / c), n) for n in val_files[c])
            val.labels.extend([index[c]] * len(val_files[c]))
        return train, val

    names = list_images(str(val_dir))
    if not names:
        raise DatasetLayoutError(f"{val_dir} holds neither class folders nor images")
    roots = list(dict.fromkeys([given_root, base, given_root.parent]))
    stem_to_wnid, label_path = load_flat_val_labels(roots, val_labels, synset_map)
    stems = [os.path.splitext(n)[0] for n in names]
    unlabelled = [n for n, s in zip(names, stems, strict=True) if s not in stem_to_wnid]
    if unlabelled:
        raise DatasetLayoutError(
            f"{len(unlabelled)} of {len(names)} images in {val_dir} have no label in {label_path}: "
            f"{_preview(unlabelled)}"
        )
    if classes is None:
        _check_same_classes(
            class_names, {stem_to_wnid[s] for s in stems}, f"{val_dir} (labels {label_path.name})"
        )
    for n, s in zip(names, stems, strict=True):
        wnid = stem_to_wnid[s]
        if wnid in index:
            val.paths.append(str(val_dir / n))
            val.labels.append(index[wnid])
    missing = len(stem_to_wnid) - len(names)
    if missing > 0:
        log.info("%s labels %d images that are not in %s", label_path, missing, val_dir)
    return train, val


# ---------------------------------------------------------------------------------------------------------
# Subsets: N classes x K images per class, from a class list or a seed, without copying images.


def imagenet100_classes() -> list[str]:
    """The 100 wnids of ImageNet-100 (Tian et al. 2019, CMC; github.com/HobbitLong/CMC imagenet100.txt)."""
    return read_class_list(resources.files("bn_inception.data") / IMAGENET100_FILE)


def read_class_list(path) -> list[str]:
    """WordNet ids, one per line (the first token of each line; blank lines and '#' comments skipped)."""
    wnids = []
    for line_no, line in enumerate(Path(str(path)).read_text().splitlines(), start=1):
        token = line.split("#", 1)[0].strip().split()
        if not token:
            continue
        if not WNID_RE.match(token[0]):
            raise DatasetLayoutError(
                f"{path} line {line_no}: {token[0]!r} is not a WordNet id like n01440764"
            )
        wnids.append(token[0])
    if len(set(wnids)) != len(wnids):
        raise DatasetLayoutError(f"{path} lists some WordNet ids twice")
    if not wnids:
        raise DatasetLayoutError(f"{path} lists no WordNet ids")
    return wnids


def choose_subset_classes(
    available: Sequence[str], class_list: str | os.PathLike | None, num_classes: int | None, subset_seed: int
) -> list[str]:
    """Sorted wnids of the subset: from ``class_list`` ("imagenet100" or a file), else ``num_classes``
    drawn from ``available`` with ``subset_seed`` (numpy's PCG64, reproducible across platforms)."""
    if class_list:
        chosen = imagenet100_classes() if str(class_list) == "imagenet100" else read_class_list(class_list)
        if num_classes is not None and num_classes != len(chosen):
            raise DatasetLayoutError(
                f"num_classes={num_classes} but the class list {class_list} has {len(chosen)} classes; "
                "set num_classes to null or match it"
            )
        return sorted(chosen)
    if num_classes is None:
        raise DatasetLayoutError(
            "an ImageNet subset needs either data.classes (a class list) or data.num_classes"
        )
    if not 1 <= num_classes <= len(available):
        raise DatasetLayoutError(f"num_classes={num_classes} but {len(available)} classes are available")
    rng = np.random.default_rng([subset_seed, 0xC1A55])
    return sorted(
        np.asarray(sorted(available))[rng.choice(len(available), num_classes, replace=False)].tolist()
    )


def take_per_class(split: ImageFolderSplit, per_class: int | None, subset_seed: int) -> ImageFolderSplit:
    """At most ``per_class`` images of each class, drawn per class with a seed derived from (subset_seed,
    wnid), so a class's picks do not change when other classes are added or removed."""
    if per_class is None:
        return split
    if per_class < 1:
        raise DatasetLayoutError(f"images per class must be >= 1 or null (all), got {per_class}")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(split.labels):
        by_class.setdefault(label, []).append(i)
    keep: list[int] = []
    for label, members in sorted(by_class.items()):
        if len(members) > per_class:
            rng = np.random.default_rng([subset_seed, zlib.crc32(split.classes[label].encode())])
            members = sorted(np.asarray(members)[rng.choice(len(members), per_class, replace=False)].tolist())
        keep.extend(members)
    return ImageFolderSplit([split.paths[i] for i in keep], [split.labels[i] for i in keep], split.classes)


def write_or_check_manifest(path: str | os.PathLike, splits: dict[str, ImageFolderSplit], root: Path) -> None:
    """Write the subset's file list (paths relative to root, label) or, if it exists, check it matches.

    A manifest that differs means the tree changed since it was written: the subset is not the same one.
    """
    lines = ["# bn_inception ImageNet subset manifest: split<TAB>relative path<TAB>label"]
    for name, split in splits.items():
        lines.extend(
            f"{name}\t{os.path.relpath(p, root)}\t{label}"
            for p, label in zip(split.paths, split.labels, strict=True)
        )
    text = "\n".join(lines) + "\n"
    path = Path(path).expanduser()
    if path.is_file():
        old = path.read_text()
        if old != text:
            raise DatasetLayoutError(
                f"subset manifest {path} does not match the subset chosen now from {root} "
                f"({len(old.splitlines()) - 1} vs {len(lines) - 1} entries); the tree or the subset settings "
                "changed: delete the manifest to accept the new subset"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
