"""Training and evaluation loaders: shuffling (Sec. 4.2.1 item 6), sharding over ranks, exact resume,
and accounting of unreadable images.

Shuffling (``shuffle``):

- ``global``: a fresh permutation of the whole training set every epoch ("shuffle more thoroughly").
- ``shard``: the baseline's weaker shuffling, modelled on a sharded record reader. The examples are put in
  one fixed random order (as when the shards were written), cut into shards of ``shard_size`` consecutive
  examples; each epoch visits the shards in a new order and streams them through a shuffle buffer of
  ``shuffle_buffer`` examples. With a small buffer an example keeps meeting the same few hundred
  neighbours, which is what the paper's "so that the same examples do not always appear in a mini-batch
  together" removes. Defaults: 1024 examples per shard (TF's Inception input pipeline assumes
  ``examples_per_shard = 1024``), a buffer of 128 examples (4 mini-batches of 32); the paper gives neither,
  and ``shuffle_buffer=1`` reproduces "always together" exactly.

Resume: the loader's state is (epoch, batches already yielded in it). The epoch's order is a pure function
of (seed, epoch) and the augmentation of (seed, epoch, index), so restarting at that position reproduces
the remaining batches exactly, whatever the number of workers and whatever they had prefetched.

Distributed: every rank computes the same epoch order, drops the tail that does not fill a global batch,
and takes every ``world_size``-th example starting at ``rank``.

Unreadable images: counted as distinct files (``skipped_images``; ``skips`` counts every time one was met,
e.g. once per epoch) and named once in the log; the run stops with a one-line RuntimeError when the
distinct unreadable files exceed ``max_bad_fraction`` of the distinct images requested so far, checked once
at least ``min(bad_check_min_images, one epoch)`` of them have been requested (so a few bad files early on
do not stop a run that is within budget overall). A file that fails again in the next epoch is the same
bad file, not a second one.

Errors in worker processes: an exception raised while a worker loads a batch comes back as that exception,
with its own message first and the worker's traceback as its cause (torch's own re-raise puts "Caught X in
DataLoader worker process N" first, and a one-line error report would show only that).
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
from torch.utils.data import DataLoader, Dataset, Subset, default_collate, get_worker_info

from bn_inception.data.decode import BadImageError

log = logging.getLogger(__name__)

SHUFFLES = ("global", "shard")
DEFAULT_SHARD_SIZE = 1024
DEFAULT_SHUFFLE_BUFFER = 128
DEFAULT_BAD_CHECK_MIN_IMAGES = 1000
_ORDER_STREAM, _SHARD_LAYOUT_STREAM, _SHARD_ORDER_STREAM, _BUFFER_STREAM = 0x0DE7, 0x5A7D, 0x5A7E, 0xB0FF


def check_shuffle(shuffle: str) -> str:
    if shuffle not in SHUFFLES:
        raise ValueError(f"shuffle must be one of {', '.join(SHUFFLES)}; got {shuffle!r}")
    return shuffle


def epoch_order(
    num_samples: int,
    epoch: int,
    seed: int,
    shuffle: str = "global",
    shard_size: int = DEFAULT_SHARD_SIZE,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
) -> np.ndarray:
    """The order in which an epoch visits the dataset's indices (before splitting over ranks)."""
    check_shuffle(shuffle)
    if shuffle == "global":
        return np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(num_samples)
    if shard_size < 1 or shuffle_buffer < 1:
        raise ValueError(f"shard_size and shuffle_buffer must be >= 1, got {shard_size} and {shuffle_buffer}")
    written = np.random.default_rng([seed, _SHARD_LAYOUT_STREAM]).permutation(num_samples)
    shards = [written[i : i + shard_size] for i in range(0, num_samples, shard_size)]
    visit = np.random.default_rng([seed, epoch, _SHARD_ORDER_STREAM]).permutation(len(shards))
    stream = np.concatenate([shards[s] for s in visit]) if shards else written
    return _buffer_shuffle(stream, shuffle_buffer, np.random.default_rng([seed, epoch, _BUFFER_STREAM]))


def _buffer_shuffle(stream: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A streaming shuffle buffer (as tf.data's shuffle): emit a random slot, refill it with the next item."""
    if size <= 1 or len(stream) <= 1:
        return stream.copy()
    size = min(size, len(stream))
    buffer = list(stream[:size])
    out = np.empty_like(stream)
    slots = rng.integers(0, size, size=len(stream))
    n = 0
    for item in stream[size:]:
        j = slots[n]
        out[n] = buffer[j]
        buffer[j] = item
        n += 1
    rest = np.asarray(buffer)[rng.permutation(size)]
    out[n:] = rest
    return out


#: Signals that ask a run to stop (bn_inception.engine.signals); loader workers leave them to it.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave the stop signals to the training process: SLURM sends them to every process of
    the job, and Ctrl-C in a terminal to every process of the foreground group; a worker ended by one would
    end the run (a batch that never comes) before it can save (bn_inception.engine.signals), and a worker
    must not run the handler it inherited either (submitit's would requeue the job a second time from
    inside the worker). The training process stops its workers itself (``close``), and PyTorch's workers
    exit when their parent is gone. A signal that came while the worker started (held, see
    :func:`_starting_workers`) is dropped."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextmanager
def _starting_workers() -> Iterator[None]:
    """Hold the stop signals while worker processes are forked: a worker inherits the held mask and so
    cannot be ended by one before it ignores them, and the training process gets a held signal as soon as
    the workers exist."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


#: How loader workers are started: forked, PyTorch's default on Linux, named explicitly because a launcher
#: may make another start method the default of its job processes (joblib's loky, under
#: ``hydra/launcher=local_parallel``), with which no DataLoader worker starts ("'Process' object has no
#: attribute 'env'"). Elsewhere (macOS, Windows) the platform's default.
WORKER_START = "fork" if sys.platform.startswith("linux") else None


def shut_down_workers(dataloader: DataLoader | None) -> None:
    """Stop a DataLoader's worker processes now. Dropping the last reference does it only when the garbage
    collector gets to it, and at interpreter exit multiprocessing would SIGTERM the workers (which ignore it,
    see above) and join them forever: every run on an image tree hung after its summary (issue 19)."""
    iterator = getattr(dataloader, "_iterator", None)  # persistent workers live in the loader's iterator
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()  # torch's own orderly stop (what its __del__ calls)


def _batch_as_is(batch: Any) -> Any:
    return batch


def _remap_key(key: Any, indices: Any) -> Any:
    if isinstance(key, (tuple, list)):
        return (int(indices[int(key[0])]), *key[1:])
    return int(indices[int(key)])


class _BatchFetcher(Dataset):
    """Routes a DataLoader's batch of keys to the dataset's batched ``load_batch``.

    Also takes a ``torch.utils.data.Subset`` of such a dataset (keys are mapped through its indices) and,
    as a fallback, any dataset of (image, label) items, collated with torch's default collate.
    """

    def __init__(self, dataset: Any, on_bad: str) -> None:
        self.dataset, self.on_bad = dataset, on_bad
        self.indices: list[int] | None = None  # key i -> index of the underlying dataset
        target = dataset
        while isinstance(target, Subset) and not hasattr(target, "load_batch"):
            outer = self.indices
            self.indices = (
                [int(i) for i in target.indices] if outer is None else [int(target.indices[i]) for i in outer]
            )
            target = target.dataset
        self.target = target

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        return self.__getitems__([key])

    def __getitems__(self, keys: list[Any]) -> Any:
        try:
            return self._load(keys)
        except Exception as e:
            if get_worker_info() is None:  # in the main process: nothing hides the reason
                raise
            return _WorkerFailure(e)

    def _load(self, keys: list[Any]) -> Any:
        if self.indices is not None:
            keys = [_remap_key(k, self.indices) for k in keys]
        if hasattr(self.target, "load_batch"):
            return self.target.load_batch(keys, on_bad=self.on_bad)
        return self._generic(keys)

    def _generic(self, keys: list[Any]) -> Any:
        items, bad = [], []
        for key in keys:
            try:
                items.append(self.target[key])
            except BadImageError as e:
                if self.on_bad != "skip":
                    raise
                bad.append(str(e))
        images, labels = (
            default_collate(items) if items else (torch.empty(0), torch.empty(0, dtype=torch.int64))
        )
        return images, labels, {"requested": len(keys), "skipped": len(bad), "bad_files": bad}


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a loader worker, shown as the re-raised exception's cause."""

    def __str__(self) -> str:
        return self.args[0]


class _WorkerFailure:
    """What a worker returns instead of a batch when loading it raised: the exception itself (or, if it
    cannot be pickled, a RuntimeError with its type and message) and its formatted traceback."""

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


def _unwrap(batch: Any) -> Any:
    if isinstance(batch, _WorkerFailure):
        batch.reraise()
    return batch


def _next_batch(iterator: Iterator) -> Any:
    """The next batch of a DataLoader iterator. A worker that died (killed by the system, most often the
    out-of-memory killer's SIGKILL) surfaces in torch as a RuntimeError "DataLoader worker (pid N) ..." or,
    when it died handing over a batch, as a ConnectionResetError from deep in multiprocessing (a 40-line
    traceback, issue 19): both become one line that says what happened and what to do."""
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
    return _unwrap(batch)


class _BadImageLedger:
    """Counts unreadable images (distinct files, and every time one was met), names each once in the log,
    enforces max_bad_fraction against the number of distinct images requested."""

    def __init__(self, max_bad_fraction: float, min_images: int, what: str) -> None:
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.max_bad_fraction, self.min_images, self.what = max_bad_fraction, min_images, what
        self.logged: set[str] = set()  # survives reset(): each file is named once per loader
        self.reset()

    def reset(self) -> None:
        self.seen = 0  # images requested, counting repeats
        self.skips = 0  # unreadable files met, counting repeats
        self.bad_files: list[str] = []  # distinct, in the order first met

    @property
    def skipped(self) -> int:
        return len(self.bad_files)

    def add(self, info: dict[str, Any]) -> None:
        self.seen += int(info["requested"])
        self.skips += int(info["skipped"])
        for path in info["bad_files"]:
            if path not in self.logged:
                self.logged.add(path)
                log.warning("unreadable image skipped (%s): %s", self.what, path)
            if path not in self._bad_set:
                self._bad_set.add(path)
                self.bad_files.append(path)

    @property
    def bad_files(self) -> list[str]:
        return self._bad_files

    @bad_files.setter
    def bad_files(self, files: list[str]) -> None:
        self._bad_files = list(dict.fromkeys(files))
        self._bad_set = set(self._bad_files)

    def check(self, requested: int, final: bool = False) -> None:
        """Stop when the distinct bad files exceed max_bad_fraction of the ``requested`` distinct images."""
        if not self.skipped or (requested < self.min_images and not final):
            return
        fraction = self.skipped / max(requested, 1)
        if fraction > self.max_bad_fraction:
            raise RuntimeError(
                f"{self.skipped} of {requested} {self.what} images were unreadable ({fraction:.2%} > "
                f"max_bad_fraction={self.max_bad_fraction:g}), e.g. {', '.join(self.bad_files[:3])}; "
                "fix or remove those files, or raise data.max_bad_fraction"
            )


class _EpochBatches:
    """Batch sampler: batches of (index, epoch) keys for this rank, from (start epoch, start batch) on,
    epochs chained forever."""

    def __init__(self, loader: TrainLoader) -> None:
        self.loader = loader
        self.start = (0, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, position = self.start
        bs = self.loader.batch_size
        while True:
            order = self.loader.rank_order(epoch)
            for b in range(position, self.loader.batches_per_epoch):
                yield [(int(i), epoch) for i in order[b * bs : (b + 1) * bs]]
            epoch, position = epoch + 1, 0


class TrainLoader:
    """An infinite iterator of fixed-shape (images, labels) training batches; see the module docstring.

    ``len(loader)`` is the number of batches per epoch on this rank. ``state_dict()`` describes the batches
    already yielded; ``load_state_dict`` continues exactly after them.
    """

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
        if batch_size < 1 or workers < 0:
            raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
        self.dataset = dataset
        self.batch_size, self.seed, self.shuffle = int(batch_size), int(seed), check_shuffle(shuffle)
        self.rank, self.world_size, self.workers = int(rank), int(world_size), int(workers)
        self.shard_size, self.shuffle_buffer = int(shard_size), int(shuffle_buffer)
        self.num_samples = len(dataset)
        self.batches_per_epoch = self.num_samples // (self.batch_size * self.world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training set has {self.num_samples} images, fewer than one global batch "
                f"({self.batch_size} x {self.world_size} ranks); lower the batch size or use more data"
            )
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.prefetch_factor = prefetch_factor
        self._ledger = _BadImageLedger(
            max_bad_fraction, min(bad_check_min_images, self.batches_per_epoch * self.batch_size), "training"
        )
        self._sampler = _EpochBatches(self)
        self._dataloader: DataLoader | None = None
        self._iterator: Iterator | None = None
        self.epoch, self.position = 0, 0
        self._orders: dict[int, np.ndarray] = {}  # this rank's order of the last epochs asked for
        # Which samples this rank has asked for so far (1 bit each when saved): the denominator of the
        # bad-image fraction counts each image once, however many epochs met it.
        self._requested = np.zeros(self.num_samples, dtype=bool)
        self._distinct_requested = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def skipped_images(self) -> int:
        """Distinct unreadable files met so far."""
        return self._ledger.skipped

    @property
    def skips(self) -> int:
        """Times an unreadable file was met and replaced (a file met in 3 epochs counts 3)."""
        return self._ledger.skips

    @property
    def bad_files(self) -> list[str]:
        return list(self._ledger.bad_files)

    def rank_order(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for ``epoch``, batches_per_epoch * batch_size of them."""
        if epoch not in self._orders:
            order = epoch_order(
                self.num_samples, epoch, self.seed, self.shuffle, self.shard_size, self.shuffle_buffer
            )
            used = order[: self.batches_per_epoch * self.batch_size * self.world_size]
            # Two epochs kept: near a boundary the sampler (prefetching) and __next__ ask for both.
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = used[self.rank :: self.world_size]
        return self._orders[epoch]

    def _mark_requested(self, epoch: int, batches: range) -> None:
        bs = self.batch_size
        indices = self.rank_order(epoch)[batches.start * bs : batches.stop * bs]
        self._distinct_requested += int(np.count_nonzero(~self._requested[indices]))
        self._requested[indices] = True

    def _make_dataloader(self) -> DataLoader:
        return DataLoader(
            _BatchFetcher(self.dataset, on_bad="substitute"),
            batch_sampler=self._sampler,
            num_workers=self.workers,
            collate_fn=_batch_as_is,
            pin_memory=self.pin_memory,
            persistent_workers=self.workers > 0,
            prefetch_factor=self.prefetch_factor if self.workers > 0 else None,
            worker_init_fn=_ignore_stop_signals,
            multiprocessing_context=WORKER_START if self.workers > 0 else None,
            # A private generator: starting an iterator must not draw from the global torch RNG, or a
            # resumed run (whose iterator starts later) would see different dropout than an uninterrupted one.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def __iter__(self) -> TrainLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            if self._dataloader is None:
                self._dataloader = self._make_dataloader()
            self._sampler.start = (self.epoch, self.position)
            with _starting_workers():
                self._iterator = iter(self._dataloader)
        images, labels, info = _next_batch(self._iterator)
        self._mark_requested(self.epoch, range(self.position, self.position + 1))
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        self._ledger.add(info)
        self._ledger.check(self._distinct_requested)
        return images, labels

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_samples": self.num_samples,
            "images_seen": self._ledger.seen,
            "skipped_images": self._ledger.skipped,
            "skips": self._ledger.skips,
            "bad_files": list(self._ledger.bad_files),
            "requested": torch.from_numpy(np.packbits(self._requested)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "shuffle", "batch_size", "world_size", "num_samples"):
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
        self._ledger.seen = int(state.get("images_seen", 0))
        self._ledger.bad_files = list(state.get("bad_files", []))
        self._ledger.skips = int(state.get("skips", state.get("skipped_images", 0)))
        self._ledger.logged.update(self._ledger.bad_files)
        self._restore_requested(state.get("requested"))
        self._iterator = None  # the next batch is fetched from the restored position

    def continue_from(self, state: dict[str, Any]) -> None:
        """Continue after a state written with another number of processes (a requeue onto fewer GPUs):
        the same epoch, at the same fraction of it. Not exact (the batches are cut differently), but
        nothing is trained twice or skipped beyond one batch."""
        old_batches = max(
            1, int(state["num_samples"]) // (int(state["batch_size"]) * int(state["world_size"]))
        )
        position = int(state["position"]) * self.batches_per_epoch // old_batches
        self.load_state_dict(
            {
                **state,
                "world_size": self.world_size,
                "batch_size": self.batch_size,
                "position": min(position, self.batches_per_epoch - 1),
                "requested": None,  # the files each rank saw differ: replayed from the orders
            }
        )

    def _restore_requested(self, packed: torch.Tensor | None) -> None:
        if packed is not None:
            self._requested = np.unpackbits(np.asarray(packed), count=self.num_samples).astype(bool)
        else:  # a state saved before this was recorded: replay the orders (a pure function of the epoch)
            self._requested = np.zeros(self.num_samples, dtype=bool)
            for epoch in range(self.epoch):
                self._requested[self.rank_order(epoch)] = True
            self._requested[self.rank_order(self.epoch)[: self.position * self.batch_size]] = True
        self._distinct_requested = int(np.count_nonzero(self._requested))

    def close(self) -> None:
        """Stop the worker processes; the next batch starts new ones."""
        shut_down_workers(self._dataloader)
        self._iterator = None
        self._dataloader = None


class EvalLoader:
    """A finite, ordered iterable of (images, labels) over the first ``limit`` images (all if None).

    Unreadable images are dropped (a batch may come out shorter, an all-bad batch is not yielded) and
    counted per pass in ``skipped_images`` / ``bad_files``; the pass stops with a RuntimeError when they
    exceed ``max_bad_fraction``.
    """

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
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive number of images or None, got {limit}")
        count = len(dataset) if limit is None else min(int(limit), len(dataset))
        indices = list(range(count))[rank::world_size]
        self.dataset = dataset
        self.batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        self.num_images = len(indices)
        self.max_bad_fraction, self.bad_check_min_images = max_bad_fraction, bad_check_min_images
        self._ledger = _BadImageLedger(max_bad_fraction, bad_check_min_images, "evaluation")
        self._loader_args = dict(
            batch_sampler=self.batches,
            num_workers=workers,
            collate_fn=_batch_as_is,
            pin_memory=torch.cuda.is_available() if pin_memory is None else bool(pin_memory),
            persistent_workers=workers > 0,
            worker_init_fn=_ignore_stop_signals,
            multiprocessing_context=WORKER_START if workers > 0 else None,
        )
        self._dataloader: DataLoader | None = None

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def skipped_images(self) -> int:
        return self._ledger.skipped

    @property
    def bad_files(self) -> list[str]:
        return list(self._ledger.bad_files)

    @property
    def skips(self) -> int:
        return self._ledger.skips

    def close(self) -> None:
        """Stop the worker processes now; the next pass starts new ones."""
        shut_down_workers(self._dataloader)
        self._dataloader = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._ledger.reset()
        if self._dataloader is None:
            self._dataloader = DataLoader(
                _BatchFetcher(self.dataset, on_bad="skip"),
                **self._loader_args,
                generator=torch.Generator().manual_seed(0),  # keep the global RNG untouched (see TrainLoader)
            )
        with _starting_workers():
            batches = iter(self._dataloader)
        for _ in range(len(self.batches)):
            images, labels, info = _next_batch(batches)
            self._ledger.add(info)
            self._ledger.check(self._ledger.seen)  # one pass: every image requested once
            if len(images):
                yield images, labels
        self._ledger.check(self._ledger.seen, final=True)


def build_train_loader(dataset: Any, batch_size: int, **options: Any) -> TrainLoader:
    """The training loader; ``options`` are :class:`TrainLoader`'s (``pin_memory=None`` pins when CUDA is
    available)."""
    return TrainLoader(dataset, batch_size, **options)


def build_eval_loader(dataset: Any, batch_size: int, **options: Any) -> EvalLoader:
    """The evaluation loader; ``options`` are :class:`EvalLoader`'s (``limit`` = the first N images only).

    With world_size > 1 each rank gets every world_size-th image and no padding, so gathered results
    count each image exactly once.
    """
    return EvalLoader(dataset, batch_size, **options)
