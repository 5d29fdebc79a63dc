"""ImageNet layouts users have (sorted val, flat val with devkit or Kaggle labels), errors, subsets."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm

from bn_inception.data.imagenet import DatasetLayoutError, ImageFolderSplit, read_synset_map, scan_imagenet
from bn_inception.data.subset import (
    choose_subset_classes,
    imagenet100_classes,
    take_per_class,
    write_or_check_manifest,
)
from bn_inception.data.synthetic import DEVKIT_DIR


def _named(split: ImageFolderSplit) -> dict[str, str]:
    return {
        os.path.basename(p): split.classes[label] for p, label in zip(split.paths, split.labels, strict=True)
    }


def test_sorted_layout_labels_by_sorted_wnid(make_tree):
    tree = make_tree(num_classes=5, train_per_class=3, val_per_class=2)
    train, val = scan_imagenet(tree.root)
    assert train.classes == sorted(tree.wnids) and len(train) == 15 and len(val) == 10
    for path, label in zip([*train.paths, *val.paths], [*train.labels, *val.labels], strict=True):
        assert Path(path).parent.name == train.classes[label]


@pytest.mark.parametrize(
    "labels, synset_map",
    [
        ("LOC_val_solution.csv", None),
        (DEVKIT_DIR / "ILSVRC2012_validation_ground_truth.txt", DEVKIT_DIR / "meta.mat"),
        (DEVKIT_DIR / "ILSVRC2012_validation_ground_truth.txt", DEVKIT_DIR / "map_clsloc.txt"),
        (DEVKIT_DIR / "ILSVRC2012_validation_ground_truth.txt", None),  # meta.mat found next to it
    ],
)
def test_flat_val_labels_match_the_sorted_layout(make_tree, labels, synset_map):
    kinds = ("devkit", "devkit_text", "kaggle")
    sorted_tree = make_tree("sorted", num_classes=6, val_per_class=3, label_files=kinds)
    flat_tree = make_tree("flat", num_classes=6, val_per_class=3, val_layout="flat", label_files=kinds)
    _, val_sorted = scan_imagenet(sorted_tree.root)
    _, val_flat = scan_imagenet(
        flat_tree.root, flat_tree.root / labels, flat_tree.root / synset_map if synset_map else None
    )
    assert _named(val_flat) == _named(val_sorted) and len(val_flat) == 18


def test_flat_val_label_files_are_found_without_configuration(make_tree):
    tree = make_tree(num_classes=3, val_layout="flat", label_files=("devkit",))
    _, val = scan_imagenet(tree.root)
    assert len(val) == 12


def test_devkit_meta_mat_written_by_scipy_is_read_without_it(tmp_path):
    sio = pytest.importorskip("scipy.io")
    dtype = [(k, object) for k in ("ILSVRC2012_ID", "WNID", "words", "num_children", "children")]
    synsets = np.zeros((3, 1), dtype=dtype)
    for i, (ident, wnid, kids) in enumerate([(2, "n00000002", 0), (1, "n00000001", 0), (3, "n00000099", 2)]):
        synsets[i, 0] = (ident, wnid, "words", kids, np.zeros((1, 0)) if not kids else np.array([[1, 2]]))
    for compress in (False, True):
        sio.savemat(tmp_path / "meta.mat", {"synsets": synsets}, do_compression=compress)
        assert read_synset_map(tmp_path / "meta.mat") == {2: "n00000002", 1: "n00000001"}


def test_kaggle_download_layout_is_found_from_its_top_folder(make_tree, tmp_path):
    tree = make_tree(num_classes=3, val_layout="flat", label_files=("kaggle",))
    kaggle = tmp_path / "kaggle"
    (kaggle / "ILSVRC" / "Data").mkdir(parents=True)
    shutil.move(tree.root / "train", kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "train")
    shutil.move(tree.root / "val", kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "val")
    shutil.move(tree.root / "LOC_val_solution.csv", kaggle / "LOC_val_solution.csv")
    train, val = scan_imagenet(kaggle)
    assert len(train.classes) == 3 and len(val) == 12


def test_missing_root_says_what_was_expected(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"does not exist; expected a folder with train/") as info:
        scan_imagenet(tmp_path / "nowhere")
    assert "\n" not in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no train/ folder"):
        scan_imagenet(tmp_path / "empty")


def test_empty_class_folder_is_named(make_tree):
    tree = make_tree(num_classes=3)
    (tree.root / "train" / "n09999999").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"1 train class folder\(s\) .* hold no images: n09999999"):
        scan_imagenet(tree.root)


def test_val_classes_differing_from_train_are_listed(make_tree):
    tree = make_tree(num_classes=4)
    gone = tree.wnids[2]
    shutil.rmtree(tree.root / "val" / gone)
    with pytest.raises(
        DatasetLayoutError, match=rf"has 3 classes but train/ has 4; missing from val: {gone}"
    ):
        scan_imagenet(tree.root)


def test_flat_val_without_any_label_file_names_both_kinds(make_tree):
    tree = make_tree(num_classes=2, val_layout="flat", label_files=("kaggle",))
    (tree.root / "LOC_val_solution.csv").unlink()
    with pytest.raises(
        DatasetLayoutError, match="LOC_val_solution.csv .* ILSVRC2012_validation_ground_truth.txt"
    ):
        scan_imagenet(tree.root)


def test_ground_truth_without_a_synset_map_asks_for_one(make_tree):
    tree = make_tree(num_classes=2, val_layout="flat", label_files=("devkit",))
    (tree.root / DEVKIT_DIR / "meta.mat").unlink()
    with pytest.raises(DatasetLayoutError, match="meta.mat or a text map .* set data.synset_map"):
        scan_imagenet(tree.root)


def test_unlabelled_flat_val_image_is_named(make_tree):
    tree = make_tree(num_classes=2, val_layout="flat", label_files=("kaggle",))
    shutil.copy(next((tree.root / "val").iterdir()), tree.root / "val" / "stray.JPEG")
    with pytest.raises(DatasetLayoutError, match=r"1 of 9 images .* have no label .*: stray.JPEG"):
        scan_imagenet(tree.root)


# ---- subsets


def test_imagenet100_is_the_cmc_list_of_imagenet_classes():
    wnids = imagenet100_classes()
    assert len(wnids) == len(set(wnids)) == 100
    assert wnids[:3] == ["n02869837", "n01749939", "n02488291"] and wnids[-1] == "n02090622"
    synsets = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    assert set(wnids) <= set(synsets.read_text().split())  # all are ILSVRC-2012 classes


def test_subset_by_seed_is_reproducible_and_seed_dependent():
    available = [f"n{i:08d}" for i in range(50)]
    a = choose_subset_classes(available, None, 10, subset_seed=0)
    assert a == choose_subset_classes(available, None, 10, subset_seed=0) and a == sorted(a) and len(a) == 10
    assert a != choose_subset_classes(available, None, 10, subset_seed=1)
    with pytest.raises(DatasetLayoutError, match="num_classes"):
        choose_subset_classes(available, None, None, 0)


def test_subset_from_a_class_list_file(tmp_path, make_tree):
    tree = make_tree(num_classes=6, train_per_class=5)
    listing = tmp_path / "classes.txt"
    listing.write_text(f"# my subset\n{tree.wnids[4]}  extra words\n\n{tree.wnids[1]}\n")
    chosen = choose_subset_classes(tree.wnids, listing, None, 0)
    assert chosen == sorted([tree.wnids[1], tree.wnids[4]])
    train, val = scan_imagenet(tree.root, classes=chosen)
    assert train.classes == chosen and set(train.labels) == {0, 1} and len(val) == 8
    listing.write_text("cat\n")
    with pytest.raises(DatasetLayoutError, match="not a WordNet id"):
        choose_subset_classes(tree.wnids, listing, None, 0)


def test_images_per_class_draws_are_stable_per_class(make_tree):
    tree = make_tree(num_classes=4, train_per_class=10)
    train, _ = scan_imagenet(tree.root)
    k3 = take_per_class(train, 3, subset_seed=5)
    assert np.bincount(k3.labels).tolist() == [3, 3, 3, 3]
    assert list(k3.paths) == list(take_per_class(train, 3, subset_seed=5).paths)
    assert list(k3.paths) != list(take_per_class(train, 3, subset_seed=6).paths)
    # Dropping a class does not change the picks of the others.
    fewer, _ = scan_imagenet(tree.root, classes=tree.wnids[1:])
    assert set(take_per_class(fewer, 3, subset_seed=5).paths) <= set(k3.paths)


def test_manifest_is_written_then_checked(tmp_path, make_tree):
    tree = make_tree(num_classes=3, train_per_class=4)
    train, val = scan_imagenet(tree.root)
    manifest = tmp_path / "run" / "subset.tsv"
    write_or_check_manifest(manifest, {"train": train, "val": val}, tree.root)
    lines = manifest.read_text().splitlines()
    assert len(lines) == 1 + 12 + 12 and lines[1].startswith("train\ttrain/")
    write_or_check_manifest(manifest, {"train": train, "val": val}, tree.root)  # same subset: fine
    smaller = take_per_class(train, 2, 0)
    with pytest.raises(DatasetLayoutError, match="does not match the subset chosen now"):
        write_or_check_manifest(manifest, {"train": smaller, "val": val}, tree.root)


# ---- trees that cannot be read: one line naming the folder


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_a_symbolic_link_loop_is_named(make_tree):
    tree = make_tree(num_classes=3)
    loop = tree.root / "train" / "n09999999"
    loop.symlink_to(loop)  # a class folder that is a link to itself
    with pytest.raises(DatasetLayoutError, match=rf"^{loop} is a symbolic link loop") as info:
        scan_imagenet(tree.root)
    _one_line(info.value)


def test_a_dangling_link_in_a_class_folder_is_named(make_tree):
    tree = make_tree(num_classes=2)
    link = tree.root / "train" / tree.wnids[0] / "moved.JPEG"
    link.symlink_to(tree.root / "elsewhere" / "moved.JPEG")
    with pytest.raises(DatasetLayoutError, match=rf"^{link} is a symbolic link to .*which does not exist"):
        scan_imagenet(tree.root)


def test_an_unreadable_folder_is_named_with_what_to_do(make_tree, monkeypatch):
    tree = make_tree(num_classes=3)
    locked = tree.root / "train" / tree.wnids[1]
    real_scandir = os.scandir

    def scandir(path="."):  # what a folder without read permission does (tests may run as root)
        if os.fspath(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(
        DatasetLayoutError, match=rf"^cannot read folder {locked}: permission denied; .*chmod"
    ):
        scan_imagenet(tree.root)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders without read permission")
def test_a_folder_without_read_permission_is_named(make_tree):
    tree = make_tree(num_classes=2)
    locked = tree.root / "val" / tree.wnids[0]
    locked.chmod(0)
    try:
        with pytest.raises(DatasetLayoutError, match=rf"cannot read folder {locked}: permission denied"):
            scan_imagenet(tree.root)
    finally:
        locked.chmod(0o755)
