"""A small ImageNet-layout JPEG tree with learnable classes (a hue, stripe orientation and period each) and
ImageNet's file quirks (QUIRKS), for tests and benchmarks (``scripts/make_synthetic_imagenet.py``). ``noise``
makes files as costly to decode as photographs (the benchmark's ~100 KB 500x375 JPEGs, ImageNet's average
~110 KB). ``val`` is sorted or flat with devkit and/or Kaggle label files, the made-up ILSVRC2012_IDs not in
sorted-wnid order, as in the real devkit.
"""

from __future__ import annotations

import colorsys
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

QUIRKS = ("cmyk", "png_as_jpeg", "greyscale", "exif", "truncated", "empty", "not_image")
UNREADABLE_QUIRKS = ("truncated", "empty", "not_image")
LABEL_FILES = ("devkit", "devkit_text", "kaggle")
DEVKIT_DIR = Path("ILSVRC2012_devkit_t12") / "data"


@dataclass
class SyntheticTree:
    root: Path
    wnids: list[str]
    ilsvrc_ids: dict[str, int]
    num_train: int
    num_val: int
    quirk_files: dict[str, list[str]] = field(default_factory=dict)


def class_pattern(label: int, num_classes: int) -> tuple[tuple[int, int, int], bool, int]:
    r, g, b = colorsys.hsv_to_rgb((label / max(num_classes, 1)) % 1.0, 0.65, 0.85)
    return (int(r * 255), int(g * 255), int(b * 255)), label % 2 == 1, 4 + 2 * (label % 5)


def render_image(
    label: int, num_classes: int, width: int, height: int, rng: np.random.Generator, noise: float
) -> Image.Image:
    colour, vertical, period = class_pattern(label, num_classes)
    coords = np.arange(width if vertical else height)
    stripes = 40.0 * np.sign(np.sin(2 * np.pi * (coords + rng.integers(period)) / period))
    stripes = stripes[None, :] if vertical else stripes[:, None]
    img = np.empty((height, width, 3), dtype=np.float32)
    img[:] = np.asarray(colour, dtype=np.float32) + rng.uniform(-15, 15)
    img += np.broadcast_to(stripes, (height, width))[:, :, None]
    if noise > 0:
        img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _jpeg_bytes(img: Image.Image, quality: int, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def quirk_bytes(quirk: str, img: Image.Image, quality: int) -> bytes:
    if quirk == "png_as_jpeg":
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()
    if quirk == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 CW to display; ImageNet loaders ignore it
        exif[0x010F] = "bn_inception synthetic camera"
        return _jpeg_bytes(img, quality, exif=exif.tobytes())
    made = {"cmyk": lambda: _jpeg_bytes(img.convert("CMYK"), quality), "empty": lambda: b"",
            "greyscale": lambda: _jpeg_bytes(img.convert("L"), quality),
            "truncated": lambda: (data := _jpeg_bytes(img, quality))[: len(data) // 2],
            "not_image": lambda: b"<html><body>404 Not Found</body></html>\n"}  # fmt: skip
    if quirk not in made:
        raise ValueError(f"unknown quirk {quirk!r}; valid: {', '.join(QUIRKS)}")
    return made[quirk]()


def _random_wnids(n: int, rng: np.random.Generator) -> list[str]:
    numbers = rng.choice(10_000_000, size=n, replace=False)
    return sorted(f"n0{int(x):07d}" for x in numbers)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_synthetic_imagenet(
    root: str | os.PathLike,
    num_classes: int = 4,
    train_per_class: int = 8,
    val_per_class: int = 4,
    min_size: int = 32,
    max_size: int = 64,
    image_size: tuple[int, int] | None = None,
    val_layout: str = "sorted",
    label_files: Sequence[str] = ("devkit", "kaggle"),
    quirks: Sequence[str] = (),
    val_quirks: Sequence[str] = (),
    noise: float = 6.0,
    jpeg_quality: int = 90,
    seed: int = 0,
    wnids: Sequence[str] | None = None,
) -> SyntheticTree:
    """Write ``root/train/<wnid>/*.JPEG``, ``root/val`` and label files where the downloads put them. Sides
    uniform in [min_size, max_size], or ``image_size`` (w, h) with a quarter portrait."""
    _check_options(val_layout, [*quirks, *val_quirks], label_files)
    root = Path(root)
    rng = np.random.default_rng(seed)
    wnids = sorted(wnids) if wnids is not None else _random_wnids(num_classes, rng)
    num_classes = len(wnids)
    # The devkit numbers classes in WordNet-hierarchy order, not sorted wnid order: mimic that.
    ids = {w: int(i) + 1 for w, i in zip(wnids, rng.permutation(num_classes), strict=True)}

    def size() -> tuple[int, int]:
        if image_size is not None:
            w, h = image_size
            return (h, w) if rng.random() < 0.25 else (w, h)
        return int(rng.integers(min_size, max_size + 1)), int(rng.integers(min_size, max_size + 1))

    def image(label: int) -> Image.Image:
        return render_image(label, num_classes, *size(), rng=rng, noise=noise)

    tree = SyntheticTree(root, list(wnids), ids, 0, 0, {q: [] for q in (*quirks, *val_quirks)})
    for label, wnid in enumerate(wnids):
        for i in range(train_per_class):
            _write(root / "train" / wnid / f"{wnid}_{i + 1}.JPEG", _jpeg_bytes(image(label), jpeg_quality))
            tree.num_train += 1
    for k, quirk in enumerate(quirks):
        label = k % num_classes
        path = root / "train" / wnids[label] / f"{wnids[label]}_quirk_{quirk}.JPEG"
        _write(path, quirk_bytes(quirk, image(label), jpeg_quality))
        tree.quirk_files[quirk].append(str(path))
        tree.num_train += 1

    val_items = [(label, None) for label in range(num_classes) for _ in range(val_per_class)]
    order = rng.permutation(len(val_items))
    val_items = [val_items[i] for i in order] + [(k % num_classes, q) for k, q in enumerate(val_quirks)]
    val_labels = []
    for number, (label, quirk) in enumerate(val_items, start=1):
        name = f"ILSVRC2012_val_{number:08d}.JPEG"
        sub = Path("val") / wnids[label] if val_layout == "sorted" else Path("val")
        img = image(label)
        data = _jpeg_bytes(img, jpeg_quality) if quirk is None else quirk_bytes(quirk, img, jpeg_quality)
        _write(root / sub / name, data)
        if quirk is not None:
            tree.quirk_files[quirk].append(str(root / sub / name))
        val_labels.append(wnids[label])
    tree.num_val = len(val_items)
    _write_label_files(root, label_files, wnids, ids, val_labels, rng)
    return tree


def _check_options(val_layout: str, quirks: Sequence[str], label_files: Sequence[str]) -> None:
    if val_layout not in ("sorted", "flat"):
        raise ValueError(f"val_layout must be 'sorted' or 'flat', got {val_layout!r}")
    for name in quirks:
        if name not in QUIRKS:
            raise ValueError(f"unknown quirk {name!r}; valid: {', '.join(QUIRKS)}")
    for name in label_files:
        if name not in LABEL_FILES:
            raise ValueError(f"unknown label file kind {name!r}; valid: {', '.join(LABEL_FILES)}")
    if val_layout == "flat" and not label_files:
        raise ValueError("a flat val/ needs at least one label file (devkit, devkit_text or kaggle)")


def _write_label_files(
    root: Path,
    kinds: Sequence[str],
    wnids: Sequence[str],
    ids: dict[str, int],
    val_labels: Sequence[str],
    rng: np.random.Generator,
) -> None:
    devkit = root / DEVKIT_DIR
    if "devkit" in kinds or "devkit_text" in kinds:
        devkit.mkdir(parents=True, exist_ok=True)
        (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(
            "".join(f"{ids[w]}\n" for w in val_labels)
        )
    if "devkit" in kinds:  # real meta.mat also lists 860 inner WordNet nodes (num_children > 0)
        from scipy.io import savemat

        rows = [(ids[w], w, f"class {w}", "synthetic", 0) for w in sorted(wnids, key=ids.get)]
        rows += [(len(wnids) + 1 + k, f"n1{k:07d}", "inner node", "synthetic", 2) for k in range(2)]
        fields = [
            ("ILSVRC2012_ID", "f8"),
            ("WNID", "O"),
            ("words", "O"),
            ("gloss", "O"),
            ("num_children", "f8"),
        ]
        buf = io.BytesIO()
        savemat(buf, {"synsets": np.array(rows, dtype=fields)})
        # The 116-byte header text holds the creation time: fixed, so the same arguments write the same files.
        (devkit / "meta.mat").write_bytes(
            b"MATLAB 5.0 MAT-file, bn_inception synthetic".ljust(116) + buf.getvalue()[116:]
        )
    if "devkit_text" in kinds:  # the ILSVRC2014+ devkit's map_clsloc.txt format: wnid, ID, name
        lines = [f"{w} {ids[w]} class_{w}\n" for w in sorted(wnids, key=ids.get)]
        (devkit / "map_clsloc.txt").write_text("".join(lines))
    if "kaggle" in kinds:
        rows = ["ImageId,PredictionString\n"]
        for number, wnid in enumerate(val_labels, start=1):
            x0, y0 = rng.integers(0, 10, size=2)
            rows.append(f"ILSVRC2012_val_{number:08d},{wnid} {x0} {y0} {x0 + 20} {y0 + 20} \n")
        (root / "LOC_val_solution.csv").write_text("".join(rows))
