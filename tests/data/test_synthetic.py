"""The synthetic ImageNet-layout generator: layout, determinism, learnable classes, the script."""

from __future__ import annotations

import runpy
import sys

import numpy as np
import pytest
from PIL import Image

from bn_inception.data.imagenet import scan_imagenet
from bn_inception.data.synthetic import QUIRKS, make_synthetic_imagenet


def test_layout_counts_and_quirk_files(make_tree):
    tree = make_tree(num_classes=3, train_per_class=4, val_per_class=2, quirks=QUIRKS, val_quirks=("cmyk",))
    assert tree.num_train == 12 + len(QUIRKS) and tree.num_val == 7
    assert sorted(p.name for p in (tree.root / "train").iterdir()) == tree.wnids
    assert Image.open(tree.quirk_files["cmyk"][0]).mode == "CMYK"
    assert Image.open(tree.quirk_files["png_as_jpeg"][0]).format == "PNG"
    assert Image.open(tree.quirk_files["greyscale"][0]).mode == "L"
    assert all(p.endswith(".JPEG") for files in tree.quirk_files.values() for p in files)
    sizes = {Image.open(p).size for p in (tree.root / "train" / tree.wnids[0]).glob("*_[0-9].JPEG")}
    assert len(sizes) > 1  # varied sizes and aspect ratios


def test_same_arguments_write_the_same_files(tmp_path):
    a = make_synthetic_imagenet(tmp_path / "a", num_classes=2, train_per_class=2, val_per_class=1, seed=4)
    b = make_synthetic_imagenet(tmp_path / "b", num_classes=2, train_per_class=2, val_per_class=1, seed=4)
    files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files_a)


def test_classes_are_learnable_from_colour_alone(make_tree):
    tree = make_tree(num_classes=8, train_per_class=6, val_per_class=4)
    train, val = scan_imagenet(tree.root)

    def features(paths):
        return np.stack(
            [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).mean(axis=(0, 1)) for p in paths]
        )

    centres = np.stack([features(train.paths)[np.asarray(train.labels) == c].mean(0) for c in range(8)])
    guess = np.argmin(((features(val.paths)[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (guess == np.asarray(val.labels)).mean() >= 0.9


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown quirk 'rotten'"):
        make_synthetic_imagenet(tmp_path / "x", quirks=("rotten",))
    with pytest.raises(ValueError, match="flat val/ needs at least one label file"):
        make_synthetic_imagenet(tmp_path / "y", val_layout="flat", label_files=())


def test_command_line_script(repo, tmp_path, monkeypatch, capsys):
    argv = [
        "make_synthetic_imagenet.py",
        str(tmp_path / "cli"),
        "--classes",
        "2",
        "--train-per-class",
        "2",
        "--val-per-class",
        "1",
        "--val-layout",
        "flat",
        "--labels",
        "kaggle",
        "--quirks",
        "empty",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(repo / "scripts" / "make_synthetic_imagenet.py"), run_name="__main__")
    assert info.value.code == 0 and "wrote 5 train and 2 val images of 2 classes" in capsys.readouterr().out
    assert (tmp_path / "cli" / "LOC_val_solution.csv").is_file()
