"""``build_datasets``: the keys of ``configs/data/<name>.yaml`` (schema-checked) -> train/val datasets."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from bn_inception.data import fashion_mnist as fmnist
from bn_inception.data.datasets import ImageFileDataset, InMemoryImageDataset
from bn_inception.data.device import resolve_decode
from bn_inception.data.imagenet import ImageFolderSplit, resolve_imagenet_root, select_classes
from bn_inception.data.index import check_ranks_agree, default_index_path, index_key, load_tree_index
from bn_inception.data.subset import choose_subset_classes, take_per_class, write_or_check_manifest
from bn_inception.data.synthetic import make_synthetic_imagenet
from bn_inception.data.transforms import TrainAugment, distortion_strength

DEFAULT_IMAGENET_ROOT = "data/imagenet"  # relative to the working directory (the repo's ignored data/)


@dataclass
class DataSplits:
    train: Any  # Dataset of (uint8 CHW image, int label), training augmentation applied
    val: Any  # Dataset of the same, single-crop evaluation transform applied
    num_classes: int
    in_chans: int
    input_size: int
    mean: tuple[float, ...]  # the model's input normalisation, for pixels in [0, 1] (to_model_input)
    std: tuple[float, ...]
    classes: list[str]  # class names (wnids for ImageNet) in label order
    name: str = ""
    loader: dict[str, Any] = field(default_factory=dict)  # shuffle, shard_size, shuffle_buffer, workers, ...
    decode_on_device: bool = False  # data.decode resolved: JPEGs decoded and transformed on the device


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bn_inception"


def build_datasets(
    name: str,
    root: str | os.PathLike | None = None,
    input_size: int = 224,
    crop_scale: Sequence[float] = (0.08, 1.0),
    crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
    distortion: str = "full",
    reduced_strength: float = 0.5,
    augment: bool = True,
    shuffle: str = "global",
    shard_size: int = 1024,
    shuffle_buffer: int = 128,
    workers: int | None = 2,
    max_bad_fraction: float = 0.001,
    seed: int = 0,
    decode: str = "auto",
    device: torch.device | str | None = None,
    **dataset_kwargs: Any,
) -> DataSplits:
    """Train/val datasets with the Sec. 4.2.1 transforms; other keys go to ``_build_<name>``.
    ``augment=False`` trains on the images as evaluation sees them (Sec. 4.1's MNIST)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(_BUILDERS)}")
    if float(crop_scale[1]) > 1.0:
        raise ValueError(
            f"data.crop_scale is a fraction of the image area, at most 1.0; got {list(crop_scale)}"
        )
    splits = _BUILDERS[name](root=root, input_size=int(input_size), **dataset_kwargs)
    strength = distortion_strength(distortion, reduced_strength) if augment else 0.0
    scale, ratio = tuple(map(float, crop_scale)), tuple(map(float, crop_ratio))
    splits.train.augment = TrainAugment(int(input_size), scale, ratio, strength, int(seed), augment)
    decode_device = resolve_decode(decode, device, isinstance(splits.train, ImageFileDataset))
    splits.train.decode_device = splits.val.decode_device = decode_device
    splits.decode_on_device = decode_device is not None
    splits.name = name
    splits.loader = {
        "shuffle": shuffle,
        "shard_size": int(shard_size),
        "shuffle_buffer": int(shuffle_buffer),
        "workers": default_workers() if workers is None else int(workers),
        "max_bad_fraction": float(max_bad_fraction),
    }
    return splits


def default_workers() -> int:
    """``data.workers=null``: min(8, cores per training process - 1) (LOCAL_WORLD_SIZE shares the cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(0, min(8, per_process - 1))


def _file_splits(train: ImageFolderSplit, val: ImageFolderSplit, input_size: int) -> DataSplits:
    mean, std = tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
    train_ds, val_ds = (
        ImageFileDataset(s.paths, s.labels, s.classes, input_size, mean, std) for s in (train, val)
    )
    return DataSplits(train_ds, val_ds, len(train.classes), 3, input_size, mean, std, list(train.classes))


def tree_listing(root, val_labels=None, synset_map=None, index=None):
    """The tree's listing from its index (``data.index`` or one under ``cache_dir()/index``), checked to be
    the same on every rank (so every rank must call this)."""
    resolve_imagenet_root(root)  # a wrong root fails here, before anything is written to the cache
    if index:
        path = Path(index).expanduser()
        listing = load_tree_index(root, val_labels, synset_map, path)
    else:
        path = default_index_path(cache_dir(), index_key(root, val_labels, synset_map))
        listing = load_tree_index(root, val_labels, synset_map, path, prune=True)
    check_ranks_agree(listing, path)
    return listing


def _build_imagenet(root, input_size: int, val_labels=None, synset_map=None, index=None) -> DataSplits:
    listing = tree_listing(root or DEFAULT_IMAGENET_ROOT, val_labels, synset_map, index)
    return _file_splits(*select_classes(listing), input_size)


def _build_imagenet_subset(
    root,
    input_size: int,
    classes: str | None = "imagenet100",
    num_classes: int | None = None,
    images_per_class: int | None = None,
    val_images_per_class: int | None = None,
    subset_seed: int = 0,
    manifest: str | None = None,
    val_labels: str | None = None,
    synset_map: str | None = None,
    index: str | None = None,
) -> DataSplits:
    # Drawn from the whole tree's index (shared with data=imagenet): no listing once the tree is indexed.
    listing = tree_listing(root or DEFAULT_IMAGENET_ROOT, val_labels, synset_map, index)
    chosen = choose_subset_classes(listing.train.classes, classes, num_classes, subset_seed)
    train, val = select_classes(listing, chosen)
    train = take_per_class(train, images_per_class, subset_seed)
    val = take_per_class(val, val_images_per_class, subset_seed)
    if manifest:
        write_or_check_manifest(manifest, {"train": train, "val": val}, listing.base)
    return _file_splits(train, val, input_size)


def _build_fashion_mnist(root, input_size: int, download: bool = True) -> DataSplits:
    data = fmnist.load_fashion_mnist(root, download=download)
    mean, std, classes = fmnist.MEAN, fmnist.STD, fmnist.CLASSES
    train, val = (InMemoryImageDataset(*data[s], classes, input_size, mean, std) for s in ("train", "test"))
    return DataSplits(train, val, len(classes), 1, input_size, mean, std, list(classes))


def _build_synthetic(
    root,
    input_size: int,
    num_classes: int = 10,
    train_per_class: int = 64,
    val_per_class: int = 16,
    min_size: int = 48,
    max_size: int = 96,
    val_layout: str = "sorted",
    quirks: Sequence[str] = (),
    generator_seed: int = 0,
    index: str | None = None,
) -> DataSplits:
    settings = {
        "num_classes": int(num_classes),
        "train_per_class": int(train_per_class),
        "val_per_class": int(val_per_class),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "val_layout": str(val_layout),
        "quirks": [str(q) for q in quirks],
        "seed": int(generator_seed),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    tree = Path(root).expanduser() if root else cache_dir() / "synthetic" / digest
    if root and tree.exists() and not (tree / "train").is_dir() and any(tree.iterdir()):
        raise ValueError(
            f"data.root={root} is a folder but not a synthetic tree (no train/); give a tree made by "
            f"scripts/make_synthetic_imagenet.py, an empty or new folder to generate one in, or null"
        )
    if not (tree / "train").is_dir():  # generated next to it and renamed: ranks never read half a tree
        tree.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=tree.name + ".tmp-", dir=tree.parent))
        try:
            make_synthetic_imagenet(tmp, label_files=("devkit", "kaggle"), **settings)
            os.replace(tmp, tree)
        except OSError:
            if not (tree / "train").is_dir():  # not a lost race with another process: a real failure
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _file_splits(*select_classes(tree_listing(tree, index=index)), input_size)


_BUILDERS = {
    "imagenet": _build_imagenet,
    "imagenet_subset": _build_imagenet_subset,
    "fashion_mnist": _build_fashion_mnist,
    "synthetic": _build_synthetic,
}
