"""Evaluate checkpoints alone and as an ensemble, with 1, 10 or 144 crops (Sec. 4.2.3, Figure 4's table).

One pass: each image is decoded once (at the smallest JPEG scale that keeps the largest resize needed),
cut into every input size's crops, and every member runs on the same batch, normalised with its own
mean/std. With ``data.decode=gpu`` the JPEG bytes travel, decoded and cut on the GPU by the loader.

Decisions where the paper is silent:
- Data: the first checkpoint's recorded ``data`` with the non-null ``data.*`` on top, unless ``data=<name>``
  is given; a recorded ``decode=gpu`` runs as ``auto`` without a GPU. One size and ``crops=1``: the pixels
  are training-time validation's.
- Population statistics (Algorithm 2): N seeded training mini-batches of m images (the first checkpoint's
  batch size, else the paper's 32) with the *evaluation* geometry (training distortions would shift the
  per-layer statistics away from the centre-cropped test images); every member gets the same batches.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from bn_inception.config import EvalConfig, index_range_of
from bn_inception.data import (
    BadImageError,
    build_datasets,
    build_eval_loader,
    decode_image_file,
    to_model_input,
)
from bn_inception.data.device import EncodedBatch, read_for_device
from bn_inception.engine.precision import (
    autocast_context,
    environment,
    resolve_amp,
    resolve_channels_last,
    resolve_device,
)
from bn_inception.evaluation.checkpoints import (
    EvaluationError,
    Member,
    check_members,
    find_checkpoints,
    load_member,
    member_names,
)
from bn_inception.evaluation.crops import REFERENCE_INPUT, crop_resize_sizes, make_crops
from bn_inception.evaluation.ensemble import crop_averaged_probs, distinct_crops, ensemble_probs, topk_correct
from bn_inception.evaluation.table import Gain, Row, build_rows, ensemble_gains, per_image

log = logging.getLogger(__name__)


def cut_views(images: list[Any], crops: int, sizes: Sequence[int]) -> dict[int, torch.Tensor]:
    """{size: uint8 [B, crops, C, S, S]} from decoded images (PIL, or [C, H, W] on any device)."""
    return {s: torch.stack([make_crops(im, crops, s) for im in images]) for s in sizes} if images else {}


class MultiCropImages(Dataset):
    """A dataset's images, decoded once each and cut into every member's crops (:func:`cut_views`; by the
    loader on the GPU with ``data.decode=gpu``). Speaks the data package's ``load_batch(keys, on_bad)``, so
    its loader drops and counts unreadable images as training-time validation does."""

    def __init__(
        self, source: Dataset, crops: int, sizes: Sequence[int], indices: Sequence[int] | None = None
    ):
        self.source, self.crops, self.sizes = source, crops, sorted(set(sizes))
        self.indices = list(indices) if indices is not None else range(len(source))
        side = max(max(crop_resize_sizes(crops, s)) for s in self.sizes)  # the largest shorter side needed
        self.min_size = (side, side)
        self.device = getattr(source, "decode_device", None)

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, index: int) -> Any:
        if getattr(self.source, "images", None) is not None:  # in memory, resized as its validation does
            return self.source.images[index]
        if self.device is not None:
            return read_for_device(self.source.paths[index])
        return decode_image_file(self.source.paths[index], self.min_size)

    def load_batch(self, keys: Sequence[Any], on_bad: str = "raise") -> tuple[Any, torch.Tensor, dict]:
        images, kept, bad = [], [], []
        for index in (self.indices[int(k)] for k in keys):
            try:
                images.append(self._read(index))
                kept.append(index)
            except BadImageError:
                bad.append(self.source.paths[index])
                if on_bad != "skip":
                    raise
        info = {"requested": len(keys), "skipped": len(bad), "bad_files": bad}
        labels = torch.tensor([int(self.source.labels[i]) for i in kept], dtype=torch.int64)
        cut = functools.partial(cut_views, crops=self.crops, sizes=self.sizes)
        if self.device is not None:  # decoded and cut on the GPU by the loader
            return EncodedBatch(images, [self.source.paths[i] for i in kept], self.device, cut), labels, info
        return cut(images), labels, info

    def __getitem__(self, key: int) -> tuple[dict[int, torch.Tensor], int]:
        batch, labels, _ = self.load_batch([key])
        return {s: v[0] for s, v in batch.items()}, int(labels[0])


def member_probs(
    members: Sequence[Member],
    views: dict[int, torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    forward_batch: int,
    distinct: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[torch.Tensor]:
    """Each member's class probabilities ``[B, K]``, averaged over each image's crops ``views`` (0-255).
    Crops equal for every image of the batch run once, weighted by their count (``distinct``); they go to the
    device in chunks of ``forward_batch``, normalised once per (size, mean, std) for the members taking it."""
    logits: list[list[torch.Tensor]] = [[] for _ in members]
    distinct = distinct or {s: distinct_crops(v) for s, v in views.items()}
    for size, v in views.items():
        flat = v[:, distinct[size][0]].flatten(0, 1)  # [B * distinct crops, C, S, S], an image's adjacent
        for lo in range(0, flat.shape[0], forward_batch):
            chunk = flat[lo : lo + forward_batch].to(device, non_blocking=True)
            inputs: dict[tuple, torch.Tensor] = {}
            for i, m in enumerate(members):
                if m.input_size == size:
                    key = (m.mean, m.std)
                    if key not in inputs:
                        inputs[key] = to_model_input(chunk, m.mean, m.std, device, channels_last)
                    with autocast_context(device, amp_dtype):
                        logits[i].append(m.model(inputs[key]).float())
    return [
        crop_averaged_probs(torch.cat(chunks), len(distinct[m.input_size][0]), distinct[m.input_size][1])
        for m, chunks in zip(members, logits, strict=True)
    ]


@dataclass
class Predictions:
    """Per-image results of one pass: top-1/top-5 hits per row, the labels, and the throughput."""

    labels: np.ndarray  # [N] int
    correct: dict[str, np.ndarray]  # row key -> bool [N, 2] (top-1, top-5)
    seconds: float
    distinct_crops: tuple[int, ...] = ()  # the distinct crops per image seen in the batches

    @property
    def images(self) -> int:
        return len(self.labels)


@torch.no_grad()
def predict(
    members: Sequence[Member],
    batches: Iterable[tuple[Any, torch.Tensor]],
    ensembles: dict[str, Sequence[int]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    forward_batch: int = 256,
    total: int | None = None,
    progress: bool = True,
) -> Predictions:
    """Each member's and each ensemble's (row key -> member indices, probabilities averaged: Sec. 4.2.3)
    top-k hits on every batch. ``forward_batch`` bounds a forward pass (144 crops x a batch would not fit)."""
    hits: dict[str, list[torch.Tensor]] = {m.name: [] for m in members} | {k: [] for k in ensembles}
    labels_seen, n_distinct = [], set()
    # disable=None: no bar off a terminal (a log file gets no \r lines)
    bar = tqdm(total=total, unit="img", desc="eval", mininterval=1.0, disable=None if progress else True)
    start = time.perf_counter()
    for views, labels in batches:
        if labels.shape[0] == 0:  # every image of the batch was unreadable (the loader counts them)
            continue
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
    if not labels_seen:
        raise EvaluationError("the validation split yielded no images; check data.root and images")
    return Predictions(
        labels=torch.cat(labels_seen).numpy().astype(np.int64),
        correct={k: torch.cat(v).numpy() for k, v in hits.items()},
        seconds=time.perf_counter() - start,
        distinct_crops=tuple(sorted(n_distinct)),
    )


def with_population_stats(
    member: Member, batches: Iterable[tuple[torch.Tensor, Any]], num_batches: int, device: torch.device,
    channels_last: bool,
) -> Member:  # fmt: skip
    """A copy of ``member`` with Algorithm 2's (steps 8-12) population statistics E[x] and m/(m-1) Var over
    ``num_batches`` of ``[m, C, S, S]`` 0-255 crops instead of the moving averages; float32 (no autocast)."""
    from bn_inception import recompute_population_stats

    model = copy.deepcopy(member.model)
    inputs = (to_model_input(x, member.mean, member.std, device, channels_last) for x, _ in batches)
    recompute_population_stats(model, inputs, num_batches)
    return dataclasses.replace(member, model=model.eval(), name=f"{member.name} [pop]", bn_stats="recomputed")


@dataclass
class EvalReport:
    rows: list[Row]
    meta: dict[str, Any]
    gains: list[Gain] = field(default_factory=list)  # each ensemble against its best member


def _read(loader: Iterable, what: str) -> Iterator:
    """``loader``'s batches; a read error (too many bad files, a vanished root) is one line, no table."""
    try:
        yield from loader
    except (RuntimeError, OSError, ValueError) as e:
        raise EvaluationError(f"reading the {what} images failed: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def resolve_data_kwargs(
    selected: dict[str, Any] | None, overrides: dict[str, Any], recorded: dict[str, Any] | None, source: str
) -> dict[str, Any]:
    """``selected`` (``data=<name>``), or else the ``recorded`` one with the non-null ``overrides`` on top."""
    if selected is not None:
        return dict(selected)
    if not recorded or "name" not in recorded:
        raise EvaluationError(
            f"{source} records no data config; pass data=<name> (a configs/data/ file) and data.root=..."
        )
    return {**recorded, **{k: v for k, v in overrides.items() if v is not None}}


def evaluate_checkpoints(
    checkpoints: str | Sequence[str],
    options: EvalConfig,
    data_kwargs: dict[str, Any] | None = None,
    data_overrides: dict[str, Any] | None = None,
) -> EvalReport:
    """Evaluate every checkpoint alone and all of them as an ensemble; see the module docstring."""
    try:
        crop_resize_sizes(options.crops, REFERENCE_INPUT)  # the schema checks too: here for library callers
        device = resolve_device(options.device)
        amp_dtype = resolve_amp(options.amp, device)
        channels_last = resolve_channels_last(options.channels_last, device)
    except ValueError as e:
        raise EvaluationError(str(e)) from e
    paths = find_checkpoints(checkpoints)
    members = [
        load_member(p, n, device, channels_last) for p, n in zip(paths, member_names(paths), strict=True)
    ]
    check_members(members)
    recorded = members[0].train_config.get("data")
    kwargs = resolve_data_kwargs(data_kwargs, data_overrides or {}, recorded, str(paths[0]))
    if data_kwargs is None and kwargs.get("decode") == "gpu" and device.type != "cuda":
        kwargs["decode"] = "auto"  # the training run's GPU decoding; decode on the CPU here
    data_name = str(kwargs.get("name", "data"))
    try:
        splits = build_datasets(**kwargs, seed=options.seed, device=device)
    except (ValueError, OSError) as e:  # a wrong root, layout or key: the data package's one-line messages
        raise EvaluationError(f"data {data_name}: {_first_line(e)}") from e
    try:
        chosen = index_range_of(options.images, len(splits.val))
    except ValueError as e:
        raise EvaluationError(str(e)) from e
    check_members(members, splits, data_name)
    loader = functools.partial(
        build_eval_loader,
        workers=options.workers if options.workers is not None else splits.loader["workers"],
        max_bad_fraction=splits.loader["max_bad_fraction"],
        pin_memory=device.type == "cuda",
    )
    m = None
    if options.population_stats:
        recorded_batch = (members[0].train_config.get("trainer") or {}).get("batch_size")
        m = options.population_batch_size or int(recorded_batch or 32)  # else the paper's mini-batch
        members += _population_members(members, splits.train, m, options, loader, device, channels_last)
    ensembles = {}  # the as-trained members, and the recomputed-statistics ones (>= 2 each)
    for stats, key in (("running", "ensemble"), ("recomputed", "ensemble [pop]")):
        if len(idx := [i for i, member in enumerate(members) if member.bn_stats == stats]) >= 2:
            ensembles[key] = idx

    dataset = MultiCropImages(splits.val, options.crops, [m.input_size for m in members], chosen)
    images = loader(dataset, batch_size=options.batch_size or max(1, 256 // options.crops))
    log.info("evaluating %d model(s) x %d crop(s) on %d %s validation images (%s, amp %s)",
             sum(m.bn_stats == "running" for m in members), options.crops, images.num_images, data_name,
             device, amp_dtype)  # fmt: skip
    batches = _read(images, f"{data_name} validation")
    predictions = predict(
        members, batches, ensembles, device, amp_dtype, channels_last, options.forward_batch,
        total=images.num_images, progress=options.progress,
    )  # fmt: skip
    if predictions.distinct_crops and max(predictions.distinct_crops) < options.crops:
        log.info("%d crops per image: %s distinct (equal crops evaluated once, weighted by their count: the "
                 "same average)", options.crops, "/".join(map(str, predictions.distinct_crops)))  # fmt: skip
    rows = build_rows(
        members, ensembles, predictions, options.crops, splits.classes, options.bootstrap, options.seed,
        options.per_class,
    )  # fmt: skip
    gains = ensemble_gains(members, ensembles, predictions, options.bootstrap, options.seed)
    data = dict(name=data_name, root=kwargs.get("root"), split="val", images=predictions.images,
                skipped_images=images.skipped_images, bad_files=images.bad_files[:20])  # fmt: skip
    meta = {
        "data": data,
        "crops": options.crops,
        # crops that coincide for every image of a batch are evaluated once, weighted by their count
        "distinct_crops": list(predictions.distinct_crops),
        "image_range": [chosen.start, chosen.stop],  # validation indices evaluated: start to stop - 1
        "population_stats": options.population_stats,
        "population_batch_size": m,
        "bootstrap": dict(resamples=options.bootstrap, seed=options.seed, level=0.95, method="percentile"),
        "img_per_s": predictions.images / predictions.seconds if predictions.seconds else None,
        "seconds": predictions.seconds,
        "environment": environment(device, 1),
        "ensemble_gains": [asdict(g) for g in gains],
    }
    if options.per_image:
        meta["per_image"] = per_image(predictions)
    return EvalReport(rows=rows, meta=meta, gains=gains)


def _population_members(
    members: list[Member], train: Dataset, m: int, options: EvalConfig, loader: Callable,
    device: torch.device, channels_last: bool,
) -> list[Member]:  # fmt: skip
    """Every member again, with Algorithm 2's population statistics from the same ``m``-image batches."""
    wanted = options.population_stats * m
    if wanted > len(train):
        raise EvaluationError(
            f"population_stats={options.population_stats} batches of {m} need {wanted} training images; "
            f"the training split has {len(train)}"
        )
    chosen = np.random.default_rng(options.seed).choice(len(train), size=wanted, replace=False)
    subset = MultiCropImages(train, 1, [x.input_size for x in members], chosen.tolist())
    out = []
    for member in members:
        log.info("recomputing BN population statistics of %s from %d batches of %d training images",
                 member.name, options.population_stats, m)  # fmt: skip
        batches = (
            (v[member.input_size][:, 0], y)
            for v, y in _read(loader(subset, batch_size=m), "training")
            if len(y) >= 2
        )
        out.append(with_population_stats(member, batches, options.population_stats, device, channels_last))
    return out
