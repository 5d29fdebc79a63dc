"""Training and evaluation loaders: shuffling (Sec. 4.2.1 item 6), sharding over ranks, exact resume,
unreadable images, and workers that leave stop signals to the run (issue 19).

Shuffling: ``global``, a fresh permutation every epoch ("shuffle more thoroughly"); ``shard``, the baseline's
sharded record reader: one fixed order cut into ``shard_size`` shards (TF Inception's 1024), visited in a
new order each epoch through a ``shuffle_buffer`` (the paper gives neither; 1 reproduces "the same examples
always appear in a mini-batch together"). Resume: the order is a pure function of (seed, epoch), so the state
is (epoch, batches yielded). Ranks take every ``world_size``-th example of the same order, tail dropped.
Unreadable images: distinct files counted and named once; the run stops when they exceed
``max_bad_fraction`` of the distinct images requested (checked from ``min(bad_check_min_images, an epoch)``).
"""

from __future__ import annotations

import logging
import pickle
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, get_worker_info

from bn_inception.data.device import EncodedBatch

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1024
DEFAULT_SHUFFLE_BUFFER = 128
DEFAULT_BAD_CHECK_MIN_IMAGES = 1000
_SAME_ON_RESUME = ("seed", "shuffle", "batch_size", "world_size", "num_samples")  # exact resume needs
_ORDER_STREAM, _SHARD_LAYOUT_STREAM, _SHARD_ORDER_STREAM, _BUFFER_STREAM = 0x0DE7, 0x5A7D, 0x5A7E, 0xB0FF


def epoch_order(
    num_samples: int,
    epoch: int,
    seed: int,
    shuffle: str = "global",
    shard_size: int = DEFAULT_SHARD_SIZE,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
) -> np.ndarray:
    if shuffle == "global":
        return np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(num_samples)
    written = np.random.default_rng([seed, _SHARD_LAYOUT_STREAM]).permutation(num_samples)
    shards = [written[i : i + shard_size] for i in range(0, num_samples, shard_size)]
    visit = np.random.default_rng([seed, epoch, _SHARD_ORDER_STREAM]).permutation(len(shards))
    stream = np.concatenate([shards[s] for s in visit]) if shards else written
    return _buffer_shuffle(stream, shuffle_buffer, np.random.default_rng([seed, epoch, _BUFFER_STREAM]))


def _buffer_shuffle(stream: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    # tf.data's shuffle buffer: emit a random slot, refill it with the next item.
    if size <= 1 or len(stream) <= 1:
        return stream.copy()
    size = min(size, len(stream))
    buffer, out = list(stream[:size]), np.empty_like(stream)
    slots = rng.integers(0, size, size=len(stream))
    for n, item in enumerate(stream[size:]):
        out[n], buffer[slots[n]] = buffer[slots[n]], item
    out[len(stream) - size :] = np.asarray(buffer)[rng.permutation(size)]
    return out


STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)


def _ignore_stop_signals(worker_id: int) -> None:
    """SLURM and Ctrl-C signal every process: a worker ended by one would end the run before it saves, and
    must not run an inherited handler (submitit's would requeue again). ``close`` stops the workers."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextmanager
def _starting_workers() -> Iterator[None]:
    """Hold the stop signals while workers fork, so none is ended by one before it ignores them."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


# Fork (Linux's default) named explicitly: under hydra/launcher=local_parallel joblib's loky is the default
# and no worker starts ("'Process' object has no attribute 'env'").
WORKER_START = "fork" if sys.platform.startswith("linux") else None


def shut_down_workers(dataloader: DataLoader | None) -> None:
    """Stop a DataLoader's workers now: at exit multiprocessing would SIGTERM them (ignored) and join
    forever, so every run on an image tree hung after its summary (issue 19)."""
    iterator = getattr(dataloader, "_iterator", None)  # persistent workers live in the loader's iterator
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()  # torch's own orderly stop (what its __del__ calls)


def _batch_as_is(batch: Any) -> Any:
    return batch


def _on_device(images: Any) -> Any:
    # data.decode=gpu: the workers sent JPEG bytes, decoded here into the batch on the GPU (data/device.py)
    return images.decode() if isinstance(images, EncodedBatch) else images


class _BatchFetcher(Dataset):
    """A batch of keys to ``load_batch`` (through a Subset's indices); errors come back as _WorkerFailure."""

    def __init__(self, dataset: Any, on_bad: str) -> None:
        self.size, self.on_bad, self.indices = len(dataset), on_bad, None
        if isinstance(dataset, Subset):
            self.indices, dataset = [int(i) for i in dataset.indices], dataset.dataset
        self.target = dataset

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, keys: list[Any]) -> Any:
        if self.indices is not None:
            keys = [
                (self.indices[int(k[0])], *k[1:]) if isinstance(k, (tuple, list)) else self.indices[int(k)]
                for k in keys
            ]
        try:
            return self.target.load_batch(keys, on_bad=self.on_bad)
        except Exception as e:
            if get_worker_info() is None:  # in the main process: nothing hides the reason
                raise
            return _WorkerFailure(e)


class _RemoteTraceback(Exception):
    def __str__(self) -> str:
        return self.args[0]


class _WorkerFailure:
    """A worker's exception (a RuntimeError if it does not pickle) and its traceback, instead of a batch."""

    def __init__(self, error: Exception) -> None:
        self.trace = "".join(traceback.format_exception(error))
        try:
            pickle.loads(pickle.dumps(error))  # both ways: the main process must be able to rebuild it
            self.error = error
        except Exception:
            self.error = RuntimeError(f"{type(error).__name__}: {error}")
        self.error.__traceback__ = None  # the text above carries it; frames do not pickle

    def reraise(self) -> None:
        raise self.error from _RemoteTraceback(f"\n\nin a data loader worker:\n{self.trace}")


def _next_batch(iterator: Iterator) -> Any:
    """The next batch; a killed worker (RuntimeError "DataLoader worker ..." or, mid-handover, a 40-line
    ConnectionResetError: issue 19) becomes one line that says what to do."""
    try:
        batch = next(iterator)
    except (ConnectionError, EOFError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not str(e).startswith("DataLoader worker"):
            raise
        text = (str(e).strip().splitlines() or [""])[0].rstrip(".")
        what = text if isinstance(e, RuntimeError) else ": ".join(filter(None, [type(e).__name__, text]))
        raise RuntimeError(
            f"a data loader worker died ({what}); the system kills one most often for memory (see dmesg): "
            "relaunch the same command to continue from the last checkpoint, with fewer data.workers if "
            "memory is short"
        ) from e
    if isinstance(batch, _WorkerFailure):
        batch.reraise()
    return batch


class _Loader:
    """DataLoader options, unreadable-image accounting (``bad_files`` distinct, ``skips`` every meeting)."""

    what = ""

    def __init__(self, workers: int, max_bad_fraction: float, min_images: int, pin_memory: bool | None):
        self.workers, self.max_bad_fraction, self.min_images = int(workers), max_bad_fraction, min_images
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._dataloader: DataLoader | None = None
        self._logged: set[str] = set()  # each file is named once per loader
        self.reset_bad()

    def reset_bad(self, seen: int = 0, skips: int = 0, bad_files: list[str] = ()) -> None:
        self.seen, self.skips = seen, skips  # images requested / unreadable files met, counting repeats
        self.bad_files = list(dict.fromkeys(bad_files))  # distinct, in the order first met
        self._logged.update(self.bad_files)

    @property
    def skipped_images(self) -> int:
        return len(self.bad_files)

    def _dataloader_args(self, on_bad: str, dataset: Any, **args: Any) -> DataLoader:
        return DataLoader(
            _BatchFetcher(dataset, on_bad),
            num_workers=self.workers,
            collate_fn=_batch_as_is,
            pin_memory=self.pin_memory,
            persistent_workers=self.workers > 0,
            worker_init_fn=_ignore_stop_signals,
            multiprocessing_context=WORKER_START if self.workers > 0 else None,
            # A private generator: starting an iterator must not draw from the global torch RNG, or a
            # resumed run (whose iterator starts later) would see different dropout than an uninterrupted one.
            generator=torch.Generator().manual_seed(getattr(self, "seed", 0)),
            **args,
        )

    def _count(self, info: dict[str, Any], requested: int, final: bool = False) -> None:
        self.seen += int(info["requested"])
        self.skips += int(info["skipped"])
        for path in info["bad_files"]:
            if path not in self._logged:
                self._logged.add(path)
                log.warning("unreadable image skipped (%s): %s", self.what, path)
            if path not in self.bad_files:
                self.bad_files.append(path)
        if not self.bad_files or (requested < self.min_images and not final):
            return
        fraction = len(self.bad_files) / max(requested, 1)
        if fraction > self.max_bad_fraction:
            raise RuntimeError(
                f"{len(self.bad_files)} of {requested} {self.what} images were unreadable ({fraction:.2%} > "
                f"max_bad_fraction={self.max_bad_fraction:g}), e.g. {', '.join(self.bad_files[:3])}; "
                "fix or remove those files, or raise data.max_bad_fraction"
            )

    def close(self) -> None:
        shut_down_workers(self._dataloader)
        self._dataloader = self._iterator = None


class _EpochBatches:
    """This rank's batches of (index, epoch) keys from (start epoch, start batch) on, forever."""

    def __init__(self, loader: TrainLoader) -> None:
        self.loader, self.start = loader, (0, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        (epoch, position), bs = self.start, self.loader.batch_size
        while True:
            order = self.loader.rank_order(epoch)
            for b in range(position, self.loader.batches_per_epoch):
                yield [(int(i), epoch) for i in order[b * bs : (b + 1) * bs]]
            epoch, position = epoch + 1, 0


class TrainLoader(_Loader):
    """Infinite fixed-shape (images, labels) batches; ``len``: batches per epoch on this rank."""

    what = "training"

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: str = "global",
        seed: int = 0,
        workers: int = 2,
        rank: int = 0,
        world_size: int = 1,
        max_bad_fraction: float = 0.001,
        shard_size: int = DEFAULT_SHARD_SIZE,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        pin_memory: bool | None = None,
        prefetch_factor: int = 2,
        bad_check_min_images: int = DEFAULT_BAD_CHECK_MIN_IMAGES,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, int(batch_size), int(seed), shuffle
        self.rank, self.world_size = int(rank), int(world_size)
        self.shard_size, self.shuffle_buffer = shard_size, shuffle_buffer
        self.prefetch_factor = prefetch_factor
        self.num_samples = len(dataset)
        self.batches_per_epoch = self.num_samples // (self.batch_size * self.world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training set has {self.num_samples} images, fewer than one global batch "
                f"({self.batch_size} x {self.world_size} ranks); lower the batch size or use more data"
            )
        min_images = min(bad_check_min_images, self.batches_per_epoch * self.batch_size)
        super().__init__(workers, max_bad_fraction, min_images, pin_memory)
        self._sampler = _EpochBatches(self)
        self._iterator: Iterator | None = None
        self.epoch, self.position = 0, 0
        self._orders: dict[int, np.ndarray] = {}  # this rank's order of the last epochs asked for
        # Which samples this rank has asked for so far (1 bit each when saved): the denominator of the
        # bad-image fraction counts each image once, however many epochs met it.
        self._requested = np.zeros(self.num_samples, dtype=bool)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def rank_order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            order = epoch_order(
                self.num_samples, epoch, self.seed, self.shuffle, self.shard_size, self.shuffle_buffer
            )
            used = order[: self.batches_per_epoch * self.batch_size * self.world_size]
            # Two epochs kept: near a boundary the sampler (prefetching) and __next__ ask for both.
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = used[self.rank :: self.world_size]
        return self._orders[epoch]

    def __iter__(self) -> TrainLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            if self._dataloader is None:
                self._dataloader = self._dataloader_args(
                    "substitute",
                    self.dataset,
                    batch_sampler=self._sampler,
                    prefetch_factor=self.prefetch_factor if self.workers > 0 else None,
                )
            self._sampler.start = (self.epoch, self.position)
            with _starting_workers():
                self._iterator = iter(self._dataloader)
        images, labels, info = _next_batch(self._iterator)
        bs = self.batch_size
        self._requested[self.rank_order(self.epoch)[self.position * bs : (self.position + 1) * bs]] = True
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        self._count(info, int(np.count_nonzero(self._requested)))
        return _on_device(images), labels

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "position": self.position, **{k: getattr(self, k) for k in _SAME_ON_RESUME},
            "images_seen": self.seen, "skipped_images": self.skipped_images, "skips": self.skips,
            "bad_files": list(self.bad_files), "requested": torch.from_numpy(np.packbits(self._requested)),
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in _SAME_ON_RESUME:
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"loader state has {key}={state[key]!r} but this loader has {getattr(self, key)!r}; "
                    "an exact resume needs the same data, batch size, world size, seed and shuffling"
                )
        if not 0 <= int(state["position"]) < self.batches_per_epoch:
            raise ValueError(
                f"loader state position {state['position']} outside [0, {self.batches_per_epoch})"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.reset_bad(
            int(state.get("images_seen", 0)), int(state.get("skips", 0)), state.get("bad_files", [])
        )
        if state.get("requested") is not None:
            self._requested = np.unpackbits(np.asarray(state["requested"]), count=self.num_samples).astype(
                bool
            )
        else:  # continue_from: the files each rank saw differ: replayed from the orders (pure functions)
            self._requested[:] = False
            for epoch in range(self.epoch):
                self._requested[self.rank_order(epoch)] = True
            self._requested[self.rank_order(self.epoch)[: self.position * self.batch_size]] = True
        self._iterator = None  # the next batch is fetched from the restored position

    def continue_from(self, state: dict[str, Any]) -> None:
        """Continue a state of another world size (a requeue onto fewer GPUs) at the same fraction of the
        epoch: not exact, but nothing trained twice or skipped beyond one batch."""
        old = max(1, int(state["num_samples"]) // (int(state["batch_size"]) * int(state["world_size"])))
        position = min(int(state["position"]) * self.batches_per_epoch // old, self.batches_per_epoch - 1)
        self.load_state_dict(
            {**state, "world_size": self.world_size, "batch_size": self.batch_size, "position": position,
             "requested": None}
        )  # fmt: skip


class EvalLoader(_Loader):
    """Ordered (images, labels) over the first ``limit`` images, every ``world_size``-th from ``rank`` (no
    padding); unreadable images dropped and counted per pass."""

    what = "evaluation"

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        workers: int = 2,
        limit: int | None = None,
        max_bad_fraction: float = 0.001,
        pin_memory: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        bad_check_min_images: int = DEFAULT_BAD_CHECK_MIN_IMAGES,
    ) -> None:
        super().__init__(workers, max_bad_fraction, bad_check_min_images, pin_memory)
        indices = list(range(len(dataset) if limit is None else min(int(limit), len(dataset))))[
            rank::world_size
        ]
        self.dataset, self.num_images = dataset, len(indices)
        self.batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.reset_bad()
        if self._dataloader is None:
            self._dataloader = self._dataloader_args("skip", self.dataset, batch_sampler=self.batches)
        with _starting_workers():
            batches = iter(self._dataloader)
        for _ in range(len(self.batches)):
            images, labels, info = _next_batch(batches)
            self._count(info, self.seen + int(info["requested"]))  # one pass: every image requested once
            if len(labels):
                yield _on_device(images), labels
        self._count({"requested": 0, "skipped": 0, "bad_files": []}, self.seen, final=True)


build_train_loader = TrainLoader  # the training loader (``pin_memory=None`` pins when CUDA is available)
build_eval_loader = EvalLoader  # the evaluation loader (``limit``: the first N images only)
