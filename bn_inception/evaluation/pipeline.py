"""From checkpoint paths to the table: load the members, build the data, one pass, rows.

``evaluate_checkpoints`` is what ``evaluate.py`` calls with plain arguments (see configs/evaluate.yaml for
the meaning and units of every option).

Decisions where the paper is silent:
- Data: the dataset recorded in the first checkpoint (its training config's ``data`` section), unless a
  data config is given; keys in ``data_overrides`` (e.g. ``root``) replace the recorded ones.
- Decoding: a validation JPEG is decoded once, at the smallest libjpeg scale (1/2, 1/4, 1/8) that keeps the
  largest resize any member needs (``bn_inception.data.decode``), as the data pipeline's own validation
  does. With one input size and ``crops=1`` this is exactly training-time validation's pixels. With
  ``data.decode=gpu`` (or ``auto`` on a GPU) the loader sends the JPEG bytes and the batch is decoded and
  cut on the GPU (``bn_inception.evaluation.evaluator.device_views``); a checkpoint whose recorded data
  config says ``gpu`` is evaluated with ``auto`` on a machine without one.
- Population statistics (Algorithm 2, ``population_stats=N``): N training mini-batches of m images
  (m = the first checkpoint's training batch size, the paper's 32), drawn as a seeded random subset of the
  training set and transformed with the *evaluation* geometry (shorter side to 256/224 of the input, centre
  crop, no distortion). Algorithm 2 replaces the moving averages by population statistics so the
  inference network is deterministic and matched to the data it is applied to; the test images are
  centre crops, while the training distortions (8%-100% area crops, photometric changes) shift
  per-layer statistics away from that. Every member gets the same batches.
- Bootstrap: percentile intervals from ``bootstrap`` resamples of the evaluated images (numpy, seeded by
  ``seed``), paired across rows (see ``bn_inception.evaluation.ensemble.bootstrap_error_ci``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bn_inception.config import EvalConfig, index_range_of
from bn_inception.engine.precision import environment, resolve_amp, resolve_channels_last, resolve_device
from bn_inception.evaluation.crops import CROP_COUNTS, crop_resize_sizes, make_crops
from bn_inception.evaluation.ensemble import TOPK
from bn_inception.evaluation.evaluator import (
    EncodedViews,
    EvaluationError,
    Gain,
    Member,
    Predictions,
    Row,
    build_rows,
    check_data,
    check_members,
    ensemble_gains,
    ensemble_groups,
    find_checkpoints,
    load_member,
    member_names,
    predict,
    single_crops,
    with_population_stats,
)

log = logging.getLogger(__name__)

DEFAULT_POPULATION_BATCH = 32  # Algorithm 2's m when a checkpoint records none: the paper's mini-batch


@dataclass
class EvalReport:
    """The rows of the table plus what produced them (the JSON's other keys)."""

    rows: list[Row]
    meta: dict[str, Any]
    gains: list[Gain] = field(default_factory=list)  # each ensemble against its best member


# ---------------------------------------------------------------------------------------------- data


def resolve_data_kwargs(
    selected: dict[str, Any] | None, overrides: dict[str, Any], recorded: dict[str, Any] | None, source: str
) -> dict[str, Any]:
    """The data config to build: ``selected`` (a configs/data/<name>.yaml given on the command line) as is,
    or else the ``recorded`` one of the first checkpoint with the non-null ``overrides`` on top."""
    if selected is not None:
        return dict(selected)
    if not recorded or "name" not in recorded:
        raise EvaluationError(
            f"{source} records no data config; pass data=<name> (a configs/data/ file) and data.root=..."
        )
    return {**recorded, **{k: v for k, v in overrides.items() if v is not None}}


class MultiCropImages(Dataset):
    """A ``bn_inception.data`` dataset's images, decoded once each and cut into every member's crops.

    Speaks the data package's batched protocol (``load_batch(keys, on_bad)`` -> (batch, labels, info)) so
    its evaluation loader drops and counts unreadable images as in training-time validation. A batch is
    ``{input_size: uint8 [B, crops, C, S, S]}``, or with device decoding (the source dataset's
    ``decode_on_device``) an :class:`EncodedViews` of the JPEG bytes, cut on the device.
    """

    def __init__(
        self, source: Dataset, crops: int, input_sizes: Sequence[int], indices: Sequence[int] | None = None
    ):
        if crops not in CROP_COUNTS:
            raise EvaluationError(
                f"crops={crops} is not valid; use one of {', '.join(map(str, CROP_COUNTS))}"
            )
        self.source, self.crops = source, crops
        self.input_sizes = sorted(set(input_sizes))
        self.indices = list(indices) if indices is not None else None
        # The largest shorter side any member's crops resize to: decoding may stop at a JPEG scale above it.
        self.max_resize = max(max(crop_resize_sizes(crops, s)) for s in self.input_sizes)
        self.decode_on_device = bool(getattr(source, "decode_on_device", False))

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.source)

    def _decoded(self, index: int) -> torch.Tensor:
        from bn_inception.data.datasets import ImageFileDataset, InMemoryImageDataset
        from bn_inception.data.decode import load_image_region

        if isinstance(self.source, ImageFileDataset):
            r = self.max_resize
            image, _ = load_image_region(
                self.source.paths[index],
                lambda h, w: (0, 0, h, w),
                lambda h, w: (r * w / min(h, w), r * h / min(h, w)),
            )
            return image
        if isinstance(self.source, InMemoryImageDataset):
            return self.source.images[index]  # uint8, resized as its own validation transform does
        raise EvaluationError(
            f"cannot read raw images from a {type(self.source).__name__}; "
            "expected a bn_inception.data dataset"
        )

    def load_batch(
        self, keys: Sequence[Any], on_bad: str = "raise"
    ) -> tuple[dict[int, torch.Tensor] | EncodedViews, torch.Tensor, dict]:
        from bn_inception.data.decode import BadImageError
        from bn_inception.data.device import encoded_batch, read_for_device

        views: dict[int, list[torch.Tensor]] = {s: [] for s in self.input_sizes}
        encoded, labels, bad = [], [], []
        for key in keys:
            index = self.indices[int(key)] if self.indices is not None else int(key)
            try:
                if self.decode_on_device:
                    encoded.append(read_for_device(self.source.paths[index]))
                else:
                    image = self._decoded(index)
            except BadImageError:
                bad.append(self.source.paths[index])
                if on_bad == "skip":
                    continue
                raise
            if not self.decode_on_device:
                for s in self.input_sizes:
                    views[s].append(make_crops(image, self.crops, s))
            labels.append(int(self.source.labels[index]))
        info = {"requested": len(keys), "skipped": len(bad), "bad_files": bad}
        if self.decode_on_device:
            batch = EncodedViews(encoded_batch(encoded, None, None, 0), self.crops, self.input_sizes)
            return batch, torch.tensor(labels, dtype=torch.int64), info
        batch = {
            s: torch.stack(v)
            if v
            else torch.empty((0, self.crops, self.source.in_chans, s, s), dtype=torch.uint8)
            for s, v in views.items()
        }
        return batch, torch.tensor(labels, dtype=torch.int64), info

    def __getitem__(self, key: int) -> tuple[dict[int, torch.Tensor], int]:
        batch, labels, _ = self.load_batch([key])
        if isinstance(batch, EncodedViews):
            raise TypeError("MultiCropImages with device decoding is read in batches (build_eval_loader)")
        return {s: v[0] for s, v in batch.items()}, int(labels[0])


def data_errors(loader: Iterable, what: str) -> Iterator:
    """Iterate ``loader``; an error raised while reading a batch (too many unreadable files, a vanished
    root) becomes a one-line :class:`EvaluationError`, so no partial table is reported."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (RuntimeError, OSError, ValueError) as e:
            raise EvaluationError(f"reading the {what} images failed: {_first_line(e)}") from e
        yield batch


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_input_sizes(members: Sequence[Member], source: Dataset, data_name: str) -> None:
    """Refuse a member the data cannot feed at its size: in-memory datasets (Fashion-MNIST) hold images
    of one fixed size, and only models trained at that size fit them; decoded files serve any size."""
    from bn_inception.data.datasets import InMemoryImageDataset

    if not isinstance(source, InMemoryImageDataset):
        return
    for m in members:
        if m.input_size != source.input_size:
            raise EvaluationError(
                f"{m.path}: the model takes {m.input_size} px inputs but data {data_name} provides "
                f"{source.input_size} px images; evaluate it on the data it was trained on"
            )


# ----------------------------------------------------------------------------------------- the pass


def evaluate_checkpoints(
    checkpoints: str | Sequence[str],
    options: EvalConfig,
    data_kwargs: dict[str, Any] | None = None,
    data_overrides: dict[str, Any] | None = None,
) -> EvalReport:
    """Evaluate every checkpoint alone and all of them as an ensemble; see the module docstring."""
    from bn_inception.data import build_datasets, build_eval_loader

    if options.crops not in CROP_COUNTS:
        raise EvaluationError(
            f"crops={options.crops} is not valid; use one of {', '.join(map(str, CROP_COUNTS))}"
        )
    if options.population_stats < 0:
        raise EvaluationError(
            f"population_stats={options.population_stats} is not valid; use 0 (off) or a number of batches"
        )
    try:
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

    kwargs = resolve_data_kwargs(
        data_kwargs, data_overrides or {}, members[0].train_config.get("data"), str(paths[0])
    )
    data_name = str(kwargs.get("name", "data"))
    if data_kwargs is None and kwargs.get("decode") == "gpu" and device.type != "cuda":
        kwargs["decode"] = "auto"  # the training run's GPU decoding; decode on the CPU here
    try:
        splits = build_datasets(**kwargs, seed=options.seed, device=device)
    except (ValueError, OSError) as e:  # a wrong root, layout or key: the data package's one-line messages
        raise EvaluationError(f"data {data_name}: {_first_line(e)}") from e
    check_data(members, splits.classes, splits.in_chans, data_name)
    check_input_sizes(members, splits.val, data_name)
    workers = options.workers if options.workers is not None else splits.loader["workers"]
    max_bad = splits.loader["max_bad_fraction"]

    population_batch = None
    if options.population_stats:
        population_batch = population_batch_size(options.population_batch_size, members[0].train_config)
        members += _population_members(
            members, splits.train, options.population_stats, population_batch, options.seed, workers, max_bad,
            device, channels_last, data_name,
        )  # fmt: skip
    ensembles = ensemble_groups(members)

    sizes = [m.input_size for m in members]
    try:
        chosen = index_range_of(options.images, len(splits.val))
    except ValueError as e:
        raise EvaluationError(str(e)) from e
    images = MultiCropImages(splits.val, options.crops, sizes, indices=chosen)
    batch_size = options.batch_size or max(1, 256 // options.crops)
    loader = build_eval_loader(
        images,
        batch_size=batch_size,
        workers=workers,
        max_bad_fraction=max_bad,
        pin_memory=device.type == "cuda",
    )
    log.info(
        "evaluating %d model(s) x %d crop(s) on %d %s validation images (%s, amp %s)",
        sum(m.bn_stats == "running" for m in members),
        options.crops,
        loader.num_images,
        data_name,
        device,
        amp_dtype,
    )
    predictions = predict(
        members,
        data_errors(loader, f"{data_name} validation"),
        ensembles,
        device,
        amp_dtype,
        channels_last,
        options.forward_batch,
        total=loader.num_images,
        progress=options.progress,
    )
    if predictions.distinct_crops and max(predictions.distinct_crops) < options.crops:
        log.info(
            "%d crops per image: %s distinct (equal crops evaluated once, weighted by their count: the same "
            "average)",
            options.crops,
            "/".join(map(str, predictions.distinct_crops)),
        )
    rows = build_rows(
        members,
        ensembles,
        predictions,
        options.crops,
        splits.classes,
        options.bootstrap,
        options.seed,
        options.per_class,
    )
    meta = {
        "data": {
            "name": data_name,
            "root": kwargs.get("root"),
            "split": "val",
            "images": predictions.images,
            "skipped_images": loader.skipped_images,
            "bad_files": loader.bad_files[:20],
        },
        "crops": options.crops,
        # crops that coincide for every image of a batch are evaluated once, weighted by their count
        "distinct_crops": list(predictions.distinct_crops),
        "image_range": [chosen.start, chosen.stop],  # validation indices evaluated: start to stop - 1
        "population_stats": options.population_stats,
        "population_batch_size": population_batch,
        "bootstrap": {
            "resamples": options.bootstrap,
            "seed": options.seed,
            "level": 0.95,
            "method": "percentile",
        },
        "img_per_s": predictions.images / predictions.seconds if predictions.seconds else None,
        "seconds": predictions.seconds,
        "environment": environment(device, 1),
    }
    if options.per_image:
        meta["per_image"] = per_image(predictions)
    gains = ensemble_gains(members, ensembles, predictions, options.bootstrap, options.seed)
    meta["ensemble_gains"] = [g.to_dict() for g in gains]
    return EvalReport(rows=rows, meta=meta, gains=gains)


def per_image(predictions: Predictions) -> dict[str, Any]:
    """Each image's label and each row's top-1/top-5 hits as "0"/"1" strings, in image order."""
    hits = {
        f"top{k}": {key: "".join(map(str, c[:, i].astype(int))) for key, c in predictions.correct.items()}
        for i, k in enumerate(TOPK)
    }
    return {"labels": predictions.labels.tolist(), **hits}


def population_batch_size(requested: int | None, train_config: dict[str, Any]) -> int:
    """Algorithm 2's m: as requested, else the run's training batch size (trainer.batch_size), else 32."""
    m = requested or int((train_config.get("trainer") or {}).get("batch_size") or DEFAULT_POPULATION_BATCH)
    if m < 2:
        raise EvaluationError(
            f"population_batch_size={m} is not valid; Algorithm 2 needs batches of at least 2"
        )
    return m


def _population_members(
    members: list[Member],
    train: Dataset,
    num_batches: int,
    m: int,
    seed: int,
    workers: int,
    max_bad: float,
    device: torch.device,
    channels_last: bool,
    data_name: str,
) -> list[Member]:
    """Every member again, with Algorithm 2's population statistics (see the module docstring)."""
    from bn_inception.data import build_eval_loader

    wanted = num_batches * m
    if wanted > len(train):
        raise EvaluationError(
            f"population_stats={num_batches} batches of {m} need {wanted} training images; "
            f"the training split has {len(train)}"
        )
    chosen = np.random.default_rng(seed).choice(len(train), size=wanted, replace=False)
    subset = MultiCropImages(train, 1, [x.input_size for x in members], indices=chosen.tolist())
    out = []
    for member in members:
        loader = build_eval_loader(
            subset, batch_size=m, workers=workers, max_bad_fraction=max_bad, pin_memory=device.type == "cuda"
        )
        batches = (
            (single_crops(views, member.input_size, device), labels)
            for views, labels in data_errors(loader, f"{data_name} training")
            if len(labels) >= 2
        )
        log.info(
            "recomputing BN population statistics of %s from %d batches of %d training images",
            member.name,
            num_batches,
            m,
        )
        out.append(with_population_stats(member, batches, num_batches, device, channels_last))
    return out
