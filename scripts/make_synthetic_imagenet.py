"""Write a small ImageNet-layout JPEG tree with learnable classes and ImageNet's file quirks.

    python scripts/make_synthetic_imagenet.py /tmp/synth --classes 10 --train-per-class 64 --val-per-class 16
    python scripts/make_synthetic_imagenet.py /tmp/synth-flat --val-layout flat --labels devkit kaggle \\
        --quirks cmyk png_as_jpeg greyscale exif truncated empty not_image --val-quirks cmyk
    python scripts/make_synthetic_imagenet.py /tmp/bench --image-size 500 375 --noise 18   # ImageNet-sized

The tree: root/train/<wnid>/<wnid>_<i>.JPEG; root/val/<wnid>/ILSVRC2012_val_<n>.JPEG (sorted) or
root/val/ILSVRC2012_val_<n>.JPEG (flat) with the devkit's ground truth + meta.mat (or map_clsloc.txt) in
root/ILSVRC2012_devkit_t12/data/ and/or Kaggle's root/LOC_val_solution.csv. Same arguments, same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bn_inception.data.synthetic import LABEL_FILES, QUIRKS, make_synthetic_imagenet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", help="output folder (created)")
    parser.add_argument("--classes", type=int, default=4, help="number of classes")
    parser.add_argument("--train-per-class", type=int, default=8, help="training images per class")
    parser.add_argument("--val-per-class", type=int, default=4, help="validation images per class")
    parser.add_argument("--min-size", type=int, default=32, help="smallest image side, px")
    parser.add_argument("--max-size", type=int, default=64, help="largest image side, px")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        help="fixed size instead (a quarter of the images portrait)",
    )
    parser.add_argument("--val-layout", choices=("sorted", "flat"), default="sorted")
    parser.add_argument(
        "--labels",
        nargs="*",
        choices=LABEL_FILES,
        default=["devkit", "kaggle"],
        help="validation label files to write",
    )
    parser.add_argument("--quirks", nargs="*", choices=QUIRKS, default=[], help="quirk files in train/")
    parser.add_argument("--val-quirks", nargs="*", choices=QUIRKS, default=[], help="quirk files in val/")
    parser.add_argument(
        "--noise", type=float, default=6.0, help="pixel noise std (18 gives ~100 KB 500x375 JPEGs)"
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tree = make_synthetic_imagenet(
        args.root,
        num_classes=args.classes,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        min_size=args.min_size,
        max_size=args.max_size,
        image_size=tuple(args.image_size) if args.image_size else None,
        val_layout=args.val_layout,
        label_files=args.labels,
        quirks=args.quirks,
        val_quirks=args.val_quirks,
        noise=args.noise,
        jpeg_quality=args.quality,
        seed=args.seed,
    )
    counts = f"{tree.num_train} train and {tree.num_val} val images of {len(tree.wnids)} classes"
    print(f"wrote {counts} to {tree.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
