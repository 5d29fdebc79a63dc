"""Training throughput: train.py's loop against a bare PyTorch loop on the same model, batch and device.

    python benchmarks/train_throughput.py                       # CPU: bn_inception_small on Fashion-MNIST
    python benchmarks/train_throughput.py --steps 300 --repeats 3

The bare loop is the floor of what any trainer can do: the same model and batch size, batches already in
memory, forward + cross-entropy + backward + SGD step and nothing else. ``train.py``'s figure is its
steady-state ``perf/img_per_s`` (TensorBoard) after a warm-up, with the real data pipeline, meters,
progress bar and logging on. The project's target on CPU: at least 0.97 of the bare loop.
Prints a Markdown table; record it in docs/benchmarks.md with this command.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time

import timm
import torch
import torch.nn.functional as F

import bn_inception  # noqa: F401
from bn_inception.engine.trainer import OptimOptions, ScheduleOptions, TrainerOptions, train

MODEL_KWARGS = {"norm": "batch", "act": "relu", "lrn": False, "drop_rate": 0.0}  # BN-x5's network


def bare_loop(
    model_name: str, batch: int, steps: int, warmup: int, device: str, size: int, chans: int
) -> float:
    """Images/s of forward/backward/step on batches already in memory (the ceiling for a trainer)."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10, in_chans=chans, img_size=size, **MODEL_KWARGS).to(
        device
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.0075, momentum=0.9, weight_decay=4e-5)
    data = [
        (torch.randn(batch, chans, size, size, device=device), torch.randint(0, 10, (batch,), device=device))
        for _ in range(16)
    ]
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        images, labels = data[i % len(data)]
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def train_py_loop(batch: int, steps: int, warmup: int, device: str, log_every: int) -> float:
    """Steady-state images/s of bn_inception's trainer (train.py's loop) on Fashion-MNIST."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as tmp:
        trainer = TrainerOptions(
            max_steps=warmup + steps,
            batch_size=batch,
            eval_every=warmup + steps,
            eval_limit=256,
            log_every=log_every,
            probe_images=256,
            device=device,
            progress=True,
            compile=False,
        )
        data = {
            "name": "fashion_mnist",
            "input_size": 28,
            "distortion": "reduced",
            "shuffle": "global",
            "workers": 0,
            "crop_scale": [0.35, 1.0],
        }
        train(
            run_dir=tmp,
            name="bench",
            experiment="bn_x5",
            seed=0,
            resume="auto",
            model_name="bn_inception_small",
            model_kwargs=dict(MODEL_KWARGS),
            data_kwargs=data,
            optim=OptimOptions(lr=0.0075, weight_decay=4e-5),
            schedule=ScheduleOptions(speedup=6),
            trainer=trainer,
            config={"bench": True},
        )
        acc = EventAccumulator(tmp, size_guidance={"scalars": 0})
        acc.Reload()
        rates = [e.value for e in acc.Scalars("perf/img_per_s") if e.step > warmup]
    # equal step intervals: total images / total time is the harmonic mean of the interval rates
    return statistics.harmonic_mean(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="alternating bare/train.py measurements")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    bare, ours = [], []
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
        bare.append(bare_loop("bn_inception_small", args.batch, args.steps, args.warmup, args.device, 28, 1))
        ours.append(train_py_loop(args.batch, args.steps, args.warmup, args.device, log_every=25))
    b, o = statistics.median(bare), statistics.median(ours)
    print(
        f"bn_inception_small (BN-x5 network), Fashion-MNIST 28x28x1, batch {args.batch}, {args.device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.machine()}"
    )
    print()
    print(f"| loop | images/s (median of {args.repeats}) | all runs |")
    print("|---|---|---|")
    print(f"| bare PyTorch loop (batches in memory) | {b:.0f} | {', '.join(f'{x:.0f}' for x in bare)} |")
    runs = ", ".join(f"{x:.0f}" for x in ours)
    print(f"| train.py loop (data pipeline, meters, logging) | {o:.0f} | {runs} |")
    print(f"| ratio train.py / bare | {o / b:.3f} | target >= 0.97 |")


if __name__ == "__main__":
    main()
