"""Print every model's Figure 5 table (rows, output shapes, parameters, multiply-adds) as Markdown.

    python scripts/describe_models.py                                # all models, default options
    python scripts/describe_models.py --model bn_inception --table caffe --stem plain
    python scripts/describe_models.py --model bn_inception_small --img-size 32 --width-mult 0.5

For each model it builds the paper's five variants (their model keywords: bn_inception.models.PAPER_VARIANTS)
and prints one table of rows, with one parameter column per group of variants whose rows have the same
parameters, then each variant's totals. Multiply-adds count convolutions and fully connected layers
(torch.utils.flop_counter FLOPs / 2) for one example.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bn_inception.models import PAPER_VARIANTS, SMALL_WIDTH_MULT, STEMS, TABLES, BNInception  # noqa: E402
from bn_inception.models.figure5 import ConvRow, PoolRow, Row  # noqa: E402

MODELS = ("bn_inception", "bn_inception_small", "bn_mlp")
MLP_VARIANTS = {"mlp": dict(norm="none"), "mlp_bn": dict(norm="batch")}  # Figure 1: without and with BN
PAPER_PARAMS_NOTE = (
    "The paper (Sec. 4.2) states 13.6M parameters for Inception; the widths of its Figure 5 table give about "
    "11.3M (no public source explains the gap; auxiliary classifiers are not mentioned). Ours: {ours}."
)


class RowSummary(NamedTuple):
    """One row of the table. ``macs``: multiply-adds of the convolutions and fully connected layers of the
    row for one example (FLOPs / 2 as counted by ``torch.utils.flop_counter``; pooling, BN, LRN and
    nonlinearities are not counted)."""

    name: str
    kind: str
    patch: str
    output: tuple[int, ...]
    params: int
    macs: int


def _describe_row(row: Row, module: nn.Module) -> tuple[str, str]:
    if isinstance(row, ConvRow):
        patch = f"{row.kernel}x{row.kernel}/{row.stride}"
        if row.stem and isinstance(module.conv, nn.Sequential):
            return "convolution (separable, depth multiplier 8)", patch
        if row.reduce:
            return f"convolution (1x1 reduce {row.reduce}, then {row.kernel}x{row.kernel})", patch
        return "convolution", patch
    if isinstance(row, PoolRow):
        return "max pool", f"3x3/{row.stride}"
    width = "pass through" if not row.proj else f"+ {row.proj}"
    return f"inception ({row.pool} {width})", "stride 2" if row.stride == 2 else ""


def _summary(name: str, kind: str, patch: str, module: nn.Module, x: torch.Tensor) -> tuple:
    with FlopCounterMode(display=False) as counter:
        y = module(x)
    params = sum(p.numel() for p in module.parameters())
    return y, RowSummary(name, kind, patch, tuple(y.shape[1:]), params, counter.get_total_flops() // 2)


@torch.no_grad()
def summarize(model: nn.Module, input_size: tuple[int, int, int]) -> list[RowSummary]:
    """The rows of ``model`` (a ``BNInception`` or ``BNMLP``) for one input of ``input_size`` (C, H, W),
    then its head. Runs in eval mode on one example; the model's mode is restored."""
    was_training = model.training
    x = torch.zeros(1, *input_size)
    model.eval().check_input(x)
    if isinstance(model, BNInception):
        layers = [
            (r.name, *_describe_row(r, m), m) for r, m in zip(model.row_specs, model.features, strict=True)
        ]
    else:  # the MLP: its hidden layers (+ BN before the nonlinearity in the BN variants)
        x = x.flatten(1)
        layers = [
            (f"hidden{i + 1}", f"fully connected + {type(m.act).__name__}", "", m)
            for i, m in enumerate(model.hidden)
        ]
    rows = []
    for name, kind, patch, module in layers:
        x, row = _summary(name, kind, patch, module, x)
        rows.append(row)
    if isinstance(model, BNInception):
        grid = "x".join(str(s) for s in x.shape[-2:])
        x = model.global_pool(x)
        rows.append(RowSummary("pool", "avg pool", f"{grid}/1", tuple(x.shape[1:]), 0, 0))
    if not isinstance(model.fc, nn.Identity):
        rows.append(_summary("fc", "linear (+ softmax)", "", model.fc, x)[1])
    model.train(was_training)
    return rows


def total_macs(rows: list[RowSummary]) -> int:
    return sum(r.macs for r in rows)


def total_params(rows: list[RowSummary]) -> int:
    return sum(r.params for r in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("all", *MODELS), default="all")
    p.add_argument("--table", choices=TABLES, default="tf", help="reading of Figure 5's 4c/4d rows")
    p.add_argument("--stem", choices=STEMS, default=None, help="first convolution (default: the model's)")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument(
        "--width-mult", type=float, default=None, help="bn_inception_small width (default: its own)"
    )
    return p.parse_args(argv)


def model_kwargs(name: str, args: argparse.Namespace) -> dict:
    kwargs = dict(img_size=args.img_size)
    if name != "bn_mlp":
        kwargs.update(table=args.table, stem=args.stem)
    if name == "bn_inception_small":
        kwargs["width_mult"] = args.width_mult
    return {k: v for k, v in kwargs.items() if v is not None}


def architecture(name: str, model: object, args: argparse.Namespace) -> dict:
    """The architecture choices the model was built with (not the variant's keywords)."""
    if name == "bn_mlp":
        return {}
    arch = dict(table=args.table, stem=model.stem)
    if name == "bn_inception_small":
        arch["width_mult"] = args.width_mult or SMALL_WIDTH_MULT
    return arch


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in (*shape[1:], shape[0])) if len(shape) == 3 else "x".join(map(str, shape))


def _m(n: int) -> str:
    return f"{n / 1e6:,.2f}M" if n >= 1e6 else f"{n:,}"


def _kwargs_text(kwargs: dict, end: str = "; ") -> str:
    return "".join(f"{k}={v!r}, " for k, v in kwargs.items())[:-2] + end if kwargs else ""


def describe(name: str, args: argparse.Namespace) -> str:
    base = model_kwargs(name, args)
    variants = MLP_VARIANTS if name == "bn_mlp" else PAPER_VARIANTS
    built = {v: timm.create_model(name, **base, **kw) for v, kw in variants.items()}
    first = next(iter(built.values()))
    input_size = tuple(first.pretrained_cfg["input_size"])
    summaries = {v: summarize(m, input_size) for v, m in built.items()}

    groups: dict[tuple, list[str]] = {}  # variants whose rows have identical parameters and MACs
    for v, rows in summaries.items():
        groups.setdefault(tuple((r.params, r.macs) for r in rows), []).append(v)
    one_macs = len({tuple(r.macs for r in summaries[vs[0]]) for vs in groups.values()}) == 1

    size = "x".join(map(str, (*input_size[1:], input_size[0])))
    lines = [f"## {name} ({_kwargs_text(architecture(name, first, args))}input {size})", ""]
    lines += _figure5_table(summaries, groups, one_macs)

    lines += ["| variant | model keywords | params | MACs |", "|---|---|---|---|"]
    for v, kw in variants.items():
        rows = summaries[v]
        lines.append(f"| {v} | {_kwargs_text(kw, '')} | {total_params(rows):,} | {total_macs(rows):,} |")
    lines.append("")
    if name == "bn_inception":
        ours = ", ".join(f"{total_params(summaries[vs[0]]):,} ({', '.join(vs)})" for vs in groups.values())
        lines += [PAPER_PARAMS_NOTE.format(ours=ours), ""]
    return "\n".join(lines)


def _figure5_table(summaries: dict, groups: dict[tuple, list[str]], one_macs: bool) -> list[str]:
    """The per-row table: parameters per group of variants with identical rows, MACs once if all agree."""
    header = ["row", "type", "patch/stride", "output"]
    for vs in groups.values():
        header.append(f"params ({', '.join(vs)})")
        if not one_macs:
            header.append(f"MACs ({', '.join(vs)})")
    if one_macs:
        header.append("MACs")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reference: list[RowSummary] = summaries[next(iter(groups.values()))[0]]
    for i, row in enumerate(reference):
        cells = [row.name, row.kind, row.patch, _shape(row.output)]
        for vs in groups.values():
            r = summaries[vs[0]][i]
            cells.append(f"{r.params:,}")
            if not one_macs:
                cells.append(_m(r.macs))
        if one_macs:
            cells.append(_m(row.macs))
        lines.append("| " + " | ".join(cells) + " |")
    total = ["**total**", "", "", ""]
    for vs in groups.values():
        total.append(f"**{total_params(summaries[vs[0]]):,}**")
        if not one_macs:
            total.append(f"**{_m(total_macs(summaries[vs[0]]))}**")
    if one_macs:
        total.append(f"**{_m(total_macs(reference))}**")
    return [*lines, "| " + " | ".join(total) + " |", ""]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    names = MODELS if args.model == "all" else (args.model,)
    print("# Models\n")
    print(
        "MACs: multiply-adds of the convolutions and fully connected layers for one example "
        "(torch.utils.flop_counter FLOPs / 2). Output: HxWxC. In the BN variants every convolution or hidden "
        "fully connected layer is followed by BN (gamma, beta; no bias), then the nonlinearity.\n"
    )
    for name in names:
        print(describe(name, args))


if __name__ == "__main__":
    main()
