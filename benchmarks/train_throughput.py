"""Training throughput: train.py's loop against a bare loop (CPU), and BN-Inception on a GPU (issue 7).

    python benchmarks/train_throughput.py                       # CPU: bn_inception_small on Fashion-MNIST
    python benchmarks/train_throughput.py --steps 300 --repeats 3
    python benchmarks/train_throughput.py --device cuda --timm-train ~/pytorch-image-models/train.py

CPU (``--modes fmnist``, the default on CPU). The bare loop is the floor of what any trainer can do: the
same model and batch size, batches already in memory, forward + cross-entropy + backward + SGD step and
nothing else. ``train.py``'s figure is its steady-state ``perf/img_per_s`` (TensorBoard) after a warm-up,
with the real data pipeline, meters, progress bar and logging on. Between them, the bare loop fed by
train.py's loader (its crops, flips and distortions, and ``to_model_input``, in the training process as
train.py runs them on 2 cores) separates the data path's cost from the loop's own bookkeeping. The
project's target on CPU: train.py at least 0.97 of the loader-fed bare loop.

GPU (``--modes synthetic,pipeline,timm``, the default with ``--device cuda``; ``timm`` needs
``--timm-train``), BN-Inception at 224x224, the BN-x5 network, batch ``--batch`` (the paper's 32), bf16
autocast, channels_last, torch.compile, fused SGD on every row:

- (a) ``synthetic``: our training step (bn_inception.engine.step, as the trainer runs it) on normalised
  batches already on the GPU: the model's ceiling;
- (b) ``pipeline``: ``bn_inception.engine.trainer.train`` (what train.py runs) reading a generated
  ImageNet-like JPEG tree (500x375, ~100 KB, as benchmarks/data_throughput.py), ``--decode`` (auto: the
  JPEGs decoded, cropped and distorted on the GPU), ``--workers`` loader processes, its steady-state
  ``perf/img_per_s``;
- (c) ``timm``: timm's own train.py (``--timm-train PATH``: a checkout of huggingface/pytorch-image-models,
  see benchmarks/timm_train_launcher.py) on the same tree, model, batch, workers, amp dtype,
  channels_last and compile, with its modern defaults that change the work pinned off (no mixup/cutmix,
  label smoothing, random erasing or AutoAugment; bilinear interpolation; colour jitter 0.4 only when ours
  distorts colours too); its figure is the average step time of its second epoch.

Reported: images/s, peak GPU memory (torch.cuda.max_memory_allocated) and the ratios (b)/(c) (target >=
1.2) and (b)/(a) (target >= 0.8). On a CPU the GPU modes run as smoke tests (``--device cpu --modes
synthetic,pipeline --batch 4 --steps 2 --warmup 2 --images 64``). Prints Markdown; record it in
docs/benchmarks.md with the command.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import bn_inception  # noqa: E402, F401
from bn_inception.cli import compose  # noqa: E402
from bn_inception.config import OptimConfig, effective_lr, train_config  # noqa: E402
from bn_inception.data import (  # noqa: E402
    build_datasets,
    build_train_loader,
    make_synthetic_imagenet,
    to_model_input,
)
from bn_inception.data.build import cache_dir  # noqa: E402
from bn_inception.engine.precision import resolve_compile, resolve_finite_check  # noqa: E402
from bn_inception.engine.step import NonFiniteGuard, TrainStep  # noqa: E402
from bn_inception.engine.trainer import build_optimizer, train  # noqa: E402

GPU_MODES = ("synthetic", "pipeline", "timm")
LAUNCHER = Path(__file__).resolve().parent / "timm_train_launcher.py"


def bn_x5(*overrides: str) -> dict:
    """train.py's config of ``python train.py experiment=bn_x5 <overrides>``: every row runs BN-x5 as
    train.py composes it (bn_inception/configs/), so no benchmark can drift from what train.py runs."""
    return compose("train", ["experiment=bn_x5", *overrides])


def network_kwargs(config: dict) -> dict:
    """The BN-x5 network's keyword arguments for timm.create_model (classes, channels and size aside)."""
    return {k: v for k, v in config["model"].items() if k != "name" and v is not None}


# BN-x5 on Fashion-MNIST, loaded in the training process (data.workers=0, the dataset's default): on 2 cores
# a worker process would take its CPU time from the model anyway.
FMNIST = ("data=fashion_mnist", "data.workers=0")


def bare_loop(
    model_name: str,
    batch: int,
    steps: int,
    warmup: int,
    device: str,
    size: int,
    chans: int,
    channels_last: bool,
    fed: bool = False,
) -> float:
    """Images/s of forward/backward/step on batches already in memory (the ceiling for a trainer); with
    ``fed`` (CPU, Fashion-MNIST), on batches from train.py's loader and ``to_model_input`` instead, made
    in the loop as train.py makes them: the ceiling for a trainer that loads in its own process."""
    config = bn_x5(*FMNIST)
    torch.manual_seed(0)
    model = timm.create_model(
        model_name, num_classes=10, in_chans=chans, img_size=size, **network_kwargs(config)
    ).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)  # the same layout as train.py's (trainer.channels_last)
    # the optimizer train.py builds (bn_inception.engine.trainer.build_optimizer: the fused kernel)
    opt = torch.optim.SGD(model.parameters(), lr=0.0075, momentum=0.9, weight_decay=4e-5, fused=True)
    data = [
        (
            torch.randn(batch, chans, size, size, device=device).contiguous(memory_format=fmt),
            torch.randint(0, 10, (batch,), device=device),
        )
        for _ in range(16)
    ]
    if fed:
        splits = build_datasets(**config["data"], seed=0)
        batches = iter(build_train_loader(splits.train, batch_size=batch, seed=0, **splits.loader))
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        if fed:
            images, labels = next(batches)
            images = to_model_input(images, splits.mean, splits.std, device, channels_last)
        else:
            images, labels = data[i % len(data)]
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def steady_img_per_s(overrides: list[str], warmup: int) -> float:
    """Run ``train`` on ``python train.py experiment=bn_x5 <overrides>``'s config (what train.py
    runs) in a scratch directory and return its steady-state ``perf/img_per_s`` after ``warmup`` steps, read
    back from TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = bn_x5(*overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train(train_config(config), tmp, experiment="bn_x5")
        acc = EventAccumulator(tmp, size_guidance={"scalars": 0})
        acc.Reload()
        rates = [e.value for e in acc.Scalars("perf/img_per_s") if e.step > warmup]
    # equal step intervals: total images / total time is the harmonic mean of the interval rates
    return statistics.harmonic_mean(rates)


def train_py_loop(
    batch: int, steps: int, warmup: int, device: str, log_every: int, channels_last: bool, workers: int = 0
) -> float:
    """Steady-state images/s of bn_inception's trainer (train.py's loop) on Fashion-MNIST."""
    trainer = dict(
        max_steps=warmup + steps,
        batch_size=batch,
        eval_every=warmup + steps,
        eval_limit=256,
        log_every=log_every,
        probe_images=256,
        device=device,
        progress=True,
        compile="false",
        channels_last=str(channels_last).lower(),
    )
    return steady_img_per_s([*FMNIST, f"data.workers={workers}", *overrides("trainer", trainer)], warmup)


def overrides(section: str, values: dict) -> list[str]:
    """``section.key=value`` command-line overrides (Hydra's grammar: lowercase true/false)."""
    return [f"{section}.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()]


# ------------------------------------------------------------------------------------- GPU modes (issue 7)


def jpeg_tree(images: int, classes: int) -> Path:
    """A cached ImageNet-layout tree of ImageNet-like JPEGs (500x375, a quarter portrait, ~100 KB)."""
    root = cache_dir() / f"bench-train-{images}-c{classes}"
    if not (root / "train").is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent) as tmp:  # renamed when complete
            make_synthetic_imagenet(
                Path(tmp) / "tree",
                num_classes=classes,
                train_per_class=max(1, images // classes),
                val_per_class=2,
                image_size=(500, 375),
                noise=18.0,
                jpeg_quality=90,
                label_files=(),
            )
            os.replace(Path(tmp) / "tree", root)
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else None


def synthetic_ceiling(args: argparse.Namespace, device: torch.device) -> tuple[float, int | None]:
    """(a) images/s of the trainer's step (TrainStep + guard + fused SGD) on batches already on the device."""
    torch.manual_seed(0)
    size = args.input_size
    config = bn_x5()
    model = timm.create_model(
        args.model, num_classes=args.classes, in_chans=3, img_size=size, **network_kwargs(config)
    )
    cuda = device.type == "cuda"
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    optim = OptimConfig(**config["optim"])
    optimizer = build_optimizer(model, optim, effective_lr(optim), device)
    finite = resolve_finite_check("auto", device)
    if finite == "device" and not all(g.get("fused") for g in optimizer.param_groups):
        finite = "sync"
    guard = NonFiniteGuard(finite, 1, optimizer, None, device)
    step = TrainStep(
        model,
        optimizer,
        None,
        device,
        torch.bfloat16 if cuda else None,
        resolve_compile(args.compile, device),
        guard=guard,
    )
    fmt = torch.channels_last if cuda else torch.contiguous_format
    data = [
        (
            torch.randn(args.batch, 3, size, size, device=device).contiguous(memory_format=fmt),
            torch.randint(0, args.classes, (args.batch,), device=device),
        )
        for _ in range(8)
    ]
    model.train()
    _reset_peak(device)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            _sync(device)
            start = time.perf_counter()
        images, labels = data[i % len(data)]
        step(images, labels, i + 1)  # forward, backward, the guard, the update: the trainer's step
    _sync(device)
    return args.steps * args.batch / (time.perf_counter() - start), _peak(device)


def full_pipeline(args: argparse.Namespace, device: torch.device, root: Path) -> tuple[float, int | None]:
    """(b) steady-state images/s of train() (train.py's loop) from the JPEG tree."""
    log_every = max(1, min(25, args.steps, args.warmup))
    data = {
        "root": root,
        "input_size": args.input_size,
        "distortion": args.distortion,
        "workers": args.workers,
        "decode": args.decode,
    }
    trainer = dict(
        max_steps=args.warmup + args.steps,
        batch_size=args.batch,
        eval_every=args.warmup + args.steps,
        eval_limit=2 * args.batch,
        eval_batch_size=args.batch,
        log_every=log_every,
        probe_images=args.batch,
        device=device.type,
        compile=str(args.compile).lower(),
        progress=False,
    )
    _reset_peak(device)
    settings = ["data=imagenet", f"model.name={args.model}", *overrides("data", data)]
    return steady_img_per_s([*settings, *overrides("trainer", trainer)], args.warmup), _peak(device)


def timm_command(args: argparse.Namespace, root: Path, output: str) -> list[str]:
    """timm's train.py on the same data, model, batch, workers, precision, layout and compile."""
    cmd = [
        sys.executable, str(LAUNCHER), str(args.timm_train),
        "--data-dir", str(root), "--train-split", "train", "--val-split", "val",
        "--model", args.model, "--num-classes", str(args.classes),
        "--model-kwargs", *[f"{k}={v}" for k, v in network_kwargs(bn_x5()).items() if k != "drop_rate"],
        "--drop", "0", "--input-size", "3", str(args.input_size), str(args.input_size),
        "-b", str(args.batch), "--workers", str(args.workers), "--pin-mem",
        "--opt", "momentum", "--momentum", "0.9", "--lr", "0.0075", "--weight-decay", "4e-5",
        "--sched", "step", "--decay-epochs", "1000", "--warmup-epochs", "0", "--epochs", "2",
        # timm's modern defaults that change the work, pinned to the 2015 recipe (engineering notes)
        "--smoothing", "0", "--mixup", "0", "--cutmix", "0", "--reprob", "0",
        "--train-interpolation", "bilinear", "--interpolation", "bilinear", "--scale", "0.08", "1.0",
        "--hflip", "0.5", "--color-jitter", "0" if args.distortion == "none" else "0.4",
        "--log-interval", "5", "--seed", "0", "--output", output, "--checkpoint-hist", "1",
    ]  # fmt: skip
    if args.device == "cuda":
        cmd += ["--amp", "--amp-dtype", "bfloat16", "--channels-last"]
        if resolve_compile(args.compile, torch.device("cuda")):
            cmd += ["--torchcompile"]
    return cmd


_TIMM_TRAIN_LINE = re.compile(r"Train: (\d+) \[\s*(\d+)/(\d+).*?Time: [\d.]+s,.*?\(([\d.]+)s,")


def timm_train(args: argparse.Namespace, root: Path) -> tuple[float, int | None]:
    """(c) images/s of timm's train.py: batch / its average step time over the second epoch."""
    if args.timm_train is None or not Path(args.timm_train).is_file():
        raise SystemExit(
            "--timm-train PATH/train.py is needed for the timm mode: git clone --depth 1 --branch "
            f"v{timm.__version__} https://github.com/huggingface/pytorch-image-models"
        )
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(timm_command(args, root, tmp), capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"timm's train.py failed ({proc.returncode}):\n{text[-3000:]}")
    second_epoch = [m for m in _TIMM_TRAIN_LINE.finditer(text) if m.group(1) == "1"]
    if not second_epoch:
        raise SystemExit(f"no 'Train: 1 [...]' lines in timm's output:\n{text[-3000:]}")
    peak = re.findall(r"PEAK_GPU_MEMORY_BYTES (\d+)", text)
    return args.batch / float(second_epoch[-1].group(4)), int(peak[-1]) if peak else None


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.2f} GiB" if value is not None else "n/a"


def gpu_report(args: argparse.Namespace, modes: list[str]) -> None:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no GPU is visible")
    images_needed = (args.warmup + args.steps) * args.batch
    root = (
        jpeg_tree(max(args.images, 2 * args.batch), args.classes)
        if {"pipeline", "timm"} & set(modes)
        else None
    )
    rows: dict[str, tuple[float, int | None]] = {}
    if "synthetic" in modes:
        rows["synthetic"] = synthetic_ceiling(args, device)
    if "pipeline" in modes:
        rows["pipeline"] = full_pipeline(args, device, root)
    if "timm" in modes:
        rows["timm"] = timm_train(args, root)
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    )
    cuda = device.type == "cuda"
    print(
        f"{args.model} (BN-x5 network) at {args.input_size}x{args.input_size}, batch {args.batch}, {device} "
        f"({name}), amp {'bf16' if cuda else 'none'}, channels_last {cuda}, compile "
        f"{resolve_compile(args.compile, device) or 'off'}, distortion {args.distortion}, "
        f"decode {args.decode}, "
        f"{args.workers} loader workers, {os.cpu_count()} CPUs; {args.steps} timed steps after {args.warmup} "
        f"(the pipeline reads {images_needed} images from a tree of {args.images}); "
        f"torch {torch.__version__}, timm {timm.__version__}"
    )
    print(f"Command: `python benchmarks/train_throughput.py {' '.join(sys.argv[1:])}`")
    print()
    labels = {
        "synthetic": "(a) our step on batches already on the device (ceiling)",
        "pipeline": "(b) train() from JPEG files (full pipeline)",
        "timm": "(c) timm train.py, same model/data/batch",
    }
    print("| run | images/s | peak GPU memory |")
    print("|---|---|---|")
    for key, (rate, peak) in rows.items():
        print(
            f"| {labels[key]} | {rate:.0f} | {_gib(peak)} |"
            if rate >= 100
            else f"| {labels[key]} | {rate:.3g} | {_gib(peak)} |"
        )
    if "pipeline" in rows and "timm" in rows:
        print(f"| ratio (b)/(c) | {rows['pipeline'][0] / rows['timm'][0]:.2f} | target >= 1.2 |")
    if "pipeline" in rows and "synthetic" in rows:
        print(f"| ratio (b)/(a) | {rows['pipeline'][0] / rows['synthetic'][0]:.2f} | target >= 0.8 |")


def fmnist_report(args: argparse.Namespace) -> None:
    cl = args.channels_last == "true"
    loops = {
        "bare PyTorch loop (batches in memory)": lambda: bare_loop(
            "bn_inception_small", args.batch, args.steps, args.warmup, args.device, 28, 1, cl
        ),
        "bare loop fed by train.py's loader (in process)": lambda: bare_loop(
            "bn_inception_small", args.batch, args.steps, args.warmup, args.device, 28, 1, cl, fed=True
        ),
        "train.py loop (data pipeline, meters, logging)": lambda: train_py_loop(
            args.batch, args.steps, args.warmup, args.device, 25, cl, args.cpu_workers
        ),
    }
    runs: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
        for name, loop in loops.items():
            runs[name].append(loop())
    bare, fed, ours = (statistics.median(r) for r in runs.values())
    print(
        f"bn_inception_small (BN-x5 network), Fashion-MNIST 28x28x1, batch {args.batch}, {args.device}, "
        f"{torch.get_num_threads()} threads, channels_last {args.channels_last} in all, "
        f"train.py with {args.cpu_workers} loader workers, "
        f"torch {torch.__version__}, {platform.machine()}"
    )
    print()
    print(f"| loop | images/s (median of {args.repeats}) | all runs |")
    print("|---|---|---|")
    for name, values in runs.items():
        print(f"| {name} | {statistics.median(values):.0f} | {', '.join(f'{x:.0f}' for x in values)} |")
    print(f"| ratio train.py / bare | {ours / bare:.3f} | |")
    print(f"| ratio bare fed by the loader / bare: the data path's cost | {fed / bare:.3f} | |")
    print(
        f"| ratio train.py / bare fed by the loader: the loop's own overhead | {ours / fed:.3f} "
        "| target >= 0.97 |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--modes",
        default=None,
        help="comma list of fmnist, synthetic, pipeline, timm (default: fmnist on cpu; synthetic,pipeline "
        "on cuda, plus timm with --timm-train)",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--channels-last",
        default="true",
        choices=["true", "false"],
        help="CPU mode: memory layout of both loops (true = train.py's default, trainer.channels_last=auto)",
    )
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument(
        "--warmup", type=int, default=50, help="untimed steps first (compilation, cuDNN choice)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="fmnist: alternating bare/train.py measurements"
    )
    parser.add_argument("--model", default="bn_inception", help="GPU modes: the registered model")
    parser.add_argument("--input-size", type=int, default=224, help="GPU modes: input side, px")
    parser.add_argument("--classes", type=int, default=1000, help="GPU modes: classes of the generated tree")
    parser.add_argument(
        "--images", type=int, default=8192, help="GPU modes: training JPEGs generated (cached)"
    )
    parser.add_argument(
        "--workers", type=int, default=8, help="GPU modes: loader processes (ours and timm's)"
    )
    parser.add_argument(
        "--cpu-workers", type=int, default=0, help="CPU mode: train.py's loader processes (data.workers)"
    )
    parser.add_argument("--decode", default="auto", choices=["auto", "cpu", "gpu"], help="(b): data.decode")
    parser.add_argument("--distortion", default="reduced", choices=["full", "reduced", "none"])
    parser.add_argument("--compile", default="auto", help="auto | true | false | a torch.compile mode")
    parser.add_argument(
        "--timm-train", type=Path, default=None, help="timm's train.py (a repository checkout)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.compile in ("true", "false"):
        args.compile = args.compile == "true"
    if args.modes is None:
        modes = (
            ["fmnist"]
            if args.device == "cpu"
            else ["synthetic", "pipeline"] + ["timm"] * bool(args.timm_train)
        )
    else:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"fmnist", *GPU_MODES}
    if unknown:
        raise SystemExit(f"unknown --modes {sorted(unknown)}; valid: fmnist, {', '.join(GPU_MODES)}")
    if "fmnist" in modes:
        fmnist_report(args)
    gpu_modes = [m for m in modes if m in GPU_MODES]
    if gpu_modes:
        if "fmnist" in modes:
            print()
        gpu_report(args, gpu_modes)


if __name__ == "__main__":
    main()
