"""ImageNet subsets (``data=imagenet_subset``): N classes x K images per class of a listed tree, from a class
list or a seed, without copying images; the chosen files written to a manifest once, then checked."""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from bn_inception.data.imagenet import WNID_RE, DatasetLayoutError, ImageFolderSplit
from bn_inception.files import write_atomically

IMAGENET100_FILE = "imagenet100.txt"


def imagenet100_classes() -> list[str]:
    """The 100 wnids of ImageNet-100 (Tian et al. 2019, CMC; github.com/HobbitLong/CMC imagenet100.txt)."""
    return read_class_list(resources.files("bn_inception.data") / IMAGENET100_FILE)


def read_class_list(path) -> list[str]:
    """WordNet ids, the first token of each line ('#' comments skipped)."""
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
    """Sorted wnids: ``class_list`` ("imagenet100" or a file), else ``num_classes`` drawn with the seed."""
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
    """At most ``per_class`` images a class, seeded by (subset_seed, wnid): picks stay when classes change."""
    if per_class is None:
        return split
    if per_class < 1:
        raise DatasetLayoutError(f"images per class must be >= 1 or null (all), got {per_class}")
    labels = np.asarray(split.labels)
    by_class = np.argsort(labels, kind="stable")  # each class's members in their order in the split
    ends = np.cumsum(np.bincount(labels, minlength=len(split.classes)))
    keep = []
    for label, (start, end) in enumerate(zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)):
        members = by_class[start:end]
        if len(members) > per_class:
            rng = np.random.default_rng([subset_seed, zlib.crc32(split.classes[label].encode())])
            members = np.sort(members[rng.choice(len(members), per_class, replace=False)])
        keep.append(members)
    rows = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return ImageFolderSplit(split.paths.take(rows), labels[rows], split.classes)


_MANIFEST_HEADER = "# bn_inception ImageNet subset manifest: split<TAB>relative path<TAB>label\n"


def _manifest_lines(splits: dict[str, ImageFolderSplit]) -> Iterator[bytes]:
    yield _MANIFEST_HEADER.encode()
    for name, split in splits.items():
        for i in range(len(split)):
            line = f"{name}\t{split.paths.relative(i)}\t{int(split.labels[i])}\n"
            yield line.encode(errors="surrogateescape")


def _digest(lines: Iterable[bytes]) -> tuple[str, int]:
    digest, count = hashlib.sha256(), 0
    for count, line in enumerate(lines, start=1):  # noqa: B007
        digest.update(line)
    return digest.hexdigest(), count


def write_or_check_manifest(path: str | os.PathLike, splits: dict[str, ImageFolderSplit], root: Path) -> None:
    """Write the subset's file list or, if it exists, check it still matches (streamed, by digest)."""
    path = Path(path).expanduser()
    if not path.is_file():
        write_atomically(path, lambda f: f.writelines(_manifest_lines(splits)))
        return
    new, n_new = _digest(_manifest_lines(splits))
    with open(path, "rb") as f:
        old, n_old = _digest(f)
    if old != new:
        raise DatasetLayoutError(
            f"subset manifest {path} does not match the subset chosen now from {root} ({n_old - 1} vs "
            f"{n_new - 1} entries); the tree or the subset settings changed: delete the manifest to accept "
            "the new subset"
        )
