"""Sort a flat ILSVRC-2012 val/ folder into class folders (val/<wnid>/), and check the result.

    python scripts/prepare_imagenet.py data/imagenet/val --labels LOC_val_solution.csv
    python scripts/prepare_imagenet.py data/imagenet/val \\
        --labels ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt \\
        --synset-map ILSVRC2012_devkit_t12/data/meta.mat --out data/imagenet/val_sorted --mode link
    python scripts/prepare_imagenet.py --export-synset-map synsets.txt --synset-map .../meta.mat

Labels: Kaggle's LOC_val_solution.csv, or the devkit's ground truth with its meta.mat (read without scipy)
or a text map (wnid and ILSVRC2012_ID per line, e.g. the 2014+ devkit's map_clsloc.txt); found next to
the ground truth when not given. ``--export-synset-map`` writes that text map from meta.mat.

Modes: ``move`` (default when sorting in place) or ``link`` (hard links, the default when --out is
another folder; same filesystem only) or ``copy``. Idempotent: images already in their class folder are
counted and left alone, so an interrupted run can be re-run. ``--dry-run`` changes nothing and reports
what would happen. The report ends with the per-class check: every labelled image must be in its class
folder (50 per class for the full set); the exit status is 1 if any is missing.

The training loader reads a flat val/ directly too (data.val_labels): sorting is optional.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bn_inception.data.imagenet import (  # noqa: E402
    SYNSET_MAP_NAMES,
    find_label_file,
    is_image_name,
    list_subdirs,
    read_devkit_val_labels,
    read_kaggle_val_labels,
    read_synset_map,
)

MODES = ("move", "link", "copy")


def load_labels(labels: Path, synset_map: Path | None) -> dict[str, str]:
    """{image stem: wnid} from Kaggle's CSV or the devkit's ground truth + synset map."""
    if labels.suffix.lower() == ".csv":
        return read_kaggle_val_labels(labels)
    if synset_map is None:
        synset_map = find_label_file([labels.parent, labels.parent.parent], SYNSET_MAP_NAMES)
        if synset_map is None:
            raise SystemExit(
                f"{labels.name} holds ILSVRC2012_IDs: pass --synset-map (the devkit's meta.mat or a text map)"
            )
    return read_devkit_val_labels(labels, synset_map)


def _place(src: Path, dest: Path, mode: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "move":
        shutil.move(str(src), str(dest))
    elif mode == "link":
        try:
            os.link(src, dest)
        except OSError as e:
            raise SystemExit(
                f"cannot hard-link {src} -> {dest} ({e.strerror}); use --mode copy or move"
            ) from e
    else:
        shutil.copy2(src, dest)


def _already_sorted(out_dir: Path) -> dict[str, str]:
    """stem -> the wnid folder of ``out_dir`` it already sits in."""
    placed: dict[str, str] = {}
    if out_dir.is_dir():
        for wnid in list_subdirs(str(out_dir)):
            for e in os.scandir(out_dir / wnid):
                if e.is_file() and is_image_name(e.name):
                    placed[os.path.splitext(e.name)[0]] = wnid
    return placed


def sort_val(
    val_dir: str | os.PathLike,
    labels: str | os.PathLike,
    synset_map: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    mode: str | None = None,
    dry_run: bool = False,
    expect_per_class: int | None = None,
) -> dict:
    """Sort ``val_dir``'s flat images into ``out``/<wnid>/; return the report (see the module docstring)."""
    val_dir = Path(val_dir)
    out_dir = Path(out) if out else val_dir
    if not val_dir.is_dir():
        raise SystemExit(f"val folder {val_dir} does not exist")
    mode = mode or ("move" if out_dir.resolve() == val_dir.resolve() else "link")
    if mode not in MODES:
        raise SystemExit(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    stem_to_wnid = load_labels(Path(labels), Path(synset_map) if synset_map else None)

    flat = {
        os.path.splitext(e.name)[0]: e.name
        for e in os.scandir(val_dir)
        if e.is_file() and is_image_name(e.name)
    }
    placed = _already_sorted(out_dir)

    report = {
        "labelled": len(stem_to_wnid),
        "already": 0,
        "placed": 0,
        "missing": [],
        "misplaced": [],
        "unlabelled": sorted(s for s in flat if s not in stem_to_wnid),
        "mode": mode,
        "dry_run": dry_run,
    }
    per_class: Counter[str] = Counter()
    for stem, wnid in sorted(stem_to_wnid.items()):
        if placed.get(stem) == wnid:
            report["already"] += 1
            per_class[wnid] += 1
        elif stem in placed:
            report["misplaced"].append(f"{stem} is in {placed[stem]}/ but labelled {wnid}")
        elif stem in flat:
            if not dry_run:
                _place(val_dir / flat[stem], out_dir / wnid / flat[stem], mode)
            report["placed"] += 1
            per_class[wnid] += 1
        else:
            report["missing"].append(stem)
    expected = Counter(stem_to_wnid.values())
    if expect_per_class is not None:
        expected = Counter({w: expect_per_class for w in expected})
    report["short_classes"] = sorted(
        f"{w}: {per_class[w]}/{n}" for w, n in expected.items() if per_class[w] < n
    )
    report["classes"] = len(expected)
    return report


def format_report(report: dict) -> str:
    verb = {"move": "moved", "link": "linked", "copy": "copied"}[report["mode"]]
    lines = [
        f"{'DRY RUN: ' if report['dry_run'] else ''}{report['labelled']} labelled images in "
        f"{report['classes']} classes: {report['already']} already sorted, {report['placed']} "
        f"{'to be ' + verb if report['dry_run'] else verb}, {len(report['missing'])} missing, "
        f"{len(report['unlabelled'])} unlabelled files left in place"
    ]
    for key, title in (
        ("missing", "missing"),
        ("misplaced", "in the wrong class folder"),
        ("short_classes", "classes short of images"),
        ("unlabelled", "unlabelled"),
    ):
        items = report[key]
        if items:
            lines.append(
                f"{title} ({len(items)}): {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}"
            )
    return "\n".join(lines)


def export_synset_map(synset_map: Path, out: Path) -> int:
    mapping = read_synset_map(synset_map)
    out.write_text("".join(f"{wnid} {ident}\n" for ident, wnid in sorted(mapping.items())))
    print(f"wrote {len(mapping)} ILSVRC2012_ID -> wnid lines to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("val_dir", nargs="?", help="the flat val folder (ILSVRC2012_val_*.JPEG)")
    parser.add_argument("--labels", help="LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt")
    parser.add_argument("--synset-map", help="the devkit's meta.mat or a text map (wnid and ID per line)")
    parser.add_argument("--out", help="where the class folders go (default: the val folder itself)")
    parser.add_argument(
        "--mode", choices=MODES, help="move (default in place), link (default elsewhere) or copy"
    )
    parser.add_argument("--dry-run", action="store_true", help="report what would happen, change nothing")
    parser.add_argument(
        "--expect-per-class", type=int, help="images each class must end with (default: labels)"
    )
    parser.add_argument(
        "--export-synset-map", metavar="OUT", help="write --synset-map (meta.mat) as text, exit"
    )
    args = parser.parse_args(argv)
    if args.export_synset_map:
        if not args.synset_map:
            parser.error("--export-synset-map needs --synset-map (the devkit's meta.mat)")
        return export_synset_map(Path(args.synset_map), Path(args.export_synset_map))
    if not args.val_dir or not args.labels:
        parser.error("give the val folder and --labels")
    report = sort_val(
        args.val_dir, args.labels, args.synset_map, args.out, args.mode, args.dry_run, args.expect_per_class
    )
    print(format_report(report))
    return 1 if report["missing"] or report["misplaced"] or report["short_classes"] else 0


if __name__ == "__main__":
    sys.exit(main())
