"""Figure 5 style summaries of a built model: per row, the output shape, parameters and multiply-adds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .figure5 import ConvRow, PoolRow, Row
from .inception import BNInception
from .mlp import BNMLP


@dataclass(frozen=True)
class RowSummary:
    """One row of the table. ``macs``: multiply-adds of the convolutions and fully connected layers of the
    row for one example (FLOPs / 2 as counted by ``torch.utils.flop_counter``; pooling, BN, LRN and
    nonlinearities are not counted)."""

    name: str
    kind: str
    patch: str
    output: tuple[int, ...]
    params: int
    macs: int


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _run_counted(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    with FlopCounterMode(display=False) as counter:
        y = module(x)
    return y, counter.get_total_flops() // 2


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


@torch.no_grad()
def summarize(model: nn.Module, input_size: tuple[int, int, int]) -> list[RowSummary]:
    """The rows of ``model`` (a ``BNInception`` or ``BNMLP``) for one input of ``input_size`` (C, H, W),
    then its head. Runs in eval mode on one example; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_size)
        if isinstance(model, BNInception):
            return _summarize_inception(model, x)
        if isinstance(model, BNMLP):
            return _summarize_mlp(model, x)
        raise TypeError(f"summarize() takes a BNInception or BNMLP, got {type(model).__name__}")
    finally:
        model.train(was_training)


def _summarize_inception(model: BNInception, x: torch.Tensor) -> list[RowSummary]:
    model.check_input(x)
    rows = []
    for row, module in zip(model.row_specs, model.features, strict=True):
        x, macs = _run_counted(module, x)
        kind, patch = _describe_row(row, module)
        rows.append(RowSummary(row.name, kind, patch, tuple(x.shape[1:]), _params(module), macs))
    grid = "x".join(str(s) for s in x.shape[-2:])
    x = model.global_pool(x)
    rows.append(RowSummary("pool", "avg pool", f"{grid}/1", tuple(x.shape[1:]), 0, 0))
    if not isinstance(model.fc, nn.Identity):
        x, macs = _run_counted(model.fc, x)
        rows.append(RowSummary("fc", "linear (+ softmax)", "", tuple(x.shape[1:]), _params(model.fc), macs))
    return rows


def _summarize_mlp(model: BNMLP, x: torch.Tensor) -> list[RowSummary]:
    model.check_input(x)
    x = x.flatten(1)
    rows = []
    for i, layer in enumerate(model.hidden):
        x, macs = _run_counted(layer, x)
        kind = f"fully connected + {type(layer.act).__name__}"  # (+ BN before it in the BN variants)
        rows.append(RowSummary(f"hidden{i + 1}", kind, "", tuple(x.shape[1:]), _params(layer), macs))
    if not isinstance(model.fc, nn.Identity):
        x, macs = _run_counted(model.fc, x)
        rows.append(RowSummary("fc", "linear (+ softmax)", "", tuple(x.shape[1:]), _params(model.fc), macs))
    return rows


def total_macs(rows: list[RowSummary]) -> int:
    return sum(r.macs for r in rows)


def total_params(rows: list[RowSummary]) -> int:
    return sum(r.params for r in rows)
