"""scripts/prepare_imagenet.py: sorting a flat val/ into class folders, idempotently, with a count check."""

from __future__ import annotations

import importlib.util
import os

import pytest

from bn_inception.data.imagenet import read_synset_map, scan_imagenet
from bn_inception.data.synthetic import DEVKIT_DIR


@pytest.fixture(scope="module")
def prepare(repo):
    spec = importlib.util.spec_from_file_location(
        "prepare_imagenet", repo / "scripts" / "prepare_imagenet.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def flat(make_tree):
    return make_tree(
        num_classes=4, train_per_class=2, val_per_class=3, val_layout="flat", label_files=("devkit", "kaggle")
    )


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_hard_links_into_another_folder_then_reads_as_sorted(prepare, flat, tmp_path):
    out = tmp_path / "val_sorted"
    labels = flat.root / DEVKIT_DIR / "ILSVRC2012_validation_ground_truth.txt"
    report = prepare.sort_val(flat.root / "val", labels, out=out)
    assert report["mode"] == "link" and report["placed"] == 12 and not report["missing"]
    assert not report["short_classes"] and len(list((flat.root / "val").iterdir())) == 12  # originals kept
    linked = next(out.glob("*/*.JPEG"))
    assert os.stat(linked).st_ino == os.stat(flat.root / "val" / linked.name).st_ino
    _, expected = scan_imagenet(flat.root)
    (flat.root / "val").rename(flat.root / "val_flat")
    out.rename(flat.root / "val")
    _, val = scan_imagenet(flat.root)
    names = {os.path.basename(p): label for p, label in zip(val.paths, val.labels.__iter__(), strict=True)}
    assert names == {
        os.path.basename(p): label for p, label in zip(expected.paths, expected.labels, strict=True)
    }


def test_in_place_move_is_idempotent_and_dry_run_changes_nothing(prepare, flat):
    val = flat.root / "val"
    csv = flat.root / "LOC_val_solution.csv"
    before = _files(val)
    dry = prepare.sort_val(val, csv, dry_run=True)
    assert dry["placed"] == 12 and _files(val) == before
    assert "DRY RUN" in prepare.format_report(dry) and "12 to be moved" in prepare.format_report(dry)
    first = prepare.sort_val(val, csv)
    assert first["mode"] == "move" and first["placed"] == 12
    assert all("/" in f for f in _files(val))  # nothing left flat
    again = prepare.sort_val(val, csv)
    assert again["already"] == 12 and again["placed"] == 0 and not again["missing"]


def test_missing_images_are_reported_and_fail_the_command(prepare, flat, capsys):
    victim = sorted((flat.root / "val").iterdir())[0]
    victim.unlink()
    code = prepare.main([str(flat.root / "val"), "--labels", str(flat.root / "LOC_val_solution.csv")])
    out = capsys.readouterr().out
    assert code == 1
    assert f"missing (1): {victim.stem}" in out and "classes short of images (1)" in out


def test_export_synset_map_writes_a_text_map_the_loader_reads(prepare, flat, tmp_path):
    text = tmp_path / "synsets.txt"
    assert (
        prepare.main(
            ["--export-synset-map", str(text), "--synset-map", str(flat.root / DEVKIT_DIR / "meta.mat")]
        )
        == 0
    )
    assert read_synset_map(text) == read_synset_map(flat.root / DEVKIT_DIR / "meta.mat")
    assert len(text.read_text().splitlines()) == 4
