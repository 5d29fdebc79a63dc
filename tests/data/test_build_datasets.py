"""build_datasets from the data config files: every key is accepted, bad values fail early."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir

from bn_inception import cli
from bn_inception.config import register_configs
from bn_inception.data import DataSplits, build_datasets, imagenet100_classes
from bn_inception.data.build import default_workers
from bn_inception.data.transforms import TrainAugment


def _composed(repo, name: str):
    """bn_inception/configs/data/<name>.yaml as train.py composes it (on its schema, config.py)."""
    register_configs()
    with initialize_config_dir(config_dir=str(repo / "bn_inception" / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"data={name}"]).data


def test_every_value_a_data_config_sets_says_why(repo):
    for path in sorted((repo / "bn_inception" / "configs" / "data").glob("*.yaml")):
        for line in path.read_text().splitlines():
            if line and not line.startswith((" ", "#", "name:", "defaults:")):
                assert "#" in line, f"{path.name}: {line}"


@pytest.mark.parametrize("name", ["imagenet", "imagenet_subset", "synthetic", "fashion_mnist"])
def test_each_data_config_builds_with_all_its_keys(repo, name, make_tree, idx_root, tmp_path, monkeypatch):
    cfg = _composed(repo, name)  # as Hydra passes it (ListConfig values)
    assert cfg.name == name
    overrides = {"input_size": 16}
    if name == "imagenet":
        overrides["root"] = str(make_tree(num_classes=3).root)
    elif name == "imagenet_subset":
        tree = make_tree(
            wnids=imagenet100_classes(), train_per_class=2, val_per_class=1, min_size=16, max_size=20
        )
        overrides.update(root=str(tree.root), images_per_class=1, manifest=str(tmp_path / "manifest.tsv"))
    elif name == "fashion_mnist":
        overrides["root"] = str(idx_root)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        overrides.update(num_classes=3, train_per_class=4, val_per_class=2)
    splits = build_datasets(**{**cfg, **overrides}, seed=0)
    assert isinstance(splits, DataSplits) and splits.name == name and splits.input_size == 16
    assert (
        splits.num_classes == len(splits.classes) and len(splits.mean) == len(splits.std) == splits.in_chans
    )
    workers = cfg.workers if cfg.workers is not None else default_workers()
    assert splits.loader["shuffle"] == cfg.shuffle and splits.loader["workers"] == workers
    x, y = splits.train[0]
    assert x.shape == (splits.in_chans, 16, 16) and x.dtype == torch.uint8 and 0 <= y < splits.num_classes
    assert not splits.decode_on_device  # decode: auto decodes on the CPU when no CUDA device is given
    assert splits.val[0][0].shape == (splits.in_chans, 16, 16)
    if name == "imagenet_subset":
        assert (
            splits.num_classes == 100 and len(splits.train) == 100 and (tmp_path / "manifest.tsv").is_file()
        )
    if name == "synthetic":
        assert len(list((tmp_path / "cache" / "bn_inception" / "synthetic").iterdir())) == 1


def test_training_augmentation_follows_seed_epoch_and_index(idx_root):
    a = build_datasets("fashion_mnist", root=str(idx_root), input_size=28, seed=0)
    b = build_datasets("fashion_mnist", root=str(idx_root), input_size=28, seed=0)
    c = build_datasets("fashion_mnist", root=str(idx_root), input_size=28, seed=1)
    assert torch.equal(a.train[(3, 1)][0], b.train[(3, 1)][0])
    assert not torch.equal(a.train[(3, 1)][0], a.train[(3, 2)][0])
    assert not torch.equal(a.train[(3, 1)][0], c.train[(3, 1)][0])
    assert torch.equal(a.val[3][0], c.val[3][0])  # evaluation is deterministic


def test_augment_false_trains_on_what_evaluation_sees(idx_root):
    """Sec. 4.1's MNIST network sees the digits unchanged: the evaluation crop, no flip or distortion."""
    plain = build_datasets("fashion_mnist", root=str(idx_root), input_size=28, augment=False, seed=0)
    augmented = build_datasets("fashion_mnist", root=str(idx_root), input_size=28, seed=0)
    evaluated = copy.copy(plain.train)
    evaluated.augment = None  # the evaluation transform, applied to the same training images
    for index, epoch in [(0, 0), (3, 1), (7, 5)]:
        assert torch.equal(plain.train[(index, epoch)][0], evaluated[index][0])
        assert not torch.equal(augmented.train[(index, epoch)][0], evaluated[index][0])
    box = TrainAugment(224, (0.08, 1.0), (0.75, 4 / 3), 0.0, 0, random=False).crop_box([0.5] * 30, 375, 500)
    assert box == (23, 86, 328, 328)  # image files: evaluation's centre crop, 375 * 224 / 256 = 328 px


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"name": "cifar"}, "unknown dataset 'cifar'"),
        ({"crop_scale": [0.5, 2.0]}, "at most 1.0"),
        ({"decode": "gpu"}, "data.decode=gpu decodes image files; this dataset is held in memory"),
    ],
)
def test_bad_values_fail_at_build_time(idx_root, bad, message):
    kwargs = {"name": "fashion_mnist", "root": str(idx_root), **bad}
    with pytest.raises(ValueError, match=message):
        build_datasets(**kwargs, seed=0)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.distortion=heavy", "data.distortion=heavy is not valid; use one of: full, reduced, none"),
        ("data.shuffle=thorough", "data.shuffle=thorough is not valid; use one of: global, shard"),
        ("data.decode=nvjpeg", "data.decode=nvjpeg is not valid; use one of: auto, cpu, gpu"),
        ("data.crop_ratio=[1.5,1.0]", "data.crop_ratio=[1.5,1.0] is not valid; give [low, high]"),
        ("data.val_labels=x", "data.val_labels is not a config key"),
    ],
)
def test_values_build_datasets_takes_as_checked_are_refused_by_the_schema(capsys, override, expected):
    """build_datasets does not check these again: the schema refuses them before anything runs."""
    with pytest.raises(SystemExit):
        cli.preflight("train", ["data=fashion_mnist", override])
    assert capsys.readouterr().err.strip().startswith(f"error: {expected}")


def test_decode_gpu_needs_a_cuda_device(make_tree):
    tree = make_tree(num_classes=2)
    with pytest.raises(ValueError, match="data.decode=gpu needs training on a CUDA device"):
        build_datasets("imagenet", root=str(tree.root), input_size=16, decode="gpu", device="cpu")
    splits = build_datasets("imagenet", root=str(tree.root), input_size=16, decode="auto", device="cpu")
    assert not splits.decode_on_device and splits.train.decode_device is None


def test_workers_default_to_what_the_machine_has(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(2)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 1  # 2 cores: one decoding process, not 8
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_workers() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 GPUs' processes share 64 cores
    assert default_workers() == 7
