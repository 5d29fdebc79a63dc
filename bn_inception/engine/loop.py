"""A run and its loop, readable in one sitting: :class:`Run` (everything ``trainer.build`` makes),
:func:`train_loop`, :func:`finish`, and the one writer of ``results.json`` (:func:`write_results`)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bn_inception.config import TrainerConfig
from bn_inception.data import DataSplits, to_model_input
from bn_inception.engine.checkpoint import all_finite, capture_rng_state, copy_checkpoint, save_checkpoint
from bn_inception.engine.distributed import DistInfo, all_reduce_sum
from bn_inception.engine.progress import Progress
from bn_inception.engine.signals import GracefulStop
from bn_inception.engine.step import TrainStep
from bn_inception.engine.validate import validate as run_validation
from bn_inception.files import write_json

log = logging.getLogger("bn_inception.engine.trainer")


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one line that says what to do."""


@dataclass
class RunState:
    """What the run has done so far; checkpointed, and all ``results.json`` is made of."""

    step: int = 0
    best_top1: float | None = None
    best_step: int | None = None
    steps_to_target: int | None = None
    evals: list[dict[str, float]] = field(default_factory=list)
    train_images: int = 0  # images trained on, all processes, for the throughput figure
    train_seconds: float = 0.0  # training time without evaluation and checkpointing
    wall_seconds: float = 0.0  # wall time of the segments before this one (resumed runs)

    @classmethod
    def of(cls, ckpt: Mapping[str, Any]) -> RunState:
        state = cls(**{f.name: ckpt[f.name] for f in dataclasses.fields(cls) if ckpt.get(f.name) is not None})
        if state.best_top1 is not None and state.best_top1 < 0:  # older checkpoints: -1 for none
            state.best_top1 = None
        return state


@dataclass(kw_only=True)
class Run:
    """Everything :func:`build` makes and the loop uses: one plain object, no hidden state."""

    dir: Path
    dist: DistInfo
    raw_model: nn.Module  # the step runs it DDP-wrapped when distributed, and compiled
    optimizer: torch.optim.Optimizer
    scaler: Any
    lr_schedule: Any
    step: TrainStep
    loader: Any
    val_loader: Any
    splits: DataSplits
    amp_dtype: torch.dtype | None
    channels_last: bool
    trainer: TrainerConfig
    state: RunState
    meter: Meter
    info: dict[str, Any]  # the run's fixed facts: name, experiment, seed, model, lr, ... (results.json)
    model_kwargs: dict[str, Any]  # timm.create_model's arguments (the checkpoint's, for evaluate.py)
    config: dict[str, Any]  # the resolved config (the checkpoint's, for resume checks)
    stop: GracefulStop
    progress: Progress
    writer: Any = None
    probes: Any = None
    wall_start: float = field(default_factory=time.perf_counter)


def train_loop(run: Run) -> str:
    """Fetch, step (forward, backward, guard, update), log, evaluate and checkpoint, until ``max_steps``,
    divergence or a signal. Returns the status: completed | diverged | interrupted."""
    state, trainer = run.state, run.trainer
    batches = iter(run.loader)
    run.raw_model.train()
    run.progress.start(state.step)
    while state.step < trainer.max_steps:
        if stop_requested(run):
            return "interrupted" if save_interrupted(run) else "diverged"
        t0 = time.perf_counter()
        images, labels = next(batches)
        run.progress.data_wait += time.perf_counter() - t0
        images = to_model_input(images, run.splits.mean, run.splits.std, run.dist.device, run.channels_last)
        labels = labels.to(run.dist.device, non_blocking=True)
        run.lr_schedule.step_update(state.step)  # the lr is a pure function of the step

        logits, loss = run.step(images, labels, state.step + 1)
        if run.step.diverged_at is not None:
            return "diverged"
        state.step += 1
        run.meter.add(loss, logits, labels)
        run.progress.advance()

        is_eval = state.step % trainer.eval_every == 0 or state.step == trainer.max_steps
        if state.step % trainer.log_every == 0 or is_eval:
            if run.step.poll() is not None:  # device mode: the flag is read where the loop syncs anyway
                state.step = run.step.diverged_at - 1  # updates from the bad step on were skipped
                return "diverged"
            log_training(run)
        if is_eval and not evaluate_and_checkpoint(run):
            return "diverged"
    return "completed"


def stop_requested(run: Run) -> bool:
    """A signal arrived (alone: checked every step; several processes: agreed at logging steps)."""
    if not run.dist.distributed:
        return run.stop.requested()
    if run.state.step % run.trainer.log_every != 0:
        return False
    device = run.dist.device
    return run.stop.requested(
        agree=lambda mine: bool(all_reduce_sum(torch.tensor([float(mine)], device=device)) > 0)
    )


def log_training(run: Run) -> None:
    """``train/*`` and ``perf/*`` scalars since the last log line; the progress bar or line."""
    loss, top1, count = run.meter.since_log()
    if count == 0:
        return
    lr = run.optimizer.param_groups[0]["lr"]
    perf = run.progress.tick(run.state.step, loss, lr)
    if run.dist.is_main:
        for tag, value in {"train/loss": loss, "train/top1": top1, "train/lr": lr, **perf}.items():
            run.writer.add_scalar(tag, value, run.state.step)


def evaluate_and_checkpoint(run: Run) -> bool:
    """Validate; record; write last.pt (and best.pt on an improvement), results.json, the log line.
    False, writing nothing, when any tensor of the model or the validation loss is not finite."""
    state = run.state
    with run.progress.paused():
        with run.probes.recording() if run.probes is not None else nullcontext():
            metrics = run_validation(run.raw_model, run.val_loader, run.dist.device, run.amp_dtype,
                                     run.channels_last, mean=run.splits.mean, std=run.splits.std)  # fmt: skip
        if not model_finite(run) or not math.isfinite(metrics["loss"]):
            return False
        train_loss = run.meter.since_eval()
        record = {"step": state.step, "top1": metrics["top1"], "top5": metrics["top5"],
                  "val_loss": metrics["loss"], "train_loss": train_loss}  # fmt: skip
        state.evals.append(record)
        improved = state.best_top1 is None or metrics["top1"] > state.best_top1
        if improved:
            state.best_top1, state.best_step = metrics["top1"], state.step
        target = run.trainer.target_top1
        if target is not None and state.steps_to_target is None and metrics["top1"] >= target:
            state.steps_to_target = state.step
        ckpt = checkpoint_dict(run)
        if run.dist.is_main:
            scalars = {"val/top1": metrics["top1"], "val/top5": metrics["top5"], "val/loss": metrics["loss"],
                       "hparam/best_top1": state.best_top1, "hparam/final_top1": metrics["top1"],
                       "hparam/final_top5": metrics["top5"]}  # fmt: skip
            if state.steps_to_target is not None:  # "not reached" is an empty HParams cell, not a -1
                scalars["hparam/steps_to_target"] = float(state.steps_to_target)
            for tag, value in {**scalars, **(run.probes.percentiles() if run.probes else {})}.items():
                run.writer.add_scalar(tag, value, state.step)
            save_checkpoints(run, ckpt, improved)
            write_results(run, "running")
            run.progress.evaluation(state, record)
    return True


def save_interrupted(run: Run) -> bool:
    """After a signal: write last.pt at this step and flush the logs. False if the model is not finite."""
    if not model_finite(run):
        return False
    ckpt = checkpoint_dict(run)
    if run.dist.is_main:
        save_checkpoints(run, ckpt, improved=False)
        log.warning("%s: stopped by %s at step %d; saved %s", run.info["name"],
                    run.stop.received or "a signal to another process", run.state.step,
                    run.dir / "checkpoints" / "last.pt")  # fmt: skip
    return True


def finish(run: Run, status: str) -> dict[str, Any]:
    """Write the final results, close the logs, and report a divergence in one line."""
    run.progress.close()
    diverged_at = None
    if status == "diverged":  # at a step, or (None there) found at an evaluation or a save
        diverged_at = run.step.diverged_at or run.state.step
        last = run.dir / "checkpoints" / "last.pt"
        kept = (
            f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written before it"
        )
        if run.dist.is_main:
            log.warning("run %s diverged at step %d (non-finite loss, gradients, weights or BN statistics);"
                        " %s", run.info["name"], diverged_at, kept)  # fmt: skip
    results = write_results(run, status, diverged_at)
    if run.writer is not None:
        run.writer.flush()
    return results


def model_finite(run: Run) -> bool:
    """Every parameter and buffer (BN statistics included) finite, on every process."""
    tensors = [*run.raw_model.parameters(), *run.raw_model.buffers()]
    bad = torch.tensor([0.0 if all_finite(tensors) else 1.0], device=run.dist.device)
    return bool(all_reduce_sum(bad) == 0)


def checkpoint_dict(run: Run) -> dict[str, Any]:
    """Everything needed to continue exactly (docs/design.md), as plain tensors and containers."""
    rng, meter = capture_rng_state(), run.meter.state_dict()
    if run.dist.distributed:  # every process's generators (dropout differs) and training-loss sums
        gathered: list[Any] = [None] * run.dist.world_size
        torch.distributed.all_gather_object(gathered, (rng, meter))
        rng, meter = ({"per_rank": [g[i] for g in gathered]} for i in (0, 1))
    state, splits = run.state, run.splits
    state.train_images, state.train_seconds = run.progress.totals(state)
    return {
        "model": run.raw_model.state_dict(),  # no DDP or torch.compile prefixes: those wrap the step's
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "schedule": run.lr_schedule.state_dict(),
        "loader": run.loader.state_dict(),
        "rng": rng,
        "meter": meter,
        **dataclasses.asdict(state),
        "wall_seconds": state.wall_seconds + time.perf_counter() - run.wall_start,
        "world_size": run.dist.world_size,
        "model_name": run.info["model"],
        "model_kwargs": run.model_kwargs,
        "data": {
            "input_size": splits.input_size,
            "mean": list(splits.mean),
            "std": list(splits.std),
            "classes": list(splits.classes),
            "in_chans": splits.in_chans,
        },
        "info": run.info,
        "config": run.config,
    }


def save_checkpoints(run: Run, ckpt: dict[str, Any], improved: bool) -> None:
    """last.pt; best.pt a copy of it when this step is the best; TensorBoard flushed to the same step."""
    run.writer.flush()  # events up to this checkpoint survive a SIGKILL
    last = run.dir / "checkpoints" / "last.pt"
    save_checkpoint(ckpt, last)
    if improved:
        copy_checkpoint(last, run.dir / "checkpoints" / "best.pt")


def write_results(
    run: Run | None,
    status: str,
    diverged_at: int | None = None,
    *,
    info: dict[str, Any] | None = None,
    state: RunState | None = None,
    run_dir: Path | None = None,
    dist: DistInfo | None = None,
) -> dict[str, Any]:
    """The one writer of ``results.json`` (docs/design.md): the run's facts, its state (what the newest
    checkpoint holds), the status, and the checkpoints that exist, so nothing names a file that is not
    there. ``run`` None: a finished run's, from its checkpoint (``info``, ``state``)."""
    skipped, wall_s = 0, None
    if run is not None:
        info, state, run_dir, dist = run.info, run.state, run.dir, run.dist
        state.train_images, state.train_seconds = run.progress.totals(state)
        skipped = int(getattr(run.loader, "skipped_images", 0)) + len(set(getattr(run.val_loader, "bad_files",
                                                                                  None) or []))  # fmt: skip
        wall_s = state.wall_seconds + time.perf_counter() - run.wall_start
    last, ckpts = (state.evals[-1] if state.evals else {}), run_dir / "checkpoints"
    results = {k: v for k, v in info.items() if k not in ("config", "model_kwargs", "environment")}
    results.update(
        status=status,
        diverged_at_step=diverged_at,
        steps=state.step,
        best_top1=state.best_top1,
        best_step=state.best_step,
        final_top1=last.get("top1"),
        final_top5=last.get("top5"),
        final_train_loss=last.get("train_loss"),
        steps_to_target=state.steps_to_target,
        img_per_s=state.train_images / state.train_seconds if state.train_seconds else None,
        wall_s=wall_s if wall_s is not None else state.wall_seconds,
        skipped_images=skipped,
        checkpoints={k: str(ckpts / f"{k}.pt") for k in ("last", "best") if (ckpts / f"{k}.pt").exists()},
        evals=state.evals,
        environment=info.get("environment"),
    )
    if dist.is_main:
        try:
            write_json(run_dir / "results.json", results)
        except OSError as e:
            raise TrainingError(
                f"could not write {run_dir / 'results.json'}: {e.strerror or e}; free disk space or make the "
                f"directory writable, then relaunch (resume=auto continues from the last checkpoint)"
            ) from e
    return results


class Meter:
    """Sums of training loss, correct predictions and images, kept on the device (no host sync per step):
    since the last evaluation (the record's ``train_loss``) and since the last log line."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss x images, correct, images
        self.logged = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.numel()
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        # The image count is filled on the device: torch.tensor(n, device=cuda) would be a blocking copy and
        # a host sync every step (tests/engine/test_host_sync.py).
        count = torch.full((), n, dtype=torch.float64, device=self.device)
        self.sums += torch.stack([loss.detach().double() * n, correct.double(), count])

    def since_log(self) -> tuple[float, float, int]:
        """Mean loss, top-1 (%) and images since the last call (this process; a host sync)."""
        loss, correct, count = (self.sums - self.logged).tolist()
        self.logged = self.sums.clone()
        return (loss / count, 100.0 * correct / count, int(count)) if count else (0.0, 0.0, 0)

    def since_eval(self) -> float:
        """Mean training loss since the last evaluation over all processes; starts the next period."""
        loss, _, count = all_reduce_sum(self.sums.clone()).tolist()
        self.sums.zero_()
        self.logged.zero_()
        return loss / max(count, 1)

    def state_dict(self) -> dict[str, list[float]]:
        return {"sums": self.sums.tolist(), "logged": self.logged.tolist()}

    def load_state_dict(self, state: dict[str, list[float]] | None) -> None:
        if state:
            self.sums = torch.tensor(state["sums"], dtype=torch.float64, device=self.device)
            self.logged = torch.tensor(state["logged"], dtype=torch.float64, device=self.device)
