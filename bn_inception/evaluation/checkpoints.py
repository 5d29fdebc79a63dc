"""Which checkpoints to evaluate, their row names, and each one loaded as a :class:`Member` (weights only)."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bn_inception.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

CHECKPOINT_NAME = "best.pt"  # what a run or sweep directory is searched for (docs/design.md run dir)


class EvaluationError(RuntimeError):
    """A known bad input (checkpoints, data, options); the message is one line that says what to do."""


def _checkpoints_under(directory: Path) -> list[Path]:
    """Every ``*/checkpoints/best.pt`` below ``directory``, broken links included (named when loaded, not
    dropped); links are followed (a folder of links to runs is an ensemble), each real directory once."""
    found, seen = [], set()
    for folder, subfolders, _ in os.walk(directory, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:  # a link loop, or a run linked twice
            subfolders.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        candidate = Path(folder) / CHECKPOINT_NAME
        if candidate.parent.name == "checkpoints" and os.path.lexists(candidate):
            found.append(candidate)
    return sorted(found)


def find_checkpoints(specs: str | Sequence[str]) -> list[Path]:
    """Checkpoint files (in the order given, repeats kept), globs and run/sweep directories (their
    ``*/checkpoints/best.pt``, sorted). An existing path is taken as it is, even with glob characters (a sweep
    directory named after a list-valued key has brackets)."""
    specs = list(specs) if isinstance(specs, list | tuple) else [specs]
    if not [s for s in specs if str(s).strip()]:
        raise EvaluationError(
            "no checkpoints given; pass checkpoints=PATH, a list [a.pt,b.pt], a glob or a sweep dir"
        )
    found: list[Path] = []
    for spec in map(str, specs):
        if glob.has_magic(spec) and not Path(spec).exists():
            matches = [Path(m) for m in sorted(glob.glob(spec, recursive=True))]
            if not matches:
                raise EvaluationError(
                    f"checkpoints={spec} matches no file; check the pattern (quote it for the shell)"
                )
            expanded = [p for m in matches for p in (_checkpoints_under(m) if m.is_dir() else [m])]
            if not expanded:
                raise EvaluationError(
                    f"checkpoints={spec} matches only directories without */checkpoints/{CHECKPOINT_NAME}"
                )
            found += expanded
        elif Path(spec).is_dir():
            if not (under := _checkpoints_under(Path(spec))):
                raise EvaluationError(
                    f"checkpoints={spec} is a directory without */checkpoints/{CHECKPOINT_NAME}; pass a run "
                    f"or sweep directory written by train.py, or the .pt files themselves"
                )
            found += under
        else:
            found.append(Path(spec))
    return found


def member_names(paths: Sequence[Path]) -> list[str]:
    """Short unique row names relative to the common parent (``bn_x30/seed0``); a run alone is named as in
    its sweep (Hydra's ``multirun.yaml``); ``seed0:last`` for a checkpoint not ``best.pt``; repeats ``#2``."""
    in_run = [p.parent.name == "checkpoints" for p in paths]
    labels = [
        (p.parent.parent if r else p.with_suffix("")).resolve() for p, r in zip(paths, in_run, strict=True)
    ]
    if len(set(labels)) > 1:
        common = Path(os.path.commonpath(labels))
    elif any(in_run):
        sweeps = [parent for parent in labels[0].parents if (parent / "multirun.yaml").exists()]
        common = sweeps[0] if sweeps else labels[0].parent.parent
    else:
        common = labels[0].parent
    names, seen = [], {}
    for p, r, label in zip(paths, in_run, labels, strict=True):
        name = label.relative_to(common).as_posix() + (
            f":{p.stem}" if r and p.name != CHECKPOINT_NAME else ""
        )
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return names


@dataclass
class Member:
    name: str
    path: Path
    model: nn.Module
    input_size: int  # pixels (square)
    mean: tuple[float, ...]  # per channel, for inputs scaled to [0, 1]
    std: tuple[float, ...]
    in_chans: int
    classes: tuple[str, ...]
    step: int | None = None  # training step of the checkpoint
    train_config: dict[str, Any] = field(default_factory=dict)  # the run's resolved config
    bn_stats: str = "running"  # "running": as trained; "recomputed": Algorithm 2 population statistics


def load_member(path: Path, name: str, device: torch.device, channels_last: bool = False) -> Member:
    ckpt = load_checkpoint(path, map_location="cpu")
    data = ckpt.get("data")
    if not isinstance(data, dict) or not {"input_size", "mean", "std", "classes"} <= set(data):
        what = "no data entry (input_size, mean, std, classes); it was not written by train.py"
        raise CheckpointError(f"checkpoint {path} has {what}")
    model = model_from_checkpoint(ckpt, path).eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"])
    return Member(
        name=name,
        path=Path(path),
        model=model,
        input_size=int(data["input_size"]),
        mean=mean,
        std=std,
        in_chans=int(data.get("in_chans", len(mean))),
        classes=tuple(str(c) for c in data["classes"]),
        step=int(ckpt["step"]) if ckpt.get("step") is not None else None,
        train_config=dict(ckpt.get("config") or {}),
    )


def check_members(members: Sequence[Member], splits: Any = None, data_name: str = "") -> None:
    """Refuse members with different class lists (probabilities would not align) and, given ``splits``, one
    the data cannot feed (classes, channels, or the one image size of an in-memory dataset)."""
    first = members[0]
    for m in members[1:]:
        if m.classes != first.classes:
            raise EvaluationError(
                f"{m.path}: {_class_difference(m.classes, first.classes, str(first.path))}; "
                f"an ensemble needs members trained on the same class list"
            )
    if splits is None:
        return
    classes, data = tuple(map(str, splits.classes)), f"data {data_name}"
    for m in members:
        if m.classes != classes:
            problem = _class_difference(m.classes, classes, data)
        elif m.in_chans != splits.in_chans:
            problem = (
                f"the model takes {m.in_chans}-channel images but {data} gives {splits.in_chans}-channel ones"
            )
        elif getattr(splits.val, "images", None) is not None and m.input_size != splits.val.input_size:
            size = splits.val.input_size  # an in-memory dataset: one image size
            problem = f"the model takes {m.input_size} px inputs but {data} provides {size} px images"
        else:
            continue
        raise EvaluationError(f"{m.path}: {problem}; evaluate it on the data it was trained on")


def _class_difference(a: Sequence[str], b: Sequence[str], other: str) -> str:
    if len(a) != len(b):
        return f"it has {len(a)} classes, {other} has {len(b)}"
    i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return f"its class {i} is {a[i]!r}, {other}'s is {b[i]!r}"
