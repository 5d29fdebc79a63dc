"""Time one training step (forward + backward + SGD step) of a registered model on the CPU.

The small model's default width was chosen with this script: a Fashion-MNIST step (batch 32, 28x28x1,
norm="batch") should take roughly 15-30 ms on 2 CPU cores, so the five variants fit a 30-minute CPU budget.

    python benchmarks/model_step_time.py                                   # bn_inception_small defaults
    python benchmarks/model_step_time.py --width-mult 0.5 --stem separable
    python benchmarks/model_step_time.py --model bn_mlp --norm none
    python benchmarks/model_step_time.py --channels-last --fused         # train.py's CPU defaults
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bn_inception.models import SMALL_WIDTH_MULT  # noqa: E402  (importing registers the models)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bn_inception_small")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=28)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--norm", default="batch")
    p.add_argument("--act", default="relu")
    p.add_argument(
        "--width-mult", type=float, default=None, help="bn_inception_small only (default: its own)"
    )
    p.add_argument("--stem", default=None, help="bn_inception* only (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    p.add_argument(
        "--channels-last", action="store_true", help="model and input in channels_last memory format"
    )
    p.add_argument(
        "--fused", action="store_true", help="the fused SGD kernel (train.py's default) instead of the loop"
    )
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--repeats", type=int, default=5, help="timed blocks of --steps; the median block is reported"
    )
    return p.parse_args()


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The model and the keywords it was built with (the model's defaults filled in)."""
    kwargs = dict(
        num_classes=args.num_classes, in_chans=args.in_chans, norm=args.norm, img_size=args.img_size
    )
    if args.model.startswith("bn_inception"):
        kwargs.update(act=args.act, stem=args.stem)
        if args.model == "bn_inception_small":
            kwargs["width_mult"] = args.width_mult or SMALL_WIDTH_MULT
    else:
        kwargs["act"] = "sigmoid" if args.act == "relu" else args.act  # the Sec. 4.1 MLP is a sigmoid net
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = timm.create_model(args.model, **kwargs)
    if hasattr(model, "stem"):
        kwargs["stem"] = model.stem
    return model, kwargs


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, kwargs = build(args)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0015, momentum=0.9, fused=args.fused or None)
    x = torch.randn(args.batch_size, args.in_chans, args.img_size, args.img_size)
    y = torch.randint(0, args.num_classes, (args.batch_size,))
    if args.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    blocks = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        blocks.append((time.perf_counter() - t0) / args.steps * 1e3)
    t0 = time.perf_counter()  # the SGD update alone, on the last step's gradients
    for _ in range(args.steps):
        opt.step()
    update_ms = (time.perf_counter() - t0) / args.steps * 1e3
    params = sum(p.numel() for p in model.parameters())
    shown = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("num_classes", "in_chans"))
    print(
        f"{args.model} {shown} "
        f"params={params:,} batch={args.batch_size} input={args.in_chans}x{args.img_size}x{args.img_size} "
        f"channels_last={args.channels_last} fused={args.fused} threads={torch.get_num_threads()}: "
        f"{statistics.median(blocks):.1f} ms/step "
        f"(blocks: {', '.join(f'{b:.1f}' for b in blocks)}); SGD update alone {update_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
