"""ImageNet at its real size: start-up time, memory and tree listings of ``build_datasets``, alone and
under ``torchrun``.

Builds (once) an ILSVRC-2012-sized tree of hard links: 1,000 class folders holding 1,281,167 training
images and val/ sorted into the same 1,000 folders with 50,000 images, all links to ``--sources``
generated 500x375 JPEGs (ext4 allows 65,000 links per file: 1.33M links need at least 21 sources). Then,
each in a fresh process (so peak memory is that of one start):

- start-up: ``build_datasets("imagenet", ...)`` with no index (the first start: the tree is listed) and
  with one, each with cold caches (``/proc/sys/vm/drop_caches``, root only) and warm; the peak memory of
  the process above what importing torch, timm and bn_inception cost (``ru_maxrss``); the time to the
  first training batch (8 workers decoding 32 images at 224 px);
- loader workers: ``data.workers=8``, an epoch-equivalent of index reads (every sample's path and label
  read once by the workers, no decoding), the workers' total proportional and unique set sizes (PSS, USS
  from /proc/<pid>/smaps_rollup) after the first batch and after the epoch;
- the same start-up and worker figures under ``torchrun --nproc_per_node=4`` on CPU (gloo), cold and warm;
- tree listings: calls of ``os.scandir`` on train/ in all processes of the node.

``--compare-ref REF`` runs the start-up and torchrun cases with the package as it was at git ``REF`` too
(exported with ``git archive``), for a before/after.

    python benchmarks/imagenet_scale.py --scratch /work/scratch16 --compare-ref 439b1b3
    python benchmarks/imagenet_scale.py --scratch /tmp/inet --classes 100 --val 5000   # a quick look
    python benchmarks/imagenet_scale.py --scratch /work/scratch16 --delete-tree        # clean up after
    python benchmarks/imagenet_scale.py --scratch /tmp/s --classes 4 --train 256 --val 8 --smoke   # runs?
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 1_281_167  # ILSVRC-2012
RESULT = "RESULT "


# ---------------------------------------------------------------------------------------------- the tree


def wnid(label: int) -> str:
    return f"n{10_000_000 + label:08d}"


def make_tree(root: Path, classes: int, train: int, val: int, sources: int) -> dict:
    """The hard-link tree (reused when a previous run made the same one)."""
    settings = {"classes": classes, "train": train, "val": val, "sources": sources}
    marker = root / ".complete.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return {"made_s": None, **settings}
    if root.exists():
        shutil.rmtree(root)
    started = time.perf_counter()
    src = root.parent / f"{root.name}-sources"
    src.mkdir(parents=True, exist_ok=True)
    files = [write_source(src / f"{k}.JPEG", k) for k in range(sources)]
    per_class = [train // classes + (c < train % classes) for c in range(classes)]
    k = 0
    for c in range(classes):
        folder = root / "train" / wnid(c)
        folder.mkdir(parents=True)
        for j in range(per_class[c]):
            os.link(files[k % sources], folder / f"{wnid(c)}_{j}.JPEG")
            k += 1
    for v in range(val):
        folder = root / "val" / wnid(v % classes)
        folder.mkdir(parents=True, exist_ok=True)
        os.link(files[k % sources], folder / f"ILSVRC2012_val_{v + 1:08d}.JPEG")
        k += 1
    marker.write_text(json.dumps(settings))
    return {"made_s": time.perf_counter() - started, **settings}


def write_source(path: Path, k: int) -> str:
    import numpy as np

    sys.path.insert(0, str(REPO))
    from bn_inception.data.synthetic import render_image

    img = render_image(k % 10, 10, 500, 375, np.random.default_rng(k), noise=6.0)
    img.save(path, "JPEG", quality=90)
    return str(path)


# ------------------------------------------------------------------------------------------- measuring


def drop_caches() -> bool:
    """Drop the page cache, dentries and inodes (root only); False when not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> bool:
    """Make the peak resident size (VmHWM) the current one (Linux >= 4.0), so a later peak is the peak of
    what runs in between: importing torch leaves a higher transient peak than its resident size, which
    would hide what comes after it in ``ru_maxrss``."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def smaps(pid: int) -> dict[str, float]:
    """Rss, Pss and Uss (private clean + dirty) of ``pid`` in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        fields[name] = int(value.split()[0]) / 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": uss}


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def workers_memory(pid: int) -> dict[str, float]:
    stats = [smaps(p) for p in children(pid)]
    return {
        "n": len(stats),
        "pss_total": sum(s["pss"] for s in stats),
        "uss_total": sum(s["uss"] for s in stats),
        "rss_max": max((s["rss"] for s in stats), default=0.0),
    }


# ------------------------------------------------------------------------------------- child processes


def count_listings(train_dir: str) -> dict[str, int]:
    """Counts os.scandir calls (all, and of train/ itself: one per listing of the tree)."""
    counts = {"train_listings": 0, "folders_read": 0}
    real = os.scandir

    def scandir(path="."):
        counts["folders_read"] += 1
        if os.path.normpath(os.fspath(path)) == train_dir:
            counts["train_listings"] += 1
        return real(path)

    os.scandir = scandir
    return counts


class IndexReads:
    """The training set as loader workers use it, without decoding: each sample reads its path and label."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def load_batch(self, keys, on_bad="substitute"):
        import torch

        total = 0
        for key in keys:
            i = int(key[0]) if isinstance(key, (tuple, list)) else int(key)
            total += len(self.dataset.paths[i]) + int(self.dataset.labels[i])
        info = {"requested": len(keys), "skipped": 0, "bad_files": []}
        return torch.zeros(1), torch.full((len(keys),), total, dtype=torch.int64), info


def child(mode: str, opts: dict) -> None:
    code = opts["code"]
    sys.path.insert(0, code)
    counts = count_listings(os.path.normpath(os.path.join(opts["root"], "train")))
    started_imports = time.perf_counter()
    import timm  # noqa: F401
    import torch
    import torch.distributed as dist

    import bn_inception  # noqa: F401
    from bn_inception.data import build_datasets, build_train_loader

    torch.set_num_threads(1)
    rank, world = 0, 1
    if mode == "rank":
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    out = {"imports_s": time.perf_counter() - started_imports, "imports_peak_mb": peak_mb(), "load": load()}
    kwargs = {"index": opts["index"]} if opts["index"] else {}
    counts["folders_read"] = 0  # from here on: what build_datasets reads
    out["imports_rss_mb"] = status_mb("VmRSS")
    out["peak_reset"] = reset_peak()
    t0 = time.perf_counter()
    splits = build_datasets("imagenet", root=opts["root"], input_size=224, workers=8, seed=0, **kwargs)
    out["startup_s"] = time.perf_counter() - t0
    out["peak_mb"] = status_mb("VmHWM") if out["peak_reset"] else peak_mb()
    out["peak_above_imports_mb"] = out["peak_mb"] - out["imports_rss_mb"]
    out["after_build"] = smaps(os.getpid())
    out["train"], out["val"] = len(splits.train), len(splits.val)
    out.update(counts)
    if opts.get("first_batch"):
        loader = build_train_loader(splits.train, batch_size=32, workers=opts["workers"], seed=0)
        images, _ = next(loader)
        out["first_batch_s"] = time.perf_counter() - t0
        out["first_batch_shape"] = list(images.shape)
        loader.close()
    if opts.get("epoch"):
        out["workers"] = index_read_epoch(IndexReads(splits.train), opts["workers"], rank, world)
    out["load_end"] = load()
    if mode == "rank":
        everyone = [None] * world
        dist.all_gather_object(everyone, out)
        dist.destroy_process_group()
        if rank == 0:
            print(RESULT + json.dumps(everyone), flush=True)
        return
    print(RESULT + json.dumps(out), flush=True)


def index_read_epoch(dataset: IndexReads, workers: int, rank: int, world: int) -> dict:
    """Workers' memory after their first batch and after this rank's share of an epoch of index reads."""
    from bn_inception.data import build_train_loader

    loader = build_train_loader(dataset, batch_size=256, workers=workers, seed=0, rank=rank, world_size=world)
    next(loader)
    time.sleep(1.0)  # every worker has started and loaded its first batches
    samples = [workers_memory(os.getpid())]
    started = time.perf_counter()
    quarters = {round(len(loader) * q / 4) for q in (1, 2, 3)}
    for b in range(1, len(loader)):
        next(loader)
        if b in quarters:
            samples.append(workers_memory(os.getpid()))
    took = time.perf_counter() - started
    samples.append(workers_memory(os.getpid()))
    loader.close()
    return {
        "batches": len(loader),
        "epoch_s": took,
        "first": samples[0],
        "after_epoch": samples[-1],
        "quarters": samples,
    }


def run_child(mode: str, opts: dict, torchrun: int = 0) -> dict | list:
    script = [str(Path(__file__).resolve()), "--child", mode, "--opts", json.dumps(opts)]
    if torchrun:
        cmd = ["torchrun", "--standalone", f"--nproc_per_node={torchrun}", *script]
    else:
        cmd = [sys.executable, *script]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode or not lines:
        sys.exit(f"{mode} child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads(lines[-1][len(RESULT) :])


# --------------------------------------------------------------------------------------------- the runs


def startup_cases(code: str, root: str, index: str | None, workers: int, repeats: int) -> dict:
    """First start (no index) cold and warm, later starts (index) cold and warm."""
    base = {"code": code, "root": root, "index": index, "workers": workers}
    out = {}

    def fresh():
        if index:
            Path(index).unlink(missing_ok=True)

    fresh()
    dropped = drop_caches()
    out["first_cold"] = run_child("startup", {**base, "first_batch": True})
    out["first_cold"]["caches_dropped"] = dropped
    fresh()
    run_child("startup", base)  # warms the dentry and inode caches
    fresh()
    out["first_warm"] = run_child("startup", {**base, "first_batch": True})
    if index:
        out["later_cold"] = run_child("startup", {**base, "first_batch": True}, 0) if drop_caches() else None
        runs = [run_child("startup", {**base, "first_batch": i == 0}) for i in range(repeats)]
        out["later_warm"] = runs[0]
        out["later_warm"]["startup_s_runs"] = [r["startup_s"] for r in runs]
        out["later_warm"]["startup_s"] = statistics.median(r["startup_s"] for r in runs)
    return out


def torchrun_cases(code: str, root: str, index: str | None, nproc: int, workers: int) -> dict:
    base = {"code": code, "root": root, "index": index, "workers": workers, "epoch": True}
    out = {}
    if index:
        Path(index).unlink(missing_ok=True)
    drop_caches()
    out["cold"] = run_child("rank", {**base, "epoch": False}, torchrun=nproc)
    out["warm"] = run_child("rank", base, torchrun=nproc)
    return out


def export_ref(ref: str, scratch: Path) -> str:
    dest = scratch / f"code-{ref}"
    if not dest.is_dir():
        dest.mkdir(parents=True)
        git = ["git", "-C", str(REPO), "archive", ref, "bn_inception"]
        archive = subprocess.run(git, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return str(dest)


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _startup_rows(code: str, cases: dict) -> list[str]:
    rows = []
    for name, r in cases["startup"].items():
        if r is None:
            continue
        first = f"{r['first_batch_s']:.2f}" if "first_batch_s" in r else ""
        rows.append(
            _row(
                [
                    code,
                    name.replace("_", ", "),
                    f"{r['startup_s']:.2f}",
                    first,
                    f"{r['peak_above_imports_mb']:.0f} (imports {r['imports_rss_mb']:.0f})",
                    r["train_listings"],
                    r["folders_read"],
                    f"{r['load']:.1f}-{r['load_end']:.1f}",
                ]
            )
        )
    return rows


def _workers_cell(runs: list[dict]) -> str:
    """Total PSS of the workers at the start and end of the epoch, and their total USS at 0, 25, 50, 75
    and 100% of it (summed over ranks)."""
    quarters = [r["workers"]["quarters"] for r in runs]
    pss = [sum(q[i]["pss_total"] for q in quarters) for i in (0, -1)]
    uss = [sum(q[i]["uss_total"] for q in quarters) for i in range(len(quarters[0]))]
    n = sum(q[0]["n"] for q in quarters)
    return f"{n} workers: PSS {pss[0]:.0f} -> {pss[1]:.0f} MB; USS {', '.join(f'{u:.0f}' for u in uss)} MB"


def summary(results: dict) -> str:
    """Markdown tables of the figures (what docs/benchmarks.md shows)."""
    lines = [
        _row(
            [
                "code",
                "start",
                "build_datasets s",
                "to first batch s",
                "peak MB above imports",
                "train/ listings",
                "folders read",
                "load",
            ]
        ),
        _row(["---"] * 8),
    ]
    for code, cases in results["codes"].items():
        lines += _startup_rows(code, cases)
    lines += [
        "",
        _row(
            [
                "code",
                "case",
                "start-up s per rank",
                "peak MB above imports per rank",
                "train/ listings on the node",
                "loader workers over an epoch of index reads",
                "load",
            ]
        ),
        _row(["---"] * 7),
    ]
    for code, cases in results["codes"].items():
        lines.append(
            _row(
                [
                    code,
                    "1 process",
                    "",
                    "",
                    "",
                    _workers_cell([cases["workers"]]),
                    f"{cases['workers']['load']:.1f}",
                ]
            )
        )
        for name, ranks in cases.get("torchrun", {}).items():
            lines.append(
                _row(
                    [
                        code,
                        f"torchrun x{len(ranks)}, {name}",
                        ", ".join(f"{r['startup_s']:.2f}" for r in ranks),
                        ", ".join(f"{r['peak_above_imports_mb']:.0f}" for r in ranks),
                        sum(r["train_listings"] for r in ranks),
                        _workers_cell(ranks) if "workers" in ranks[0] else "",
                        f"{ranks[0]['load']:.1f}",
                    ]
                )
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scratch", type=Path, default=Path("/tmp/imagenet_scale"), help="tree, index, results")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--train", type=int, default=TRAIN_IMAGES, help="training images in all")
    p.add_argument("--val", type=int, default=50_000)
    p.add_argument("--sources", type=int, default=64, help="distinct JPEG files the links point to")
    p.add_argument("--workers", type=int, default=8, help="data.workers")
    p.add_argument("--nproc", type=int, default=4, help="torchrun --nproc_per_node (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="warm start-ups timed (median)")
    p.add_argument("--compare-ref", default=None, help="also measure the package at this git ref")
    p.add_argument("--delete-tree", action="store_true", help="delete the scratch folder and exit")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="one warm start and its epoch of index reads (>= 256 training images), no cache dropping, no "
        "torchrun: the test suite's check that the script runs; its figures mean nothing",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--opts", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, json.loads(args.opts))
    if args.delete_tree:
        shutil.rmtree(args.scratch, ignore_errors=True)
        return
    args.scratch.mkdir(parents=True, exist_ok=True)
    root = args.scratch / "imagenet"
    tree = make_tree(root, args.classes, args.train, args.val, args.sources)
    print(f"tree: {tree}", flush=True)
    codes = {"this checkout": str(REPO)}
    if args.compare_ref:
        codes[args.compare_ref] = export_ref(args.compare_ref, args.scratch)
    results = {"tree": tree, "cpus": os.cpu_count(), "codes": {}}
    for name, code in codes.items():
        index = str(args.scratch / "index" / "imagenet.idx") if code == str(REPO) else None
        base = {"code": code, "root": str(root), "index": index, "workers": args.workers, "epoch": True}
        if args.smoke:  # one child: a warm start, its first batch and the epoch of index reads
            smoke = run_child("startup", {**base, "first_batch": True})
            results["codes"][name] = {"startup": {"warm": smoke}, "workers": smoke}
            continue
        cases = {"startup": startup_cases(code, str(root), index, args.workers, args.repeats)}
        print(f"{name}: start-up measured", flush=True)
        cases["workers"] = run_child("startup", base)
        print(f"{name}: workers measured", flush=True)
        if args.nproc:
            cases["torchrun"] = torchrun_cases(code, str(root), index, args.nproc, args.workers)
            print(f"{name}: torchrun measured", flush=True)
        results["codes"][name] = cases
        (args.scratch / "results.json").write_text(json.dumps(results, indent=1))
    index_file = args.scratch / "index" / "imagenet.idx"
    results["index_mb"] = index_file.stat().st_size / 2**20 if index_file.exists() else None
    (args.scratch / "results.json").write_text(json.dumps(results, indent=1))
    print(summary(results))
    print(f"index file: {results.get('index_mb')} MB; all figures in {args.scratch / 'results.json'}")


if __name__ == "__main__":
    main()
