"""Training-pipeline throughput: bn_inception.data vs torchvision ImageFolder + RandomResizedCrop (PIL).

    python benchmarks/data_throughput.py                      # 224 px, 2 workers, 512 JPEGs of 500x375
    python benchmarks/data_throughput.py --input-size 128 --workers 4 --repeats 5

Both pipelines read the same generated ImageNet-sized JPEGs (500x375, a quarter portrait, noise added so
files are ~100 KB like ImageNet's ~110 KB average), with the same workers, batch size and output size:

- baseline: ``ImageFolder`` + ``RandomResizedCrop(size)`` + ``RandomHorizontalFlip`` + ``ToTensor`` +
  ``Normalize``, ``DataLoader(shuffle=True, drop_last=True, persistent_workers=True)``: float32
  normalised batches;
- ours: ``build_datasets`` on train.py's ``data=imagenet`` config + ``build_train_loader`` with
  ``distortion=none`` (the same work as the baseline) and ``distortion=full`` (plus the Sec. 4.2.1 colour
  distortions): uint8 batches, normalised on the training device by ``to_model_input`` (on a GPU one
  fused kernel; its CPU cost is printed separately).

Runs alternate between pipelines and the median of ``--repeats`` timings is reported. Per-core throughput
is images per CPU-second of the loader's processes (workers + main, from /proc), which stays put when
other processes share the cores; wall-clock images/s is shown too. Equivalence of the
outputs: per-channel mean/std of the output pixels and mean |horizontal gradient| over one epoch of each
pipeline (a resampling-sharpness check), ours after ``to_model_input`` with the same mean/std, quantiles of
the crop area fraction, and the same crop boxes pushed through both resamplers (pixel difference,
sharpness ratio, how many were decoded at reduced JPEG scale). Prints a self-contained Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bn_inception.cli import compose  # noqa: E402
from bn_inception.data import (  # noqa: E402
    build_datasets,
    build_train_loader,
    make_synthetic_imagenet,
    to_model_input,
)
from bn_inception.data.build import cache_dir  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BASELINE_STEP = "baseline: ImageFolder loader + RRC + flip + ToTensor + Normalize"
NORMALISE_STEP = "ours: to_model_input on the CPU (on a GPU: one fused kernel there, not in the workers)"


def make_images(folder: Path, count: int, noise: float, quality: int) -> Path:
    if not (folder / "train").is_dir():
        classes = 8
        make_synthetic_imagenet(
            folder,
            num_classes=classes,
            train_per_class=max(1, count // classes),
            val_per_class=1,
            image_size=(500, 375),
            noise=noise,
            jpeg_quality=quality,
            label_files=(),
        )
    return folder


class _RecordingCrop(T.RandomResizedCrop):
    """RandomResizedCrop that remembers the area fraction of each crop (for the distribution check)."""

    areas: list[float] = []

    def forward(self, img):
        top, left, h, w = self.get_params(img, self.scale, self.ratio)
        width, height = img.size
        self.areas.append(h * w / (width * height))
        return T.functional.resized_crop(img, top, left, h, w, self.size, self.interpolation, antialias=True)


def baseline_loader(root: Path, size: int, batch_size: int, workers: int) -> DataLoader:
    transform = T.Compose(
        [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    dataset = torchvision.datasets.ImageFolder(str(root / "train"), transform)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )


def _epochs(loader: DataLoader):
    while True:
        yield from loader


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live children (the loader workers), from /proc.

    Images per CPU-second is the per-core throughput, and unlike wall time it does not move when other
    processes take the cores.
    """
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == me or int(fields[1]) == me:  # fields[1] is the parent pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def time_batches(batches, count: int, warmup: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) over ``count`` batches, after ``warmup`` untimed
    ones that drain whatever the workers prefetched while another pipeline was being timed."""
    for _ in range(warmup):
        next(batches)
    start, start_cpu = time.perf_counter(), cpu_seconds()
    images = 0
    for _ in range(count):
        x, _ = next(batches)
        images += len(x)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    time.sleep(1.0)  # let this pipeline's workers finish their prefetch before the next one is timed
    return images / wall, images / max(cpu, 1e-9)


def model_input(x: torch.Tensor) -> torch.Tensor:
    """What the model receives: ours (uint8) normalised by to_model_input; the baseline's is already."""
    return to_model_input(x, MEAN, STD, "cpu") if x.dtype == torch.uint8 else x


def epoch_stats(batches, count: int) -> dict[str, str]:
    """Per-channel mean/std of the model inputs (de-normalised back to [0, 1]) and mean |horizontal
    gradient| over ``count`` batches: one epoch, so both pipelines are measured on the same images."""
    total, total_sq, grad, pixels = (
        torch.zeros(3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
        0.0,
        0,
    )
    for _ in range(count):
        x, _ = next(batches)
        x = model_input(x).double() * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        grad += (x[..., 1:] - x[..., :-1]).abs().mean().item() / count
        pixels += x.numel() // 3
    mean = total / pixels
    std = (total_sq / pixels - mean * mean).sqrt()
    return {
        "mean": "/".join(f"{v:.3f}" for v in mean.tolist()),
        "std": "/".join(f"{v:.3f}" for v in std.tolist()),
        "grad": f"{grad:.4f}",
    }


def crop_quantiles(areas: list[float]) -> str:
    return "/".join(f"{q:.2f}" for q in np.quantile(areas, [0.1, 0.5, 0.9]))


def baseline_crop_areas(root: Path, size: int, samples: int) -> list[float]:
    crop = _RecordingCrop(size)
    crop.areas = []
    dataset = torchvision.datasets.ImageFolder(str(root / "train"), crop)
    for i in range(samples):
        dataset[i % len(dataset)]
    return crop.areas


def our_crop_areas(splits, samples: int) -> list[float]:
    train = splits.train
    areas = []
    for i in range(samples):
        index = i % len(train)
        with PIL.Image.open(train.paths[index]) as img:
            width, height = img.size
        u = train.augment.draws(i // len(train), [index])
        _, _, h, w = train.augment.crop_box(u[0].tolist(), height, width)
        areas.append(h * w / (width * height))
    return areas


def single_core_breakdown(
    root: Path, splits: dict, size: int, batch_size: int, repeats: int
) -> dict[str, float]:
    """Per-image cost of each pipeline and of decoding alone, on one core, without loader overheads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    transform = T.Compose(
        [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    baseline = torchvision.datasets.ImageFolder(str(root / "train"), transform)
    paths = [p for p, _ in baseline.samples][: 4 * batch_size]

    def decode(path):
        with PIL.Image.open(path) as img:
            img.load()

    ready = [splits["none"].train.load_batch([(j, 0) for j in range(batch_size)])[0]] * (
        len(paths) // batch_size
    )

    steps = {
        BASELINE_STEP: lambda: [baseline[i] for i in range(len(paths))],
        "ours, distortion=none (per image of a batch)": lambda: [
            splits["none"].train.load_batch([(j, 0) for j in range(b, b + batch_size)])
            for b in range(0, len(paths), batch_size)
        ],
        "ours, distortion=full (per image of a batch)": lambda: [
            splits["full"].train.load_batch([(j, 0) for j in range(b, b + batch_size)])
            for b in range(0, len(paths), batch_size)
        ],
        "Pillow full-size JPEG decode alone": lambda: [decode(p) for p in paths],
        NORMALISE_STEP: lambda: [to_model_input(x, MEAN, STD, "cpu") for x in ready],
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, run in steps.items():
            start = time.process_time()  # CPU time of this (single-threaded) process
            run()
            times[name].append((time.process_time() - start) * 1e3 / len(paths))
    torch.set_num_threads(threads)
    return {name: statistics.median(v) for name, v in times.items()}


def resampling_agreement(splits: dict, size: int, samples: int = 64) -> dict[str, float]:
    """The same crop boxes through the baseline (Pillow decode + torchvision resized_crop on PIL) and ours
    (reduced-scale decode where allowed + torch's uint8 antialiased resize): how far apart the pixels are."""
    from torchvision.transforms import functional as TF

    from bn_inception.data.decode import load_image_region
    from bn_inception.data.transforms import resize_square

    train = splits["none"].train
    diffs, grads, reduced = [], [], 0
    for index in range(min(samples, len(train))):
        u = train.augment.draws(0, [index])
        with PIL.Image.open(train.paths[index]) as img:
            width, height = img.size
            box = list(train.augment.crop_box(u[0].tolist(), height, width))
            ref = np.asarray(TF.resized_crop(img.convert("RGB"), *box, [size, size]), dtype=np.float64)
        tensor, (top, left, h, w) = load_image_region(
            train.paths[index], lambda h, w, box=box: box, lambda h, w: (size, size)
        )
        reduced += tensor.shape[2] < width  # rows below the crop may be left out; columns only by scale
        top, left, h, w = round(top), round(left), round(h), round(w)
        ours = resize_square(tensor[:, top : top + h, left : left + w], size)
        ours = ours.permute(1, 2, 0).numpy().astype(np.float64)
        diffs.append(np.abs(ours - ref).mean())
        grads.append(np.abs(np.diff(ours, axis=1)).mean() / np.abs(np.diff(ref, axis=1)).mean())
    return {"diff": float(np.mean(diffs)), "grad": float(np.mean(grads)), "reduced": reduced, "n": len(diffs)}


def fashion_mnist_cost(batches: int = 500) -> str:
    """Cost of a Fashion-MNIST training batch of 32 (28 px, distortion=full) built in the training process
    (workers=0, the config default) and normalised there by to_model_input, against the ~15-30 ms CPU
    model step it feeds."""
    from bn_inception.data.fashion_mnist import FashionMNISTNotFound

    try:
        data = compose("train", ["data=fashion_mnist", "data.distortion=full", "data.download=false"])["data"]
        splits = build_datasets(**data)
    except FashionMNISTNotFound as e:
        return f"Fashion-MNIST: skipped ({e})"
    loader = build_train_loader(splits.train, 32, workers=0, pin_memory=False)
    next(loader)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        images, _ = next(loader)
        to_model_input(images, splits.mean, splits.std, "cpu")
    wall = (time.perf_counter() - start) * 1e3 / batches
    cpu = (time.process_time() - start_cpu) * 1e3 / batches
    return (
        f"Fashion-MNIST, batch 32 at 28 px, distortion=full, built and normalised in the training process "
        f"(workers=0), {batches} batches: {wall:.2f} ms wall, {cpu:.2f} ms CPU per batch (torch threads: "
        f"{torch.get_num_threads()})."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=512, help="generated JPEGs (500x375)")
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes, both pipelines")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=224, help="output side, px")
    parser.add_argument("--batches", type=int, default=24, help="timed batches per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per pipeline (median reported)")
    parser.add_argument("--noise", type=float, default=18.0, help="pixel noise of the generated JPEGs")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the generated files")
    parser.add_argument("--data-dir", type=Path, help="where the JPEGs are generated (default: cache dir)")
    parser.add_argument("--skip-fashion-mnist", action="store_true", help="do not time Fashion-MNIST batches")
    args = parser.parse_args(argv)

    folder = args.data_dir or cache_dir() / f"bench-jpegs-{args.images}-n{args.noise:g}-q{args.quality}"
    root = make_images(folder, args.images, args.noise, args.quality)
    files = sorted((root / "train").rglob("*.JPEG"))
    kb = np.mean([f.stat().st_size for f in files]) / 1024

    pipelines = {"baseline": baseline_loader(root, args.input_size, args.batch_size, args.workers)}
    splits = {}
    for distortion in ("none", "full"):
        data = [f"data.root={root}", f"data.input_size={args.input_size}", f"data.distortion={distortion}"]
        splits[distortion] = build_datasets(**compose("train", ["data=imagenet", *data])["data"], seed=0)
        pipelines[f"ours ({distortion})"] = build_train_loader(
            splits[distortion].train, args.batch_size, workers=args.workers, pin_memory=False
        )
    iterators = {name: (_epochs(p) if isinstance(p, DataLoader) else p) for name, p in pipelines.items()}
    warmup = 2 * max(args.workers, 1) + 2  # > what the workers prefetch (prefetch_factor 2 per worker)
    for it in iterators.values():  # start workers, fill the page cache
        time_batches(it, 1, warmup)

    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    cpu_rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.repeats):
        for name, it in iterators.items():
            rate, cpu_rate = time_batches(it, args.batches, warmup)
            rates[name].append(rate)
            cpu_rates[name].append(cpu_rate)
    per_epoch = len(files) // args.batch_size
    stats = {name: epoch_stats(it, per_epoch) for name, it in iterators.items()}
    for p in pipelines.values():
        if hasattr(p, "close"):
            p.close()
    del iterators, pipelines
    single = single_core_breakdown(root, splits, args.input_size, args.batch_size, args.repeats)

    agreement = resampling_agreement(splits, args.input_size)
    areas = {"baseline": baseline_crop_areas(root, args.input_size, 2000)}
    areas["ours (none)"] = areas["ours (full)"] = our_crop_areas(splits["none"], 2000)
    base = statistics.median(rates["baseline"])
    base_cpu = statistics.median(cpu_rates["baseline"])
    cpu = platform.processor() or platform.machine()
    print(
        f"Data pipeline throughput, {args.input_size} px output, batch {args.batch_size}, "
        f"{args.workers} workers, {len(files)} JPEGs of 500x375 (mean {kb:.0f} KB), median of {args.repeats} "
        f"runs of {args.batches} batches; {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, Pillow {PIL.__version__}."
    )
    shown_args = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Command: `python benchmarks/data_throughput.py {shown_args}`")
    print()
    print(
        "| pipeline | img/s (wall) | vs baseline | img per CPU-s (per core) | vs baseline | wall runs | "
        "pixel mean R/G/B | pixel std R/G/B | mean abs x-gradient | crop area q10/q50/q90 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, values in rates.items():
        rate, cpu_rate = statistics.median(values), statistics.median(cpu_rates[name])
        print(
            f"| {name} | {rate:.0f} | {rate / base:.2f}x | {cpu_rate:.0f} | {cpu_rate / base_cpu:.2f}x | "
            f"{', '.join(f'{v:.0f}' for v in values)} | {stats[name]['mean']} | {stats[name]['std']} | "
            f"{stats[name]['grad']} | {crop_quantiles(areas[name])} |"
        )
    print()
    print(
        f"Same crop boxes through both resamplers ({agreement['n']} images): mean |difference| "
        f"{agreement['diff']:.2f} levels of 255, x-gradient ours/baseline {agreement['grad']:.3f}; "
        f"{agreement['reduced']} of them decoded at reduced JPEG scale."
    )
    print()
    print(f"Single core, in-process (torch threads 1), CPU ms per image, median of {args.repeats}:")
    print()
    print("| step | ms/img | share of baseline |")
    print("|---|---|---|")
    reference = single[BASELINE_STEP]
    for name, ms in single.items():
        print(f"| {name} | {ms:.2f} | {ms / reference:.0%} |")
    if not args.skip_fashion_mnist:
        print()
        print(fashion_mnist_cost())
    return 0


if __name__ == "__main__":
    sys.exit(main())
