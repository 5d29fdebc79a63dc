"""The tree index: listed once and read after; rebuilt with one log line when the tree changes or the file is
damaged; one listing however many processes start at once; ranks check they hold the same dataset."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from bn_inception.data import build_datasets
from bn_inception.data import index as tree_index
from bn_inception.data.imagenet import DatasetLayoutError

INDEX_LOGGER = "bn_inception.data.index"


def _age(root, seconds: float = 3600.0) -> None:
    """Date every folder of the tree an hour back: a listing then trusts their times alone."""
    then = time.time_ns() - int(seconds * 1e9)
    for folder, _, _ in os.walk(root):
        os.utime(folder, ns=(then, then))


def _build(root, **kwargs):
    return build_datasets("imagenet", root=str(root), input_size=16, seed=0, **kwargs)


def _contents(splits) -> tuple:
    return (
        list(splits.train.paths),
        splits.train.labels.tolist(),
        list(splits.val.paths),
        splits.val.labels.tolist(),
        splits.classes,
    )


def _index_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == INDEX_LOGGER and r.levelno >= logging.INFO]


@pytest.fixture
def count_listings(monkeypatch):
    """How many times the whole tree is listed, and how many folders are read, from now on."""
    counts = {"trees": 0, "folders": 0}
    list_tree, scandir = tree_index.list_imagenet_tree, os.scandir

    def listing(*args, **kwargs):
        counts["trees"] += 1
        return list_tree(*args, **kwargs)

    def counted_scandir(path="."):
        counts["folders"] += 1
        return scandir(path)

    monkeypatch.setattr(tree_index, "list_imagenet_tree", listing)
    monkeypatch.setattr(os, "scandir", counted_scandir)
    return counts


def test_a_second_start_reads_the_index_and_lists_nothing(make_tree, count_listings, caplog):
    tree = make_tree(num_classes=4, train_per_class=3, val_per_class=2)
    _age(tree.root)
    with caplog.at_level(logging.INFO, logger=INDEX_LOGGER):
        first = _build(tree.root)
        assert count_listings["trees"] == 1 and len(_index_lines(caplog)) == 1
        assert "no tree index of" in _index_lines(caplog)[0]
        caplog.clear()
        count_listings["folders"] = 0
        second = _build(tree.root)
    assert count_listings == {"trees": 1, "folders": 0} and _index_lines(caplog) == []
    elsewhere = _build(tree.root, index=str(tree.root / "x.idx"))
    assert _contents(second) == _contents(first) == _contents(elsewhere)
    assert len(first.train) == 12 and first.num_classes == 4


def _add_file(root, wnids):
    folder = root / "train" / wnids[1]
    shutil.copy(next(folder.iterdir()), folder / "added.JPEG")
    return folder


def _remove_file(root, wnids):
    folder = root / "val" / wnids[2]
    next(folder.iterdir()).unlink()
    return folder


def _rename_file(root, wnids):
    folder = root / "train" / wnids[0]
    first = next(folder.iterdir())
    first.rename(folder / "renamed.JPEG")
    return folder


def _add_class(root, wnids):
    for split in ("train", "val"):
        (root / split / "n09999999").mkdir()
        shutil.copy(next((root / split / wnids[0]).iterdir()), root / split / "n09999999" / "a.JPEG")
    return root / "train"


@pytest.mark.parametrize("change", [_add_file, _remove_file, _rename_file, _add_class])
@pytest.mark.parametrize("same_tick", [False, True], ids=["new-time", "time-unchanged"])
def test_the_index_is_rebuilt_when_the_tree_changes(make_tree, caplog, change, same_tick):
    tree = make_tree(num_classes=3, train_per_class=3, val_per_class=2)
    if not same_tick:
        _age(tree.root)  # the folder's new time alone shows the change
    _build(tree.root)
    folders = [tree.root / s for s in ("train", "val")]
    folders += [tree.root / s / c for s in ("train", "val") for c in tree.wnids]
    times = {p: os.stat(p).st_mtime_ns for p in folders}
    changed = change(tree.root, tree.wnids)
    if same_tick:  # a change within the filesystem's timestamp resolution leaves the time as it was
        os.utime(changed, ns=(times[changed], times[changed]))
        assert os.stat(changed).st_mtime_ns == times[changed]
    with caplog.at_level(logging.INFO, logger=INDEX_LOGGER):
        rebuilt = _build(tree.root)
    lines = _index_lines(caplog)
    assert len(lines) == 1 and "is stale" in lines[0] and "listing" in lines[0], lines
    fresh = _build(tree.root, index=str(tree.root.parent / "fresh.idx"))
    assert _contents(rebuilt) == _contents(fresh)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut short (a crash mid-copy, a full disk)
        lambda data: data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],  # one byte changed
        lambda data: b"",
        lambda data: b"not an index\n" * 20,
    ],
    ids=["truncated", "flipped-byte", "empty", "garbage"],
)
def test_a_corrupt_index_is_rebuilt_not_trusted(make_tree, tmp_path, caplog, damage):
    tree = make_tree(num_classes=3, train_per_class=4)
    path = tmp_path / "tree.idx"
    good = _contents(_build(tree.root, index=str(path)))
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.INFO, logger=INDEX_LOGGER):
        assert _contents(_build(tree.root, index=str(path))) == good
    lines = _index_lines(caplog)
    assert len(lines) == 1 and "corrupt" in lines[0], lines
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=INDEX_LOGGER):
        _build(tree.root, index=str(path))
    assert _index_lines(caplog) == []  # rewritten whole


def test_an_index_of_another_tree_at_the_given_path_is_replaced(make_tree, tmp_path, caplog):
    one, two = make_tree("one", num_classes=2), make_tree("two", num_classes=3)
    path = tmp_path / "shared.idx"
    _build(one.root, index=str(path))
    with caplog.at_level(logging.INFO, logger=INDEX_LOGGER):
        splits = _build(two.root, index=str(path))
    assert splits.num_classes == 3 and "built for other settings" in _index_lines(caplog)[0]


def test_an_unwritable_index_folder_is_one_line(make_tree, tmp_path):
    tree = make_tree(num_classes=2)
    (tmp_path / "file").write_text("")
    with pytest.raises(
        DatasetLayoutError, match=r"^cannot create the folder .*file for the tree index: .*data.index"
    ):
        _build(tree.root, index=str(tmp_path / "file" / "tree.idx"))


def test_an_index_path_inside_the_tree_or_a_folder_is_refused_and_the_tree_left_alone(make_tree, tmp_path):
    tree = make_tree(num_classes=2)
    before = sorted(str(p) for p in Path(tree.root).rglob("*"))
    typo = Path(tree.root) / "train" / "n99999999" / "tree.idx"  # it made this class folder, empty, for good
    with pytest.raises(DatasetLayoutError, match="is inside the train/ or val/ folders it indexes"):
        _build(tree.root, index=str(typo))
    with pytest.raises(DatasetLayoutError, match="is a folder; give a file path"):
        _build(tree.root, index=str(tmp_path))
    assert sorted(str(p) for p in Path(tree.root).rglob("*")) == before


def test_a_full_disk_for_the_index_is_one_line_and_leaves_no_part(make_tree, tmp_path, repo):
    tree = make_tree(num_classes=2)
    code = (
        "import resource, signal, sys\n"
        "from bn_inception.data import build_datasets\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))  # files stop growing at 300 bytes\n"
        "try:\n    build_datasets('imagenet', root=sys.argv[1], input_size=16, seed=0, index=sys.argv[2])\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    index = tmp_path / "idx" / "tree.idx"
    out = subprocess.run([sys.executable, "-c", code, str(tree.root), str(index)], cwd=repo,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.stdout.startswith(f"DatasetLayoutError cannot write the tree index {index}: File too large;")
    assert sorted(p.name for p in index.parent.iterdir()) == []  # no partial index, no lock left


# ---- many processes


def _start_together(barrier, root, out, delay: float) -> None:
    real = tree_index.list_imagenet_tree

    def slow_listing(*args, **kwargs):  # hold the lock long enough for every process to meet it
        with open(out / "listings", "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(delay)
        return real(*args, **kwargs)

    tree_index.list_imagenet_tree = slow_listing
    barrier.wait()
    splits = _build(root)
    (out / f"{os.getpid()}.txt").write_text("\n".join(splits.train.paths))


def test_processes_starting_together_list_the_tree_once(make_tree, tmp_path):
    tree = make_tree(num_classes=3, train_per_class=4)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_start_together, args=(barrier, tree.root, tmp_path, 1.0)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len((tmp_path / "listings").read_text().split()) == 1
    seen = {p.read_text() for p in tmp_path.glob("*.txt")}
    assert len(seen) == 1 and len(next(iter(seen)).split("\n")) == 12


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("holder", ["dead-process-here", "silent-process-elsewhere"])
def test_a_stale_lock_is_taken_over(make_tree, tmp_path, caplog, holder):
    tree = make_tree(num_classes=2)
    path = tmp_path / "tree.idx"
    lock = tmp_path / "tree.idx.lock"
    record = {"host": socket.gethostname(), "pid": _dead_pid(), "started": time.time(), "token": "theirs"}
    if holder == "silent-process-elsewhere":  # a live-looking holder on another host whose heartbeat stopped
        record.update(host="other-node", pid=1)
    lock.write_text(json.dumps(record))
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    started = time.monotonic()
    with caplog.at_level(logging.INFO):
        assert len(_build(tree.root, index=str(path)).train) == len(_build(tree.root).train)
    assert time.monotonic() - started < 20 and not lock.exists()
    assert "taking over the lock" in caplog.text


def _rank(rank: int, rendezvous: str, roots: list, out) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        splits = _build(roots[rank])
        (out / f"rank{rank}").write_text("ok " + str(len(splits.train)))
    except DatasetLayoutError as e:
        (out / f"rank{rank}").write_text(str(e))
    finally:
        dist.destroy_process_group()


def _run_ranks(roots, out) -> list[str]:
    out.mkdir()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_rank, args=(r, str(out / "rdzv"), roots, out)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    return [(out / f"rank{r}").read_text() for r in range(2)]


def test_ranks_agree_on_the_dataset_or_stop(make_tree, tmp_path):
    tree = make_tree(num_classes=2, train_per_class=3)
    assert _run_ranks([tree.root, tree.root], tmp_path / "same") == ["ok 6", "ok 6"]
    copy = tmp_path / "copy"
    shutil.copytree(tree.root, copy)  # the same files mounted elsewhere (another node's local disk)
    assert _run_ranks([tree.root, copy], tmp_path / "copies") == ["ok 6", "ok 6"]
    _add_file(copy, tree.wnids)
    results = _run_ranks([tree.root, copy], tmp_path / "different")
    for text in results:
        assert text.startswith("ranks disagree on the tree at ") and "rank 1 on" in text and "\n" not in text


def test_the_cache_folder_forgets_trees_that_are_gone(make_tree, tmp_path):
    one, two = make_tree("one", num_classes=2), make_tree("two", num_classes=2)
    _build(one.root), _build(two.root)
    folder = tmp_path / "cache" / "bn_inception" / "index"
    assert sorted(p.name.split("-")[0] for p in folder.glob("*.idx")) == ["one", "two"]
    shutil.rmtree(one.root)
    _build(make_tree("three", num_classes=2).root)  # writing a new index prunes the orphans
    assert sorted(p.name.split("-")[0] for p in folder.glob("*.idx")) == ["three", "two"]
