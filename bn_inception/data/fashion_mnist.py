"""Fashion-MNIST (Xiao et al. 2017) in memory, from ``root`` (IDX files, gzipped or not, in it or its
``FashionMNIST/raw/``), Debian's dataset-fashion-mnist, or torchvision's downloader. IDX (LeCun's MNIST
page): magic 0x0000080<ndim>, ndim big-endian uint32 sizes, data. Read here because torchvision's
``read_image_file`` opens no .gz, and Debian's files are gzipped.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]  # fmt: skip
# Per-pixel mean and std of the 60,000 training images in [0, 1] (tests/data check them against the data).
MEAN = (0.2860,)
STD = (0.3530,)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class FashionMNISTNotFound(FileNotFoundError):
    """None of the places Fashion-MNIST can come from worked."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(
            f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()}, expected 000008xx)"
        )
    ndim = data[3]
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds {body.size} bytes"
        )
    return body.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for sub in ("", "FashionMNIST/raw", "raw"):
        for name in (stem + ".gz", stem):
            candidate = folder / sub / name
            if candidate.is_file():
                return candidate
    return None


def _load_from(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    paths = {split: [_find_idx(folder, stem) for stem in stems] for split, stems in _FILES.items()}
    if any(p is None for pair in paths.values() for p in pair):
        return None
    out = {}
    for split, (images_path, labels_path) in paths.items():
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {split} files disagree: images {images.shape} ({images_path}), "
                f"labels {labels.shape} ({labels_path}); expected (N, 28, 28) and (N,)"
            )
        out[split] = (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
    return out


def load_fashion_mnist(
    root: str | os.PathLike | None = None, download: bool = True
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (uint8 (60000, 28, 28), int64 labels), "test": ...} from the first place that has it."""
    tried = []
    if root is not None:
        found = _load_from(Path(root).expanduser())
        if found is not None:
            return found
        tried.append(f"data.root={root} (no IDX files)")
    else:
        tried.append("data.root (not set)")
    found = _load_from(DEBIAN_PATH)
    if found is not None:
        return found
    tried.append(f"{DEBIAN_PATH} (install Debian's dataset-fashion-mnist)")
    from bn_inception.data.build import cache_dir  # at call time: build imports this module

    target = Path(root).expanduser() if root is not None else cache_dir() / "fashion_mnist"
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            log.info("downloading Fashion-MNIST with torchvision into %s", target)
            sets = {
                s: FashionMNIST(str(target), train=s == "train", download=True) for s in ("train", "test")
            }
            return {s: (d.data.to(torch.uint8), d.targets.to(torch.int64)) for s, d in sets.items()}
        except Exception as e:  # noqa: BLE001 - any download failure becomes the one-line error below
            tried.append(f"torchvision download into {target} ({type(e).__name__}: {str(e).splitlines()[0]})")
    else:
        tried.append("torchvision download (disabled: data.download=false)")
    raise FashionMNISTNotFound("Fashion-MNIST not found; tried " + "; ".join(tried))
