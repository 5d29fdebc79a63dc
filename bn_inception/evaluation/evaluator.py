"""Evaluate checkpoints alone and as an ensemble, with 1, 10 or 144 crops (Sec. 4.2.3, Figure 4's table).

One pass over the data: each validation image is read and decoded once, cut into the crops every member
needs (one crop set per distinct input size), and every member runs on the same batch. Members may differ
in input size and normalisation (each gets the crops of its own size, normalised with its own mean/std on
the device by ``to_model_input``); members with different class lists are refused. With device decoding
(``data.decode=gpu``) the loader sends JPEG bytes (:class:`EncodedViews`): the batch is decoded on the GPU
in one call and cut there, single crops with the data pipeline's batched resampler, 10 and 144 crops with
:func:`bn_inception.evaluation.crops.make_crops` on each decoded image.

Library code: plain arguments only; ``evaluate.py`` turns the Hydra config into these.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bn_inception.data.device import EncodedBatch, decode_images, eval_geometry, resample, to_model_input
from bn_inception.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from bn_inception.engine.precision import autocast_context
from bn_inception.evaluation.crops import make_crops
from bn_inception.evaluation.ensemble import (
    TOPK,
    bootstrap_error_ci,
    bootstrap_mean_ci,
    crop_averaged_probs,
    distinct_crops,
    ensemble_probs,
    error_percent,
    per_class_error,
    topk_correct,
)

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "best.pt"  # what a run or sweep directory is searched for (docs/design.md run dir)


class EvaluationError(RuntimeError):
    """A known bad input (checkpoints, data, options); the message is one line that says what to do."""


# ----------------------------------------------------------------------------------------- checkpoints


def _checkpoints_under(directory: Path) -> list[Path]:
    """Every ``*/checkpoints/best.pt`` below ``directory``, broken links included (named when loaded, not
    dropped); links to run directories are followed (a folder of links to runs is an ensemble), each
    real directory once."""
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
    """Expand checkpoint files, globs and run/sweep directories (searched for ``*/checkpoints/best.pt``).

    Files named explicitly are kept in the order given (a file given twice is evaluated twice); a glob or a
    directory contributes its matches in sorted order. A path that exists is taken as it is, even when it
    has glob characters (a sweep directory named after a list-valued key has brackets). Existence of
    explicit files is checked on loading.
    """
    specs = [specs] if isinstance(specs, str | os.PathLike) else list(specs)
    if not [s for s in specs if str(s).strip()]:
        raise EvaluationError(
            "no checkpoints given; pass checkpoints=PATH, a list [a.pt,b.pt], a glob or a sweep dir"
        )
    found: list[Path] = []
    for spec in map(str, specs):
        if glob.has_magic(spec) and not Path(spec).exists():
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise EvaluationError(
                    f"checkpoints={spec} matches no file; check the pattern (quote it for the shell)"
                )
            expanded = [p for m in map(Path, matches) for p in (_checkpoints_under(m) if m.is_dir() else [m])]
            if not expanded:
                raise EvaluationError(
                    f"checkpoints={spec} matches only directories without */checkpoints/{CHECKPOINT_NAME}"
                )
            found += expanded
        elif Path(spec).is_dir():
            under = _checkpoints_under(Path(spec))
            if not under:
                raise EvaluationError(
                    f"checkpoints={spec} is a directory without */checkpoints/{CHECKPOINT_NAME}; pass a run "
                    f"or sweep directory written by train.py, or the .pt files themselves"
                )
            found += under
        else:
            found.append(Path(spec))
    return found


def member_names(paths: Sequence[Path]) -> list[str]:
    """Short unique row names: run directories (or bare files, without ``.pt``) relative to their common
    parent, e.g. ``bn_x30/seed0``; a run alone keeps its experiment, ``bn_x30/seed0``, not ``seed0``.

    A checkpoint in a run's ``checkpoints/`` other than ``best.pt`` keeps its stem (``seed0:last``);
    repeats get ``#2``, ``#3``.
    """
    labels, suffixes = [], []
    for p in paths:
        in_run = p.parent.name == "checkpoints"
        labels.append((p.parent.parent if in_run else p.with_suffix("")).resolve())
        suffixes.append(f":{p.stem}" if in_run and p.name != CHECKPOINT_NAME else "")
    if len(set(labels)) > 1:
        common = Path(os.path.commonpath(labels))
    elif any(p.parent.name == "checkpoints" for p in paths):
        common = _run_root(labels[0])  # one run: named as in its sweep, or <experiment>/seed<k>
    else:
        common = labels[0].parent
    names, seen = [], {}
    for label, suffix in zip(labels, suffixes, strict=True):
        name = label.relative_to(common).as_posix() + suffix
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return names


def _run_root(run_dir: Path) -> Path:
    """The folder a run's name is relative to: its sweep (the folder with Hydra's ``multirun.yaml``), else
    the folder above ``<experiment>/seed<k>``."""
    for parent in run_dir.parents:
        if (parent / "multirun.yaml").exists():
            return parent
    return run_dir.parent.parent


@dataclass
class Member:
    """One network to evaluate, with what its checkpoint says about its inputs."""

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
    """Load a checkpoint (``weights_only``) and rebuild its network in eval mode on ``device``."""
    ckpt = load_checkpoint(path, map_location="cpu")
    data = ckpt.get("data")
    if not isinstance(data, dict) or not {"input_size", "mean", "std", "classes"} <= set(data):
        raise CheckpointError(
            f"checkpoint {path} has no data entry (input_size, mean, std, classes); "
            "it was not written by train.py"
        )
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


def check_members(members: Sequence[Member]) -> None:
    """Refuse an ensemble whose members predict different class lists (their probabilities do not align)."""
    first = members[0]
    for m in members[1:]:
        if m.classes != first.classes:
            raise EvaluationError(
                f"{m.path}: {_class_difference(m.classes, first.classes, str(first.path))}; "
                f"an ensemble needs members trained on the same class list"
            )


def check_data(members: Sequence[Member], classes: Sequence[str], in_chans: int, data_name: str) -> None:
    """Refuse members the data cannot feed: another class list, or another number of image channels."""
    classes = tuple(str(c) for c in classes)
    for m in members:
        if m.classes != classes:
            raise EvaluationError(
                f"{m.path}: {_class_difference(m.classes, classes, f'data {data_name}')}; "
                f"evaluate it on the dataset it was trained on (data=<name> data.root=...)"
            )
        if m.in_chans != in_chans:
            raise EvaluationError(
                f"{m.path}: the model takes {m.in_chans}-channel images but data {data_name} "
                f"gives {in_chans}-channel ones; evaluate it on the dataset it was trained on"
            )


def _class_difference(a: Sequence[str], b: Sequence[str], other: str) -> str:
    if len(a) != len(b):
        return f"it has {len(a)} classes, {other} has {len(b)}"
    i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return f"its class {i} is {a[i]!r}, {other}'s is {b[i]!r}"


# ------------------------------------------------------------------------------------------- devices


# ---------------------------------------------------------------------------------------------- data


# --------------------------------------------------------------------------------------- evaluation


@dataclass
class EncodedViews:
    """A batch of evaluation images still JPEG-encoded (``data.decode=gpu``): ``crops`` crops per image
    for each of ``sizes``, cut on the device by :func:`device_views`."""

    batch: EncodedBatch
    crops: int
    sizes: list[int]

    def __len__(self) -> int:
        return len(self.batch)

    def pin_memory(self, device: Any = None) -> EncodedViews:
        return self  # the DataLoader's pin-memory thread calls this; nvJPEG reads pageable memory


def device_views(views: EncodedViews, device: torch.device) -> dict[int, torch.Tensor]:
    """Decode ``views`` on ``device`` once and cut every size's crops: {size: [B, crops, C, S, S]} in
    0-255 (float for single crops, from the batched resampler; uint8 from make_crops otherwise)."""
    images = decode_images(views.batch, device)
    out = {}
    for size in views.sizes:
        if views.crops == 1:
            rows, cols = eval_geometry(views.batch.sizes, size)
            out[size] = resample(images, rows, cols, None, size).unsqueeze(1)
        else:
            out[size] = torch.stack([make_crops(image, views.crops, size) for image in images])
    return out


def single_crops(
    views: dict[int, torch.Tensor] | EncodedViews, size: int, device: torch.device
) -> torch.Tensor:
    """The first crop of every image at ``size``: [B, C, S, S] (uint8 on the CPU, or on ``device``)."""
    chosen = device_views(views, device) if isinstance(views, EncodedViews) else views
    return chosen[size][:, 0]


def normalise(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], channels_last: bool
) -> torch.Tensor:
    """``[N, C, S, S]`` on the device, uint8 or float in 0-255 -> float32 ``(x / 255 - mean) / std``: the
    data pipeline's ``to_model_input`` (the loader ships uint8 crops, 4x fewer bytes)."""
    return to_model_input(images, mean, std, images.device, channels_last)


@dataclass
class Predictions:
    """Per-image results of one pass: top-1/top-5 hits per row, the labels, and the throughput."""

    labels: np.ndarray  # [N] int
    correct: dict[str, np.ndarray]  # row key -> bool [N, 2] (top-1, top-5)
    seconds: float
    distinct_crops: tuple[int, ...] = ()  # the distinct crops per image seen in the batches (distinct_crops)

    @property
    def images(self) -> int:
        return len(self.labels)


def member_probs(
    members: Sequence[Member],
    views: dict[int, torch.Tensor] | EncodedViews,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    forward_batch: int,
    distinct: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[torch.Tensor]:
    """Each member's class probabilities ``[B, K]``, averaged over the crops of each image.

    ``views`` maps an input size to uint8 (or float, 0-255) crops ``[B, crops, C, S, S]``, or is an
    :class:`EncodedViews` decoded and cut on the device first. Crops that coincide for every image of the
    batch are evaluated once and weighted by how many they stand for (``distinct_crops``). The crops go to
    the device in chunks of ``forward_batch``; a chunk is moved once per input size and normalised once
    per (size, mean, std), then shared by every member that takes it.
    """
    if isinstance(views, EncodedViews):
        views = device_views(views, device)
    if distinct is None:  # coinciding crops are evaluated once
        distinct = {s: distinct_crops(v) for s, v in views.items()}
    logits: list[list[torch.Tensor]] = [[] for _ in members]
    for size, v in views.items():
        positions, _ = distinct[size]
        flat = v[:, positions].flatten(0, 1)  # [B * distinct crops, C, S, S], an image's crops adjacent
        for lo in range(0, flat.shape[0], forward_batch):
            chunk = flat[lo : lo + forward_batch].to(device, non_blocking=True)
            inputs: dict[tuple, torch.Tensor] = {}
            for i, m in enumerate(members):
                if m.input_size != size:
                    continue
                key = (m.mean, m.std)
                if key not in inputs:
                    inputs[key] = normalise(chunk, m.mean, m.std, channels_last)
                with autocast_context(device, amp_dtype):
                    logits[i].append(m.model(inputs[key]).float())
    return [
        crop_averaged_probs(torch.cat(chunks), len(distinct[m.input_size][0]), distinct[m.input_size][1])
        for m, chunks in zip(members, logits, strict=True)
    ]


@torch.no_grad()
def predict(
    members: Sequence[Member],
    batches: Iterable[tuple[dict[int, torch.Tensor], torch.Tensor]],
    ensembles: dict[str, Sequence[int]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    forward_batch: int = 256,
    total: int | None = None,
    progress: bool = True,
) -> Predictions:
    """Run every member on every batch of crops; record each member's and each ensemble's top-k hits.

    ``ensembles`` maps a row key to member indices; their class probabilities (each averaged over the
    crops) are averaged arithmetically (Sec. 4.2.3). ``forward_batch`` bounds the crops in one forward
    pass (144 crops x a batch of images would not fit on a GPU at once).
    """
    hits: dict[str, list[torch.Tensor]] = {m.name: [] for m in members} | {k: [] for k in ensembles}
    labels_seen: list[torch.Tensor] = []
    bar = tqdm(
        total=total,
        unit="img",
        dynamic_ncols=True,
        mininterval=1.0,
        desc="eval",
        disable=None if progress else True,  # None: no bar off a terminal (a log file gets no \r lines)
    )
    start, n_distinct = time.perf_counter(), set()
    for views, labels in batches:
        if labels.shape[0] == 0:  # every image of the batch was unreadable (the loader counts them)
            continue
        if isinstance(views, EncodedViews):
            views = device_views(views, device)
        distinct = {s: distinct_crops(v) for s, v in views.items()}
        n_distinct.update(len(positions) for positions, _ in distinct.values())
        probs = member_probs(members, views, device, amp_dtype, channels_last, forward_batch, distinct)
        labels_dev = labels.to(device)
        for m, p in zip(members, probs, strict=True):
            hits[m.name].append(topk_correct(p, labels_dev).cpu())
        for key, idx in ensembles.items():
            hits[key].append(topk_correct(ensemble_probs([probs[i] for i in idx]), labels_dev).cpu())
        labels_seen.append(labels.cpu())
        bar.update(labels.shape[0])
    bar.close()
    seconds = time.perf_counter() - start
    if not labels_seen:
        raise EvaluationError("the validation split yielded no images; check data.root and images")
    return Predictions(
        labels=torch.cat(labels_seen).numpy().astype(np.int64),
        correct={k: torch.cat(v).numpy() for k, v in hits.items()},
        seconds=seconds,
        distinct_crops=tuple(sorted(n_distinct)),
    )


# ------------------------------------------------------------------------------- population statistics


def with_population_stats(
    member: Member,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_batches: int,
    device: torch.device,
    channels_last: bool,
) -> Member:
    """A copy of ``member`` whose BN statistics are recomputed over ``num_batches`` training batches.

    Algorithm 2 (steps 8-12): the inference network's BN uses the population mean E[x] = E_B[mu_B] and the
    unbiased variance m/(m-1) E_B[sigma_B^2] over training mini-batches, instead of the moving averages
    kept during training. ``batches`` yields ``[m, C, S, S]`` single crops of training images (uint8, or
    0-255 floats on the device); they are normalised here with the member's mean/std, so
    ``recompute_population_stats`` gets the model's inputs. Computed in float32 (no autocast).
    """
    from bn_inception import recompute_population_stats

    model = copy.deepcopy(member.model)

    def normalised() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in batches:
            yield to_model_input(images, member.mean, member.std, device, channels_last), labels.to(device)

    recompute_population_stats(model, normalised(), num_batches)
    model.eval()
    return Member(
        **{**member.__dict__, "model": model, "name": f"{member.name} [pop]", "bn_stats": "recomputed"}
    )


# ------------------------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table (Figure 4's columns) with its intervals and provenance."""

    name: str
    models: int
    crops: int
    resolution: int | str  # input pixels, or "mixed" for an ensemble of different input sizes
    top1_err: float  # percent
    top5_err: float
    top1_err_ci: tuple[float, float]  # 95% percentile-bootstrap interval, percent
    top5_err_ci: tuple[float, float]
    images: int
    bn_stats: str
    checkpoints: list[str]
    steps: list[int | None]
    per_class: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["top1_err_ci"], out["top5_err_ci"] = list(self.top1_err_ci), list(self.top5_err_ci)
        if out["per_class"] is None:
            del out["per_class"]
        return out


def build_rows(
    members: Sequence[Member],
    ensembles: dict[str, Sequence[int]],
    predictions: Predictions,
    crops: int,
    classes: Sequence[str],
    bootstrap: int = 1000,
    seed: int = 0,
    per_class: bool = False,
) -> list[Row]:
    """Errors (%), bootstrap intervals and (optionally) per-class errors for every member and ensemble."""
    # Each ensemble's row follows its last member's: members, ensemble, [pop] members, ensemble [pop].
    order = [(i, 0, m.name, [i]) for i, m in enumerate(members)]
    order += [(max(idx), 1, key, list(idx)) for key, idx in ensembles.items()]
    groups = [(key, [members[i] for i in idx]) for _, _, key, idx in sorted(order, key=lambda o: o[:2])]
    keys = [key for key, _ in groups]
    stacked = np.concatenate(
        [predictions.correct[k] for k in keys], axis=1
    )  # [N, 2 * rows], paired resampling
    errors = error_percent(stacked).reshape(len(keys), len(TOPK))
    cis = bootstrap_error_ci(stacked, bootstrap, seed).reshape(len(keys), len(TOPK), 2) if bootstrap else None
    rows = []
    for r, (key, group) in enumerate(groups):
        sizes = {m.input_size for m in group}
        table = None
        if per_class:
            err, counts = per_class_error(predictions.correct[key], predictions.labels, len(classes))
            table = [
                {"class": str(c), "images": int(n), "top1_err": _finite(e[0]), "top5_err": _finite(e[1])}
                for c, n, e in zip(classes, counts, err, strict=True)
            ]
        rows.append(
            Row(
                name=key,
                models=len(group),
                crops=crops,
                resolution=sizes.pop() if len(sizes) == 1 else "mixed",
                top1_err=float(errors[r, 0]),
                top5_err=float(errors[r, 1]),
                top1_err_ci=tuple(map(float, cis[r, 0])) if cis is not None else (float("nan"),) * 2,
                top5_err_ci=tuple(map(float, cis[r, 1])) if cis is not None else (float("nan"),) * 2,
                images=predictions.images,
                bn_stats=group[0].bn_stats,
                checkpoints=[str(m.path) for m in group],
                steps=[m.step for m in group],
                per_class=table,
            )
        )
    return rows


@dataclass(frozen=True)
class Gain:
    """How much an ensemble beats its best member: error points (member minus ensemble, > 0: the ensemble
    is better), each with its paired 95% bootstrap interval over the same images."""

    ensemble: str
    best_member: str  # the member with the lowest top-1 error (point estimate; first of ties)
    top1_gain: float  # percentage points
    top5_gain: float
    top1_gain_ci: tuple[float, float]
    top5_gain_ci: tuple[float, float]
    images: int

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["top1_gain_ci"], out["top5_gain_ci"] = list(self.top1_gain_ci), list(self.top5_gain_ci)
        return out


def ensemble_gains(
    members: Sequence[Member],
    ensembles: dict[str, Sequence[int]],
    predictions: Predictions,
    bootstrap: int = 1000,
    seed: int = 0,
) -> list[Gain]:
    """Each ensemble's gain over its best member. The interval is a paired bootstrap: every resample draws
    the same images for both, so the spread is that of the per-image difference, far narrower than the
    two errors' own intervals suggest (they share most of their hard images)."""
    gains = []
    for key, idx in ensembles.items():
        errs = {members[i].name: 1.0 - predictions.correct[members[i].name] for i in idx}
        best = min(errs, key=lambda name: errs[name][:, 0].mean())
        diff = errs[best] - (1.0 - predictions.correct[key])  # [N, 2]: per image, member wrong - ens wrong
        gain = 100.0 * diff.mean(axis=0)
        ci = bootstrap_mean_ci(diff, bootstrap, seed) if bootstrap else np.full((2, 2), np.nan)
        gains.append(
            Gain(
                ensemble=key,
                best_member=best,
                top1_gain=float(gain[0]),
                top5_gain=float(gain[1]),
                top1_gain_ci=tuple(map(float, ci[0])),
                top5_gain_ci=tuple(map(float, ci[1])),
                images=predictions.images,
            )
        )
    return gains


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def ensemble_groups(members: Sequence[Member]) -> dict[str, list[int]]:
    """The ensembles to report: the as-trained members, and the recomputed-statistics ones (>= 2 each)."""
    groups: dict[str, list[int]] = {}
    for stats, key in (("running", "ensemble"), ("recomputed", "ensemble [pop]")):
        idx = [i for i, m in enumerate(members) if m.bn_stats == stats]
        if len(idx) >= 2:
            groups[key] = idx
    return groups
