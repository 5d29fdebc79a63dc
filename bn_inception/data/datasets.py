"""Datasets of (uint8 CHW image, label), keyed by an int or ``(index, epoch)``; normalisation is on the device
with the ``mean``/``std`` they carry. ``load_batch`` returns the batch and the unreadable files met: in
training one is replaced by a sample drawn from the same (seed, epoch, index) stream (the batch keeps its
shape); ``on_bad="skip"`` drops it (evaluation), ``"raise"`` raises. In-memory images (Fashion-MNIST) are
cropped a whole batch at once with ``roi_align``: well under a millisecond for a 28 px batch.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.ops import roi_align

from bn_inception.data.decode import BadImageError, load_image_crop, load_image_region
from bn_inception.data.device import encoded_batch, read_for_device
from bn_inception.data.packed import PackedPaths
from bn_inception.data.transforms import (
    NUM_DRAWS,
    TrainAugment,
    eval_resize_crop,
    eval_sizes,
    resize_square,
    stack_channels_last,
)

log = logging.getLogger(__name__)

# (images: uint8 (B, C, S, S), or an EncodedBatch, labels, {"requested", "skipped", "bad_files"})
BatchResult = tuple[Any, torch.Tensor, dict[str, Any]]


def split_key(key: Any) -> tuple[int, int]:
    return (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)


class _BaseImageDataset(Dataset, ABC):
    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        classes: Sequence[str],
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: TrainAugment | None,
    ) -> None:
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.classes = list(classes)
        self.input_size = int(input_size)
        self.mean, self.std = tuple(mean), tuple(std)  # the model's normalisation (applied on the device)
        self.augment = augment  # None: evaluation transform (set by build_datasets for training)
        self.decode_device: torch.device | None = None  # data.decode=gpu: JPEG bytes go there to be decoded

    @property
    def default_on_bad(self) -> str:  # a training image is replaced, an evaluation image raises
        return "substitute" if self.augment is not None else "raise"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, int]:
        images, labels, _ = self.load_batch([key], on_bad=self.default_on_bad)
        return images[0], int(labels[0])

    def __getitems__(self, keys: Sequence[Any]) -> list[tuple[torch.Tensor, int]]:
        # A plain DataLoader's batched path.
        images, labels, _ = self.load_batch(keys, on_bad=self.default_on_bad)
        return list(zip(images, labels.tolist(), strict=True))

    @abstractmethod
    def load_batch(self, keys: Sequence[Any], on_bad: str = "substitute") -> BatchResult:
        """(images, labels, info) of the samples ``keys``."""

    def _draws(self, pairs: list[tuple[int, int]]) -> np.ndarray:
        u = np.empty((len(pairs), NUM_DRAWS))
        epochs = np.array([e for _, e in pairs], dtype=np.int64)
        indices = np.array([i for i, _ in pairs], dtype=np.int64)
        for epoch in np.unique(epochs):  # a loader batch has one epoch; plain keys may mix them
            rows = epochs == epoch
            u[rows] = self.augment.draws(int(epoch), indices[rows])
        return u


class ImageFileDataset(_BaseImageDataset):
    def __init__(
        self,
        paths: PackedPaths | Sequence[str],
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: TrainAugment | None = None,
    ) -> None:
        super().__init__(labels, classes, input_size, mean, std, augment)
        # Packed (see bn_inception.data.packed): no Python object per path for loader workers to copy.
        self.paths = paths if isinstance(paths, PackedPaths) else PackedPaths.of(paths)
        self.in_chans = 3
        self._known_bad: dict[int, str] = {}  # per process: do not re-decode a file known to be broken

    def load_batch(self, keys: Sequence[Any], on_bad: str = "substitute") -> BatchResult:
        pairs = [split_key(k) for k in keys]
        draws = self._draws(pairs) if self.augment is not None else None
        bad: list[str] = []
        rows = [None if draws is None else draws[r : r + 1] for r in range(len(pairs))]
        samples = [self._load_sample(i, e, u, on_bad, bad) for (i, e), u in zip(pairs, rows, strict=True)]
        samples = [s for s in samples if s is not None]
        images, labels, used, paths = map(list, zip(*samples, strict=True)) if samples else ([], [], [], [])
        u = np.concatenate(used) if used and draws is not None else None
        info = {"requested": len(keys), "skipped": len(bad), "bad_files": bad}
        return self._assemble(images, u, paths), torch.tensor(labels, dtype=torch.int64), info

    def _assemble(self, images: list[torch.Tensor], u: np.ndarray | None, paths: list[str]) -> Any:
        size = self.input_size
        if self.decode_device is not None:  # JPEG bytes, decoded into the batch on the device by the loader
            return encoded_batch(images, paths, self.decode_device, size, self.augment, u)
        if not images:
            return torch.empty((0, 3, size, size), dtype=torch.uint8)
        if self.augment is not None:
            return self.augment.finish_crops(images, u)
        return stack_channels_last(images)

    def _load_sample(self, index: int, epoch: int, u: np.ndarray | None, on_bad: str, bad: list[str]):
        """(crop or encoded image, label, draws, path) of ``index`` or its replacement; None when skipped."""
        if not 0 <= index < len(self.paths):
            raise IndexError(f"sample index {index} out of range for a dataset of {len(self.paths)} images")
        candidates = [index]
        if on_bad == "substitute" and u is not None:
            picks = np.floor(self.augment.replacement_draws(u)[0] * len(self.paths)).astype(np.int64)
            candidates += [int(p) for p in picks]
        for candidate in candidates:
            if candidate in self._known_bad:
                bad.append(self._known_bad[candidate])
                continue
            cu = u if candidate == index or u is None else self.augment.draws(epoch, [candidate])
            try:
                path = self.paths[candidate]
                image = read_for_device(path) if self.decode_device is not None else self._decode(path, cu)
                return image, int(self.labels[candidate]), cu, path
            except BadImageError:
                self._known_bad[candidate] = self.paths[candidate]
                bad.append(self.paths[candidate])
                if on_bad != "substitute":
                    if on_bad == "skip":
                        return None
                    raise
        if on_bad == "skip":  # every replacement was already known to be bad
            return None
        raise RuntimeError(
            f"sample {index} and its {len(candidates) - 1} replacements are all unreadable "
            f"(e.g. {bad[-1] if bad else '?'}); the dataset is mostly broken: check data.root"
        )

    def _decode(self, path: str, u: np.ndarray | None) -> torch.Tensor:
        size = self.input_size
        if u is None:  # evaluation: whole image, shorter side to resize, centre crop
            resize = eval_sizes(size)[0]
            img, _ = load_image_region(
                path, lambda h, w: (0, 0, h, w), lambda h, w: (resize * w / min(h, w), resize * h / min(h, w))
            )
            return eval_resize_crop(img, size)
        row = u[0].tolist()  # flipped and distorted later, while written into the batch (finish_crops)
        crop = load_image_crop(path, lambda h, w: self.augment.crop_box(row, h, w), lambda h, w: (size, size))
        return resize_square(crop, size)


class InMemoryImageDataset(_BaseImageDataset):
    """uint8 (N, H, W) or (N, C, H, W) images in memory, transformed a batch at a time."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: Sequence[int] | torch.Tensor,
        classes: Sequence[str],
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: TrainAugment | None = None,
    ) -> None:
        super().__init__(labels, classes, input_size, mean, std, augment)
        if images.dtype != torch.uint8:
            raise ValueError(f"in-memory images must be uint8, got {images.dtype}")
        self.images = images if images.dim() == 4 else images.unsqueeze(1)
        self.in_chans = self.images.shape[1]
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def load_batch(self, keys: Sequence[Any], on_bad: str = "substitute") -> BatchResult:
        pairs = [split_key(k) for k in keys]
        index = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
        if len(pairs) and (index.min() < 0 or index.max() >= len(self.images)):
            raise IndexError(f"sample index out of range for a dataset of {len(self.images)} images")
        # index_select, not images[index]: the advanced-indexing kernel stalls when both cores are busy.
        x = self.images.index_select(0, index)
        if self.augment is None or not self.augment.random:  # evaluation, or training on what it sees
            images = eval_resize_crop(x, self.input_size)
        else:
            u = self._draws(pairs)
            images = self.augment.finish(self._crop(x.float(), u), u)
        info = {"requested": len(keys), "skipped": 0, "bad_files": []}
        return images, self.labels.index_select(0, index), info

    def _crop(self, x: torch.Tensor, u: np.ndarray) -> torch.Tensor:
        height, width = x.shape[-2:]
        top, left, h, w = np.array([self.augment.crop_box(row, height, width) for row in u.tolist()]).T
        boxes = torch.from_numpy(
            np.stack([np.arange(len(u)), left, top, left + w, top + h], axis=1).astype(np.float32)
        )
        # aligned=True puts output pixel centres where F.resize (align_corners=False) puts them; an
        # adaptive sampling_ratio averages ceil(crop/out) samples per output pixel when shrinking.
        return roi_align(
            x, boxes, output_size=self.input_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
        )
