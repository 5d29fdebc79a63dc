"""Evaluator throughput: images/s for 1 model and an ensemble of 6, and what one decode per image saves.

The evaluator decodes each image once for all members (bn_inception.evaluation.evaluator). The claim
checked here: the 6-model pass costs no more than six models' compute plus one decode,

    ratio = t(ensemble of 6) / (6 * t(one model's forward passes) + t(decode and crop)) <= 1 (+ noise),

where the three times are measured separately over the same images: the full one-pass evaluation of 6
checkpoints; one model over crops already in memory (pure compute); and the loader alone (decode + crops,
no model). All three run the evaluator's own loop (``predict``) on members built and warmed up once, so
one-off costs (model loading, first-call kernel selection) are left out of every term alike. With
``--workers 0`` the work is sequential and the ratio should be ~1.0; with workers, decoding overlaps the
forward passes and it drops below 1. Running 6 separate single-model evaluations would
instead cost ~6 * (t_model + t_decode).

    python benchmarks/eval_throughput.py                                         # bn_inception at 224, CPU
    python benchmarks/eval_throughput.py --model bn_inception_small --input-size 64 --images 256
    python benchmarks/eval_throughput.py --device cuda --images 2048 --workers 8  # GPU: bf16, channels_last

Images are a generated ImageNet-layout tree of ImageNet-like JPEGs (500x375, ~100 KB with noise); the
checkpoints hold random weights (throughput does not depend on them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import bn_inception  # noqa: E402, F401  (registers the models)
from bn_inception.cli import compose  # noqa: E402
from bn_inception.data import build_datasets, build_eval_loader, make_synthetic_imagenet  # noqa: E402
from bn_inception.engine.checkpoint import save_checkpoint  # noqa: E402
from bn_inception.engine.precision import resolve_amp, resolve_channels_last, resolve_device  # noqa: E402
from bn_inception.evaluation.checkpoints import load_member  # noqa: E402
from bn_inception.evaluation.evaluator import MultiCropImages, predict  # noqa: E402

CLASSES = 10


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bn_inception", help="bn_inception (224 px) or bn_inception_small")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument(
        "--width-mult", type=float, default=None, help="bn_inception_small only (default: its own)"
    )
    p.add_argument("--images", type=int, default=48, help="validation images timed")
    p.add_argument("--members", type=int, default=6, help="ensemble size (the paper's 6)")
    p.add_argument("--crops", type=int, default=1, choices=(1, 10, 144))
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0: in the main process)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda")
    p.add_argument("--amp", default="auto", help="auto (bf16 on cuda) | bf16 | none")
    p.add_argument(
        "--decode",
        default="auto",
        help="data.decode: auto (JPEGs decoded on the GPU with --device cuda) | cpu | gpu",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 on CPU, where other processes share the cores and OpenMP barriers "
        "of oversubscribed threads make timings erratic; 0 = torch's default)",
    )
    p.add_argument(
        "--repeats", type=int, default=2, help="timed repeats of each measurement; the best is kept"
    )
    return p.parse_args()


def make_world(root: Path, args: argparse.Namespace) -> list[Path]:
    """A JPEG tree and ``--members`` checkpoints (random weights) in train.py's format."""
    per_class = -(-args.images // CLASSES)
    make_synthetic_imagenet(
        root / "data",
        num_classes=CLASSES,
        train_per_class=1,
        val_per_class=per_class,
        image_size=(500, 375),
        noise=24.0,
        seed=0,
    )
    data_cfg = data_config(root, args)
    splits = build_datasets(**data_cfg)
    kwargs = {"num_classes": CLASSES, "in_chans": 3, "img_size": args.input_size}
    if args.model == "bn_inception_small" and args.width_mult is not None:
        kwargs["width_mult"] = args.width_mult
    paths = []
    for k in range(args.members):
        torch.manual_seed(k)
        model = timm.create_model(args.model, **kwargs)
        data = {
            "input_size": args.input_size,
            "mean": list(splits.mean),
            "std": list(splits.std),
            "classes": list(splits.classes),
            "in_chans": 3,
        }
        ckpt = {
            "model": model.state_dict(),
            "step": 0,
            "model_name": args.model,
            "model_kwargs": kwargs,
            "data": data,
            "config": {"data": data_cfg},
        }
        path = root / "runs" / f"m{k + 1}" / "checkpoints" / "best.pt"
        save_checkpoint(ckpt, path)
        paths.append(path)
    return paths


def data_config(root: Path, args: argparse.Namespace) -> dict:
    """The data config of ``python evaluate.py checkpoints=<the runs> data=synthetic data.root=<the tree>
    ...`` (bn_inception/configs/data/synthetic.yaml)."""
    data = dict(root=root / "data", input_size=args.input_size, workers=args.workers, decode=args.decode)
    overrides = [f"data.{k}={v}" for k, v in data.items()]
    return compose("evaluate", [f"checkpoints={root / 'runs'}", "data=synthetic", *overrides])["data"]


def interleaved_minimum(repeats: int, measurements: dict) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each measurement, taken in turns (a, b, c, a, b, c, ...) so a
    burst of load from other processes on a shared machine does not land on one measurement only."""
    best = dict.fromkeys(measurements, float("inf"))
    for _ in range(repeats):
        for name, fn in measurements.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    amp_dtype = resolve_amp(args.amp, device)
    channels_last = resolve_channels_last("auto", device)
    with tempfile.TemporaryDirectory(prefix="eval_throughput_") as tmp:
        paths = make_world(Path(tmp), args)
        splits = build_datasets(**data_config(Path(tmp), args), device=device)
        images = MultiCropImages(splits.val, args.crops, [args.input_size])
        loader = build_eval_loader(
            images,
            batch_size=args.batch_size,
            workers=args.workers,
            limit=args.images,
            pin_memory=device.type == "cuda",
        )
        n = loader.num_images

        # Every member built and warmed up once (first calls allocate and pick kernels), then timed.
        batches = list(loader)
        members = [load_member(p, f"m{k + 1}", device, channels_last) for k, p in enumerate(paths)]
        for member in members:
            predict([member], batches[:1], {}, device, amp_dtype, channels_last, progress=False)

        def one_pass(group, source):
            ensembles = {"ensemble": list(range(len(group)))} if len(group) > 1 else {}

            def run() -> None:
                predict(group, source, ensembles, device, amp_dtype, channels_last, progress=False)
                if device.type == "cuda":
                    torch.cuda.synchronize()

            return run

        times = interleaved_minimum(
            args.repeats,
            {
                "decode": lambda: sum(len(labels) for _, labels in loader),  # decode + crops, no model
                "model": one_pass(members[:1], batches),  # one model over crops in memory: compute only
                "one": one_pass(members[:1], loader),  # the evaluator's one-pass loop, decoding included
                "ensemble": one_pass(members, loader),
            },
        )
        t_decode, t_model, t_one, t_ens = times["decode"], times["model"], times["one"], times["ensemble"]

    m = args.members
    ratio = t_ens / (m * t_model + t_decode)
    print(
        f"model {args.model} @ {args.input_size}px, crops={args.crops}, {n} images, batch {args.batch_size}, "
        f"workers {args.workers}, device {device}, amp {amp_dtype}, JPEGs decoded on "
        f"{'the GPU' if splits.decode_on_device else 'the CPU'}, torch threads {torch.get_num_threads()}"
    )
    print(f"  decode + crops alone          {t_decode:8.2f} s  {n / t_decode:8.1f} img/s")
    print(f"  1 model, forward only         {t_model:8.2f} s  {n / t_model:8.1f} img/s")
    print(f"  evaluator, 1 model            {t_one:8.2f} s  {n / t_one:8.1f} img/s")
    print(f"  evaluator, ensemble of {m}     {t_ens:8.2f} s  {n / t_ens:8.1f} img/s")
    print(
        f"  ratio t(ens{m}) / ({m} t_model + t_decode) = {ratio:.3f}   (<= 1: one decode serves all members)"
    )
    print(f"  {m} separate evaluations would take ~{m * (t_model + t_decode):.2f} s")


if __name__ == "__main__":
    main()
