"""Fashion-MNIST: Debian's package, a root of IDX files, and the error when neither (nor a download) works."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from bn_inception.data import build_datasets
from bn_inception.data import fashion_mnist as fm


def test_loads_from_debians_package():
    if not (fm.DEBIAN_PATH / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({fm.DEBIAN_PATH} has no IDX files)")
    data = fm.load_fashion_mnist(None, download=False)
    images, labels = data["train"]
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert data["test"][0].shape == (10000, 28, 28)
    assert torch.bincount(labels).tolist() == [6000] * 10
    x = images.float() / 255
    # The normalisation constants are the training set's own statistics.
    assert abs(x.mean().item() - fm.MEAN[0]) < 1e-3 and abs(x.std().item() - fm.STD[0]) < 1e-3


def test_loads_from_a_root_of_generated_idx_files(idx_root):
    data = fm.load_fashion_mnist(idx_root, download=False)
    assert data["train"][0].shape == (64, 28, 28) and data["test"][0].shape == (16, 28, 28)
    assert data["train"][1].tolist() == [i % 10 for i in range(64)]
    raw = fm.read_idx(idx_root / "train-images-idx3-ubyte.gz")
    assert np.array_equal(data["train"][0].numpy(), raw)


def test_uncompressed_files_in_torchvisions_layout_are_found(idx_root, tmp_path):
    raw_dir = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for path in idx_root.iterdir():
        (raw_dir / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
    data = fm.load_fashion_mnist(tmp_path / "tv", download=False)
    assert data["test"][1].tolist() == [i % 10 for i in range(16)]


def test_no_source_gives_one_error_naming_all_three(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_PATH", tmp_path / "no-debian")
    with pytest.raises(fm.FashionMNISTNotFound) as info:
        fm.load_fashion_mnist(tmp_path / "empty", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "data.root=" in message and "no-debian" in message and "torchvision download" in message


def test_a_broken_idx_file_is_reported(idx_root):
    (idx_root / "t10k-labels-idx1-ubyte.gz").unlink()
    shutil.copy(idx_root / "train-images-idx3-ubyte.gz", idx_root / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match="Fashion-MNIST test files disagree"):
        fm.load_fashion_mnist(idx_root, download=False)
    (idx_root / "junk.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        fm.read_idx(idx_root / "junk.gz")


def test_splits_are_single_channel_in_memory_datasets(idx_root):
    splits = build_datasets(
        "fashion_mnist", root=str(idx_root), input_size=28, crop_scale=[0.35, 1.0], seed=0
    )
    assert (splits.num_classes, splits.in_chans, splits.input_size) == (10, 1, 28)
    assert splits.classes[0] == "T-shirt/top" and splits.mean == fm.MEAN
    images, labels, _ = splits.train.load_batch([(i, 0) for i in range(8)])
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.uint8
    torch.testing.assert_close(images[5], splits.train[(5, 0)][0])  # batch == one sample at a time
    val, _ = splits.val[3]
    assert val.shape == (1, 28, 28)
