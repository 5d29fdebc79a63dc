"""Datasets: path storage, deterministic augmentation, what a bad image does under each access mode."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from bn_inception.data import BadImageError, build_datasets, to_model_input
from bn_inception.data.packed import PackedPaths, concat, pack


def test_packed_paths_round_trip_any_file_name():
    paths = ["/data/train/n01440764/a.JPEG", "/données/ü/b.jpeg", "c.png"]
    packed = PackedPaths.of(paths)
    assert len(packed) == 3 and list(packed) == paths and packed[1:] == paths[1:]
    assert paths[1] in packed and pickle.loads(pickle.dumps(packed))[1] == paths[1]
    assert list(pickle.loads(pickle.dumps(packed.take([2, 0])))) == [paths[2], paths[0]]
    assert len(PackedPaths.of([])) == 0


def test_folders_packed_one_by_one_join_to_the_same_paths():
    names = ["a.JPEG", "ü b.jpeg", os.fsdecode(b"\xff-not-utf8.png")]  # any byte string a file system holds
    parts = [pack(f"train/n01/{n}" for n in names), pack([]), pack(["val/x.JPEG"])]
    expected = [*(f"/r/train/n01/{n}" for n in names), "/r/val/x.JPEG"]
    assert list(PackedPaths(*concat(parts), root="/r")) == expected


def test_file_dataset_augmentation_is_reproducible_across_instances(make_tree):
    tree = make_tree(num_classes=2, train_per_class=3)
    a = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=3)
    b = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=3)
    assert torch.equal(a.train[(4, 2)][0], b.train[(4, 2)][0])
    assert not torch.equal(a.train[(4, 2)][0], a.train[(4, 3)][0])
    batch, labels, info = a.train.load_batch([(4, 2), (1, 2)])
    assert torch.equal(batch[0], b.train[(4, 2)][0]) and info == {
        "requested": 2,
        "skipped": 0,
        "bad_files": [],
    }


def test_a_bad_training_image_is_replaced_and_a_bad_validation_image_raises(make_tree):
    tree = make_tree(num_classes=2, train_per_class=3, quirks=("truncated",), val_quirks=("empty",))
    splits = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=0)
    bad_train = splits.train.paths.index(tree.quirk_files["truncated"][0])
    image, label = splits.train[(bad_train, 0)]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    again, _ = splits.train[(bad_train, 0)]
    assert torch.equal(image, again)  # the replacement is deterministic too
    images, labels, info = splits.train.load_batch([(bad_train, 0)])
    assert info["skipped"] == 1 and info["bad_files"] == tree.quirk_files["truncated"]
    bad_val = splits.val.paths.index(tree.quirk_files["empty"][0])
    with pytest.raises(BadImageError, match="the file is empty"):
        splits.val[bad_val]
    images, labels, info = splits.val.load_batch([bad_val, 0], on_bad="skip")
    assert len(images) == 1 and info["skipped"] == 1


def test_evaluation_transform_output_size_and_range(make_tree):
    tree = make_tree(num_classes=2, min_size=30, max_size=90)
    splits = build_datasets("imagenet", root=str(tree.root), input_size=24, seed=0)
    for i in range(len(splits.val)):
        x, _ = splits.val[i]
        assert x.shape == (3, 24, 24) and x.dtype == torch.uint8
    batch, _, _ = splits.val.load_batch(list(range(len(splits.val))))
    model_input = to_model_input(batch, splits.mean, splits.std, "cpu")
    mean, std = torch.tensor(splits.mean).view(3, 1, 1), torch.tensor(splits.std).view(3, 1, 1)
    pixels = model_input * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5 and pixels.std() > 0.05
