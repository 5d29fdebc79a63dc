"""Loaders: shuffling regimes, exact mid-epoch resume, ranks, fixed shapes, unreadable-image accounting."""

from __future__ import annotations

import logging
import os
import signal
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from bn_inception.data import build_datasets, build_eval_loader, build_train_loader
from bn_inception.data.datasets import InMemoryImageDataset
from bn_inception.data.loader import epoch_order
from bn_inception.data.transforms import TrainAugment
from tests.conftest import child_processes


def _memory_dataset(n: int = 100, seed: int = 0) -> InMemoryImageDataset:
    images = torch.randint(
        0, 256, (n, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )
    ds = InMemoryImageDataset(images, torch.arange(n) % 5, list("abcde"), 8, (0.5,), (0.25,))
    ds.augment = TrainAugment(8, (0.35, 1.0), (3 / 4, 4 / 3), 1.0, seed)
    return ds


def _take(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(loader) for _ in range(n)]


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_global_order_is_a_fresh_permutation_each_epoch():
    a, b = epoch_order(1000, 0, seed=3), epoch_order(1000, 1, seed=3)
    assert sorted(a) == list(range(1000)) and not np.array_equal(a, b)
    assert np.array_equal(a, epoch_order(1000, 0, seed=3))


def _together(order: np.ndarray, batch: int) -> set[tuple[int, int]]:
    pairs = set()
    for start in range(0, len(order) - batch + 1, batch):
        members = sorted(order[start : start + batch].tolist())
        pairs.update((x, y) for i, x in enumerate(members) for y in members[i + 1 :])
    return pairs


def test_shard_shuffling_keeps_examples_together_across_epochs():
    n, batch = 4096, 32
    for shuffle, lo, hi in (("shard", 0.05, 1.0), ("global", 0.0, 0.02)):
        e0 = epoch_order(n, 0, 0, shuffle, shard_size=1024, shuffle_buffer=128)
        e1 = epoch_order(n, 1, 0, shuffle, shard_size=1024, shuffle_buffer=128)
        assert sorted(e0) == list(range(n))
        again = len(_together(e0, batch) & _together(e1, batch)) / len(_together(e0, batch))
        assert lo <= again <= hi, (shuffle, again)
    # No buffer: each mini-batch is the same group of examples every epoch (the paper's "always together").
    e0, e1 = (epoch_order(n, e, 0, "shard", shard_size=1024, shuffle_buffer=1) for e in (0, 1))
    assert _together(e0, batch) == _together(e1, batch)


def test_loader_is_infinite_with_fixed_batch_shape_and_epochs_chained():
    loader = build_train_loader(_memory_dataset(100), batch_size=16, workers=0)
    assert len(loader) == 6  # drop_last: 100 // 16
    batches = _take(loader, 13)
    assert all(x.shape == (16, 1, 8, 8) and y.shape == (16,) for x, y in batches)
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["position"] == 1
    epoch0 = torch.cat([y for _, y in batches[:6]])
    assert len(set(epoch0.tolist())) <= 5 and not torch.equal(batches[0][0], batches[6][0])


@pytest.mark.parametrize("shuffle", ["global", "shard"])
@pytest.mark.parametrize("stop", [4, 6])  # mid-epoch, and exactly at an epoch boundary
def test_resume_mid_epoch_equals_an_uninterrupted_run(shuffle, stop):
    kwargs = dict(batch_size=16, shuffle=shuffle, seed=1, workers=0, shard_size=32, shuffle_buffer=8)
    full = _take(build_train_loader(_memory_dataset(100, seed=1), **kwargs), 15)
    first = build_train_loader(_memory_dataset(100, seed=1), **kwargs)
    head = _take(first, stop)
    state = first.state_dict()
    resumed = build_train_loader(_memory_dataset(100, seed=1), **kwargs)
    resumed.load_state_dict(state)
    _assert_same(head + _take(resumed, 15 - stop), full)


def test_resume_with_worker_processes_ignores_what_they_prefetched(make_tree):
    tree = make_tree(num_classes=3, train_per_class=12)
    splits = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=2)
    kwargs = dict(batch_size=8, seed=2, workers=2, prefetch_factor=4)
    reference = _take(build_train_loader(splits.train, batch_size=8, seed=2, workers=0), 9)
    loader = build_train_loader(splits.train, **kwargs)
    head = _take(loader, 3)  # workers have prefetched further than this
    state = loader.state_dict()
    assert (state["epoch"], state["position"]) == (0, 3)
    loader.load_state_dict(state)  # the same loader, restarted in place
    middle = _take(loader, 2)
    other = build_train_loader(splits.train, **kwargs)
    other.load_state_dict(loader.state_dict())
    _assert_same(head + middle + _take(other, 4), reference)
    loader.close()
    other.close()


def test_state_of_a_different_configuration_is_refused():
    loader = build_train_loader(_memory_dataset(), batch_size=16, workers=0)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="batch_size=16 but this loader has 8"):
        build_train_loader(_memory_dataset(), batch_size=8, workers=0).load_state_dict(state)


def test_ranks_split_each_epoch_without_overlap():
    ds = _memory_dataset(100)
    loaders = [build_train_loader(ds, batch_size=8, workers=0, rank=r, world_size=3) for r in range(3)]
    assert {len(x) for x in loaders} == {4}  # 100 // (8 * 3)
    orders = [x.rank_order(0) for x in loaders]
    assert set.intersection(*(set(o.tolist()) for o in orders)) == set()
    assert sorted(np.concatenate(orders)) == sorted(epoch_order(100, 0, 0)[:96])
    with pytest.raises(ValueError, match="rank must be in"):
        build_train_loader(ds, batch_size=8, workers=0, rank=3, world_size=3)


def test_unreadable_images_are_replaced_counted_and_logged_once(make_tree, caplog):
    tree = make_tree(num_classes=3, train_per_class=8, quirks=("truncated", "empty", "not_image", "cmyk"))
    splits = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=0)
    loader = build_train_loader(splits.train, batch_size=9, workers=0, max_bad_fraction=0.2)
    with caplog.at_level(logging.WARNING, logger="bn_inception.data.loader"):
        batches = _take(loader, 2 * len(loader))  # two epochs: every file met twice
    assert all(x.shape == (9, 3, 16, 16) and x.dtype == torch.uint8 for x, _ in batches)
    bad = sorted(p for q in ("truncated", "empty", "not_image") for p in tree.quirk_files[q])
    assert sorted(loader.bad_files) == bad
    assert loader.skipped_images == 3  # distinct files, however often met
    assert loader.skips >= 6  # every time one was met: each file at least once an epoch
    warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warned) == 3 and all(any(p in w for w in warned) for p in bad)
    resumed = build_train_loader(splits.train, batch_size=9, workers=0, max_bad_fraction=0.2)
    resumed.load_state_dict(loader.state_dict())
    assert (resumed.skipped_images, resumed.skips) == (3, loader.skips)


def test_bad_fraction_is_distinct_bad_files_over_distinct_images(make_tree):
    """12 bad files of 32 are 37.5% of the set, however often the replacement draws meet them again."""
    tree = make_tree(num_classes=4, train_per_class=5, quirks=("truncated", "empty", "not_image") * 4)
    splits = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=0)
    within = build_train_loader(splits.train, batch_size=4, workers=0, max_bad_fraction=0.45)
    _take(within, 3 * len(within))
    assert within.skipped_images == 12 and within.skips > 3 * 12  # replacements meet bad files too
    over = build_train_loader(splits.train, batch_size=4, workers=0, max_bad_fraction=0.3)
    with pytest.raises(RuntimeError, match=r"^12 of 32 training images were unreadable \(37.50% > "):
        _take(over, 3 * len(over))


def test_too_many_unreadable_images_stop_the_run_with_one_line(make_tree):
    tree = make_tree(num_classes=2, train_per_class=6, quirks=("truncated", "empty"))
    splits = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=0)
    loader = build_train_loader(splits.train, batch_size=7, workers=0, max_bad_fraction=0.01)
    with pytest.raises(
        RuntimeError, match=r"of 14 training images were unreadable .* max_bad_fraction=0.01"
    ) as e:
        _take(loader, 4)
    assert "\n" not in str(e.value)


def test_eval_loader_is_ordered_skips_bad_images_and_honours_limit(make_tree):
    tree = make_tree(num_classes=3, val_per_class=4, val_quirks=("truncated", "cmyk"))
    splits = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=0)
    loader = build_eval_loader(splits.val, batch_size=5, workers=0, max_bad_fraction=0.5)
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == len(splits.val) - 1 and loader.skipped_images == 1
    assert loader.bad_files == tree.quirk_files["truncated"]
    good = [i for i, p in enumerate(splits.val.paths) if p not in tree.quirk_files["truncated"]]
    assert labels.tolist() == splits.val.labels[good].tolist()
    limited = build_eval_loader(splits.val, batch_size=4, workers=0, limit=6, max_bad_fraction=0.5)
    bad_in_first_6 = sum(p in tree.quirk_files["truncated"] for p in splits.val.paths[:6])
    assert len(limited) == 2 and sum(len(y) for _, y in limited) == 6 - bad_in_first_6
    strict = build_eval_loader(splits.val, batch_size=5, workers=0, max_bad_fraction=0.0)
    with pytest.raises(RuntimeError, match="evaluation images were unreadable"):
        list(strict)


def test_eval_loader_takes_a_subset_and_rank_slices():
    ds = InMemoryImageDataset(
        torch.randint(0, 256, (30, 8, 8), dtype=torch.uint8), torch.arange(30), list("x"), 8, (0.5,), (0.25,)
    )
    subset = Subset(ds, range(1, 30, 2))
    labels = torch.cat([y for _, y in build_eval_loader(subset, batch_size=4, workers=0)])
    assert labels.tolist() == list(range(1, 30, 2))
    ranked = [
        torch.cat([y for _, y in build_eval_loader(ds, batch_size=4, workers=0, rank=r, world_size=2)])
        for r in range(2)
    ]
    assert sorted(torch.cat(ranked).tolist()) == list(range(30))


def test_a_plain_dataloader_can_batch_the_datasets():
    ds = _memory_dataset(20)
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 1, 8, 8) and y.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(x[2], ds[2][0])  # the batched path equals the per-sample one


class _FailingDataset:
    """A dataset whose batches fail with a reason the user must see."""

    def __len__(self) -> int:
        return 8

    def load_batch(self, keys, on_bad="substitute"):
        raise OSError(f"cannot read /data/shard{len(keys)}.tar: Input/output error")


@pytest.mark.parametrize("which", ["train", "eval"])
def test_an_error_in_a_loader_worker_comes_back_with_its_reason_first(which):
    build = build_train_loader if which == "train" else build_eval_loader
    loader = build(_FailingDataset(), batch_size=4, workers=1)
    with pytest.raises(OSError) as info:
        next(iter(loader))
    loader.close()
    assert str(info.value).splitlines()[0] == "cannot read /data/shard4.tar: Input/output error"
    assert "in a data loader worker" in str(info.value.__cause__)  # and where it happened, for debugging


def test_a_dead_training_set_says_why_from_a_worker(make_tree):
    tree = make_tree(num_classes=2, train_per_class=3)
    for path in (tree.root / "train").rglob("*.JPEG"):
        path.write_bytes(b"")
    splits = build_datasets("imagenet", root=str(tree.root), input_size=16, seed=0)
    loader = build_train_loader(splits.train, batch_size=2, workers=1, max_bad_fraction=1.0)
    with pytest.raises(RuntimeError, match=r"^sample \d+ and its \d+ replacements are all unreadable"):
        next(loader)
    loader.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_workers_leave_stop_signals_to_the_training_process_and_close_stops_them(sig):
    """Ctrl-C in a terminal (SIGINT) and SLURM's SIGTERM reach every process of the job, loader workers
    included: they go on loading while the training process finishes its step and saves, and close()
    stops them (issue 19: a worker ended by Ctrl-C failed the run instead of letting it save)."""
    before = child_processes(os.getpid())
    loader = build_train_loader(_memory_dataset(), batch_size=16, workers=2)
    next(loader)
    workers = child_processes(os.getpid()) - before
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, sig)
    time.sleep(0.5)
    _take(loader, 12)  # more than the workers had prefetched: they are still loading
    loader.close()
    deadline = time.monotonic() + 10
    while child_processes(os.getpid()) & workers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not child_processes(os.getpid()) & workers
