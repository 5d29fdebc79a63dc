"""The training loop, readable in one sitting: setup, data, model, optimiser, resume, loop.

Steps (optimizer updates) are the unit everywhere, as in the paper's Figure 2. Library code: every input
is a plain argument; ``train.py`` turns the Hydra config into these.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import bn_inception  # noqa: F401  (registers the models with timm)
from bn_inception.data import build_datasets, build_eval_loader, build_train_loader, to_model_input
from bn_inception.engine import tblog
from bn_inception.engine.checkpoint import CheckpointError, load_checkpoint, model_state_dict, save_checkpoint
from bn_inception.engine.distributed import DistInfo, all_reduce_sum, init_distributed, shutdown_distributed
from bn_inception.engine.rng import capture_rng_state, restore_rng_state
from bn_inception.engine.runinfo import config_differences, config_digest, environment, write_json_atomic
from bn_inception.engine.schedule import build_lr_schedule, decay_interval_steps, scaled_lr
from bn_inception.engine.step import NonFiniteGuard, TrainStep, resolve_compile, resolve_finite_check
from bn_inception.engine.validate import validate

log = logging.getLogger(__name__)

#: Inputs at least this large get the 224-px network; smaller ones (28-64 px) its small-input member.
LARGE_INPUT_MIN = 96


@dataclass
class TrainerOptions:
    """Mirrors configs/trainer/default.yaml (units and meaning documented there)."""

    max_steps: int = 3000
    batch_size: int = 32
    eval_every: int = 500
    eval_limit: int | None = None
    eval_batch_size: int = 256
    target_top1: float | None = None
    log_every: int = 50
    probe_images: int = 512
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool | str = "auto"
    compile: bool | str = "auto"
    deterministic: bool = False
    sync_bn: bool = False
    finite_check_every: int = 1
    finite_check: str = "auto"
    progress: bool = True


@dataclass
class OptimOptions:
    """SGD with momentum (configs/optim/sgd.yaml)."""

    lr: float = 0.0015
    momentum: float = 0.9
    weight_decay: float = 2e-4
    decay_bn_and_bias: bool = True
    reference_batch: int = 32
    scale_lr: str = "linear"


@dataclass
class ScheduleOptions:
    """Step-wise exponential decay (configs/schedule/exponential.yaml)."""

    decay_rate: float = 0.96
    decay_epochs: float = 8.0
    decay_steps: float | None = None
    speedup: float = 1.0


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one line that says what to do."""


# ----------------------------------------------------------------------------------------------- setup


def resolve_model_name(name: str, input_size: int) -> str:
    if name != "auto":
        return name
    return "bn_inception" if input_size >= LARGE_INPUT_MIN else "bn_inception_small"


def resolve_switch(value: bool | str, device: torch.device, key: str, auto_on_cpu: bool = False) -> bool:
    """``auto`` switches are on where they help: on a GPU, and on the CPU where ``auto_on_cpu`` says so."""
    if value == "auto":
        return device.type == "cuda" or auto_on_cpu
    if isinstance(value, bool):
        return value
    raise TrainingError(f"trainer.{key}={value!r} is not valid; use auto, true or false")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    choices = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp not in choices:
        raise TrainingError(f"trainer.amp={amp!r} is not valid; use auto, bf16, fp16 or none")
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("trainer.amp=fp16 needs a GPU; use trainer.amp=bf16 or none on CPU")
    return choices[amp]


def set_determinism(deterministic: bool) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def build_optimizer(
    model: nn.Module, opts: OptimOptions, lr: float, device: torch.device, fused: bool | None = None
) -> torch.optim.SGD:
    """SGD with momentum; L2 on every parameter, or (``decay_bn_and_bias=false``) not on 1-d ones.

    ``fused`` None: the fused kernel on CUDA and CPU (the devices torch has one for).
    """
    if opts.decay_bn_and_bias:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    else:
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel: one launch for all parameters, and it can skip an update on the device (found_inf).
    # On a CPU it halves the update of the default per-tensor loop (0.65 vs 1.26 ms for bn_inception_small's
    # 209 tensors, docs/benchmarks.md; the same update, up to floating-point rounding).
    if fused is None:
        fused = True if device.type in ("cuda", "cpu") else None
    return torch.optim.SGD(groups, lr=lr, momentum=opts.momentum, weight_decay=opts.weight_decay, fused=fused)


def find_resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """``auto``: the run dir's last checkpoint if any; ``never``: none (refuse an existing run); or a path."""
    last = run_dir / "checkpoints" / "last.pt"
    if resume in (None, "never", "null"):
        if last.exists():
            raise TrainingError(
                f"{run_dir} already holds a run ({last}); pass resume=auto to continue it, "
                f"or hydra.run.dir=<new dir> (or another seed) to start a new one"
            )
        return None
    if resume == "auto":
        return last if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise TrainingError(f"resume={resume}: no such checkpoint; use resume=auto, never, or a .pt path")
    return path


@dataclass
class RunState:
    """What the loop carries between evaluations (and checkpoints)."""

    step: int = 0
    best_top1: float = -1.0
    best_step: int | None = None
    steps_to_target: int | None = None
    evals: list[dict[str, float]] | None = None
    train_images: int = 0  # images trained on, all processes, for the throughput figure
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # wall time of the segments before this one (resume)

    def __post_init__(self) -> None:
        self.evals = self.evals or []


# ------------------------------------------------------------------------------------------------ train


def train(
    *,
    run_dir: str | Path,
    name: str,
    experiment: str,
    seed: int,
    resume: str | None,
    model_name: str,
    model_kwargs: dict[str, Any],
    data_kwargs: dict[str, Any],
    optim: OptimOptions,
    schedule: ScheduleOptions,
    trainer: TrainerOptions,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Train one run in ``run_dir``; returns the ``results.json`` dict (also written there).

    A diverged run (NaN/Inf loss or parameters) is a result, not an exception: the run stops at once,
    keeps its last good checkpoint and records ``status: diverged``.
    """
    wall_start = time.perf_counter()
    run_dir = Path(run_dir)
    dist = init_distributed(trainer.device)
    try:
        return _train(
            wall_start,
            run_dir,
            dist,
            name,
            experiment,
            seed,
            resume,
            model_name,
            model_kwargs,
            data_kwargs,
            optim,
            schedule,
            trainer,
            config,
        )
    finally:
        shutdown_distributed()


def _train(
    wall_start,
    run_dir,
    dist: DistInfo,
    name,
    experiment,
    seed,
    resume,
    model_name,
    model_kwargs,
    data_kwargs,
    optim,
    schedule,
    trainer,
    config,
) -> dict[str, Any]:
    device = dist.device
    set_determinism(trainer.deterministic)
    amp_dtype = resolve_amp(trainer.amp, device)
    # channels_last measured faster on CPU too: 64 vs 87 ms/step for bn_inception_small (1 thread), 541 vs
    # 692 ms for bn_inception at 224 px, batch 8 (benchmarks/model_step_time.py --channels-last)
    channels_last = resolve_switch(trainer.channels_last, device, "channels_last", auto_on_cpu=True)
    ckpt_path = find_resume_checkpoint(resume, run_dir)
    results_path = run_dir / "results.json"

    # ---- data (uint8 batches, or JPEG bytes with data.decode=gpu; to_model_input makes the model's input)
    splits = build_datasets(**data_kwargs, seed=seed, device=device)
    global_batch = trainer.batch_size * dist.world_size
    pin = device.type == "cuda"  # page-locked batches: asynchronous host-to-GPU copies; useless on a CPU
    loader = build_train_loader(
        splits.train,
        batch_size=trainer.batch_size,
        seed=seed,
        rank=dist.rank,
        world_size=dist.world_size,
        pin_memory=pin,
        **_loader_kwargs(data_kwargs),
    )
    val_loader = build_eval_loader(
        splits.val,
        batch_size=trainer.eval_batch_size,
        workers=data_kwargs.get("workers", 0),
        limit=trainer.eval_limit,
        rank=dist.rank,
        world_size=dist.world_size,
        max_bad_fraction=data_kwargs.get("max_bad_fraction", 0.001),
        pin_memory=pin,
    )

    # ---- model: the same initial weights on every process (seeded before building)
    torch.manual_seed(seed)
    arch = resolve_model_name(model_name, splits.input_size)
    create_kwargs = {k: v for k, v in model_kwargs.items() if v is not None}
    create_kwargs.update(num_classes=splits.num_classes, in_chans=splits.in_chans, img_size=splits.input_size)
    raw_model = timm.create_model(arch, **create_kwargs)
    if trainer.sync_bn and model_kwargs.get("norm", "batch") != "batch":
        raise TrainingError(
            "trainer.sync_bn=true needs model.norm=batch (paper/ghost BN keep per-replica statistics)"
        )
    if trainer.sync_bn and dist.distributed:
        raw_model = timm.layers.convert_sync_batchnorm(raw_model)
    raw_model.to(device)
    if channels_last:
        raw_model.to(memory_format=torch.channels_last)
    timm.utils.random_seed(seed, dist.rank)  # dropout differs per process, as on separate replicas

    lr0 = scaled_lr(optim.lr, global_batch, optim.reference_batch, optim.scale_lr)
    finite_check = resolve_finite_check(trainer.finite_check, device)
    optimizer = build_optimizer(
        raw_model, optim, lr0, device, fused=True if finite_check == "device" else None
    )
    interval = decay_interval_steps(
        schedule.decay_epochs, schedule.decay_steps, schedule.speedup, len(splits.train), global_batch
    )
    lr_schedule = build_lr_schedule(optimizer, interval, schedule.decay_rate)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    # ---- resume
    state = RunState()
    if ckpt_path is not None:
        previous = _previous_results(results_path)
        if resume == "auto" and previous and previous.get("status") == "diverged":
            log.info(
                "run %s diverged at step %s; nothing to resume (its last good checkpoint is kept)",
                run_dir,
                previous.get("diverged_at_step"),
            )
            return previous
        state = _restore(ckpt_path, config, resume, raw_model, optimizer, scaler, loader, dist)
        log.info("resumed from %s at step %d", ckpt_path, state.step)

    model: nn.Module = raw_model
    if dist.distributed:
        model = DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # ---- GPU speed (issue 7): torch.compile with an eager fallback on the first step; a non-finite guard
    # that, on a GPU, needs no host sync per step (engine/step.py)
    train_step = TrainStep(
        model, optimizer, scaler, device, amp_dtype, resolve_compile(trainer.compile, device)
    )
    guard = NonFiniteGuard(finite_check, trainer.finite_check_every, optimizer, scaler, device)

    # ---- logging (process 0 writes everything)
    writer = probes = None
    hparams = tblog.flatten_hparams({"experiment": experiment, **config})
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        writer = tblog.open_writer(str(run_dir), purge_step=state.step if state.step else None)
        if state.step == 0:
            tblog.write_hparams(writer, hparams)
            tblog.write_compare_layout(writer)
        if hasattr(raw_model, "probe_modules"):
            probes = tblog.ActivationPercentiles(raw_model.probe_modules(), trainer.probe_images)
        env = environment(device, dist.world_size)
        log.info(
            "run %s: %s (%s) on %s, %d process(es), global batch %d, lr %.5g, decay x%.3g every %.0f steps",
            name,
            arch,
            experiment,
            device,
            dist.world_size,
            global_batch,
            lr0,
            schedule.decay_rate,
            interval,
        )
        log.info(
            "speed: images decoded on %s, amp %s, channels_last %s, compile %s, non-finite check %s",
            "the GPU" if splits.decode_on_device else "the CPU",
            amp_dtype,
            channels_last,
            resolve_compile(trainer.compile, device) or "off",
            finite_check,
        )
    summary = {
        "name": name,
        "experiment": experiment,
        "seed": seed,
        "model": arch,
        "status": "running",
        "config_digest": config_digest(config),
        "target_top1": trainer.target_top1,
        "global_batch": global_batch,
        "lr": lr0,
        "decay_interval_steps": interval,
    }

    def write_results(status: str, diverged_at: int | None = None) -> dict[str, Any]:
        last = state.evals[-1] if state.evals else {}
        out = {
            **summary,
            "status": status,
            "diverged_at_step": diverged_at,
            "steps": state.step,
            "best_top1": state.best_top1 if state.best_step is not None else None,
            "best_step": state.best_step,
            "final_top1": last.get("top1"),
            "final_top5": last.get("top5"),
            "final_train_loss": last.get("train_loss"),
            "steps_to_target": state.steps_to_target,
            "img_per_s": state.train_images / state.train_seconds if state.train_seconds else None,
            "wall_s": state.wall_seconds + (time.perf_counter() - wall_start),
            "skipped_images": _skipped(loader, val_loader),
            "evals": state.evals,
            "environment": env if dist.is_main else None,
        }
        if dist.is_main:
            write_json_atomic(results_path, out)
        return out

    def evaluate_and_checkpoint(meter: dict[str, torch.Tensor]) -> bool:
        """Validate, log, checkpoint; False when the parameters are no longer finite (divergence)."""
        normalisation = {"mean": splits.mean, "std": splits.std}
        if probes is not None:
            with probes.recording():
                metrics = validate(raw_model, val_loader, device, amp_dtype, channels_last, **normalisation)
        else:
            metrics = validate(raw_model, val_loader, device, amp_dtype, channels_last, **normalisation)
        finite = bool(
            all_reduce_sum(torch.tensor([float(not _params_finite(raw_model))], device=device)) == 0
        )
        if not finite:
            return False
        sums = all_reduce_sum(torch.stack([meter["loss"], meter["correct"], meter["count"]])).tolist()
        train_loss = sums[0] / max(sums[2], 1)
        record = {
            "step": state.step,
            "top1": metrics["top1"],
            "top5": metrics["top5"],
            "val_loss": metrics["loss"],
            "train_loss": train_loss,
        }
        state.evals.append(record)
        improved = metrics["top1"] > state.best_top1
        if improved:
            state.best_top1, state.best_step = metrics["top1"], state.step
        if (
            trainer.target_top1 is not None
            and state.steps_to_target is None
            and metrics["top1"] >= trainer.target_top1
        ):
            state.steps_to_target = state.step
        ckpt = _checkpoint(
            raw_model,
            optimizer,
            scaler,
            lr_schedule,
            loader,
            state,
            arch,
            create_kwargs,
            splits,
            config,
            dist,
            wall_s=state.wall_seconds + time.perf_counter() - wall_start,
        )
        if dist.is_main:
            tblog.write_scalars(
                writer,
                {"val/top1": metrics["top1"], "val/top5": metrics["top5"], "val/loss": metrics["loss"]},
                state.step,
            )
            if probes is not None:
                tblog.write_scalars(writer, probes.percentiles(), state.step)
            tblog.write_scalars(
                writer,
                {
                    "hparam/best_top1": state.best_top1,
                    "hparam/final_top1": metrics["top1"],
                    "hparam/final_top5": metrics["top5"],
                    "hparam/steps_to_target": float(state.steps_to_target or -1),
                },
                state.step,
            )
            writer.flush()  # events up to this checkpoint survive a SIGKILL
            save_checkpoint(ckpt, run_dir / "checkpoints" / "last.pt")
            if improved:
                save_checkpoint(ckpt, run_dir / "checkpoints" / "best.pt")
            write_results("running")
            log.info(
                "step %d/%d | val top1 %.2f top5 %.2f | train loss %.4f | lr %.4g | best %.2f @ %d",
                state.step,
                trainer.max_steps,
                metrics["top1"],
                metrics["top5"],
                train_loss,
                optimizer.param_groups[0]["lr"],
                state.best_top1,
                state.best_step,
            )
        return True

    # ---- the loop
    if state.step >= trainer.max_steps and state.evals:
        if dist.is_main:
            log.info(
                "run %s already reached step %d (trainer.max_steps=%d): nothing to do",
                run_dir,
                state.step,
                trainer.max_steps,
            )
        return write_results("completed")

    status, diverged_at = "completed", None
    meter = _new_meter(device)  # sums since the last evaluation
    logged = torch.zeros(3, device=device)  # the meter's sums at the last log line
    batches = iter(loader)
    timer = _Throughput(state, global_batch)
    data_wait, log_time, log_step = 0.0, time.perf_counter(), state.step
    bar = tqdm(
        total=trainer.max_steps,
        initial=state.step,
        disable=not (trainer.progress and dist.is_main),
        dynamic_ncols=True,
        mininterval=1.0,
        unit="step",
    )
    model.train()
    with logging_redirect_tqdm():
        while state.step < trainer.max_steps:
            t_fetch = time.perf_counter()
            images, labels = next(batches)
            data_wait += time.perf_counter() - t_fetch
            # uint8 -> normalised float in the model's layout, one kernel on the device (decoded there first
            # with data.decode=gpu)
            images = to_model_input(images, splits.mean, splits.std, device, channels_last)
            labels = labels.to(device, non_blocking=True)
            lr_schedule.step_update(state.step)  # the lr is a pure function of the step

            logits, loss = train_step(images, labels)  # zero_grad, forward, loss, backward
            # Checked before the update, so a non-finite loss or gradient never reaches the parameters:
            # sync mode reads the loss (a host sync on a GPU); device mode makes the fused update skip itself.
            if guard.check(state.step + 1, loss):
                status, diverged_at = "diverged", state.step + 1
                break
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            state.step += 1
            meter["loss"] += loss.detach().float() * labels.numel()
            meter["correct"] += (logits.detach().argmax(dim=1) == labels).sum()
            meter["count"] += labels.numel()
            bar.update(1)

            # Device mode: the non-finite flag is read where the loop syncs anyway (logging, evaluation).
            if (
                state.step % trainer.log_every == 0
                or state.step % trainer.eval_every == 0
                or state.step == trainer.max_steps
            ):
                first_bad = guard.poll()
                if first_bad is not None:
                    # Every update from first_bad on was skipped: the parameters are those of the step before.
                    status, diverged_at, state.step = "diverged", first_bad, first_bad - 1
                    break

            if state.step % trainer.log_every == 0 and dist.is_main:
                now = time.perf_counter()
                sums = torch.stack([meter["loss"], meter["correct"], meter["count"]])
                loss_sum, correct, count = (sums - logged).tolist()
                logged = sums
                img_s = (state.step - log_step) * global_batch / (now - log_time)
                tblog.write_scalars(
                    writer,
                    {
                        "train/loss": loss_sum / count,
                        "train/top1": 100 * correct / count,
                        "train/lr": optimizer.param_groups[0]["lr"],
                        "perf/img_per_s": img_s,
                        "perf/data_wait_frac": data_wait / (now - log_time),
                    },
                    state.step,
                )
                bar.set_postfix(loss=f"{loss_sum / count:.3f}", img_s=f"{img_s:.0f}", refresh=False)
                data_wait, log_time, log_step = 0.0, now, state.step

            if state.step % trainer.eval_every == 0 or state.step == trainer.max_steps:
                with timer.paused():
                    state.train_images, state.train_seconds = timer.totals()
                    if not evaluate_and_checkpoint(meter):
                        status, diverged_at = "diverged", state.step
                        break
                meter, logged = _new_meter(device), torch.zeros(3, device=device)
                data_wait, log_time, log_step = 0.0, time.perf_counter(), state.step
    bar.close()
    state.train_images, state.train_seconds = timer.totals()
    if status == "diverged":
        log.warning(
            "run %s diverged at step %d (non-finite loss or parameters); the last good checkpoint is %s",
            name,
            diverged_at,
            run_dir / "checkpoints" / "last.pt",
        )
    results = write_results(status, diverged_at)
    if writer is not None:
        writer.close()
    if probes is not None:
        probes.remove()
    return results


class _Throughput:
    """Training images and seconds (evaluation and checkpointing excluded), this segment plus before."""

    def __init__(self, state: RunState, global_batch: int) -> None:
        self.images0, self.seconds0, self.step0 = state.train_images, state.train_seconds, state.step
        self.state, self.global_batch = state, global_batch
        self.start, self.paused_seconds = time.perf_counter(), 0.0

    @contextmanager
    def paused(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - t

    def totals(self) -> tuple[int, float]:
        images = self.images0 + (self.state.step - self.step0) * self.global_batch
        return images, self.seconds0 + (time.perf_counter() - self.start - self.paused_seconds)


# ------------------------------------------------------------------------------------------ helpers


def _loader_kwargs(data_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The data config keys that describe the training loader (the rest describe the dataset)."""
    keys = ("shuffle", "workers", "max_bad_fraction", "shard_size", "shuffle_buffer")
    return {k: data_kwargs[k] for k in keys if k in data_kwargs}


def _new_meter(device: torch.device) -> dict[str, torch.Tensor]:
    # Accumulated on the device and read only at log/eval time: no host sync per step.
    return {k: torch.zeros((), device=device) for k in ("loss", "correct", "count")}


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _skipped(loader, val_loader) -> int:
    val_bad = set(getattr(val_loader, "bad_files", []) or [])
    return int(getattr(loader, "skipped_images", 0)) + len(val_bad)


def _previous_results(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _checkpoint(
    model,
    optimizer,
    scaler,
    lr_schedule,
    loader,
    state: RunState,
    arch,
    create_kwargs,
    splits,
    config,
    dist: DistInfo,
    wall_s: float,
) -> dict[str, Any]:
    """Everything needed to continue exactly (docs/design.md), as plain tensors and containers."""
    rng = capture_rng_state()
    if dist.distributed:  # every process's generators (dropout differs per process)
        gathered: list[Any] = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, rng)
        rng = {"per_rank": gathered}
    return {
        "model": model_state_dict(model),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "schedule": lr_schedule.state_dict(),
        "step": state.step,
        "loader": loader.state_dict(),
        "rng": rng,
        "best_top1": state.best_top1,
        "best_step": state.best_step,
        "steps_to_target": state.steps_to_target,
        "evals": state.evals,
        "train_images": state.train_images,
        "train_seconds": state.train_seconds,
        "wall_seconds": wall_s,
        "world_size": dist.world_size,
        "model_name": arch,
        "model_kwargs": create_kwargs,
        "data": {
            "input_size": splits.input_size,
            "mean": list(splits.mean),
            "std": list(splits.std),
            "classes": list(splits.classes),
            "in_chans": splits.in_chans,
        },
        "config": config,
    }


def _restore(path: Path, config, resume, model, optimizer, scaler, loader, dist: DistInfo) -> RunState:
    ckpt = load_checkpoint(path)
    saved = ckpt.get("config") or {}
    diffs = config_differences(saved, config)
    if diffs and resume == "auto":
        raise TrainingError(
            f"{path} was written with another config ({'; '.join(diffs[:3])}{' ...' * (len(diffs) > 3)});"
            f" resume with the same settings, or start a new run with hydra.run.dir=<new dir>"
        )
    if diffs:
        log.warning("resuming from %s with a different config: %s", path, "; ".join(diffs))
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} does not fit this model/optimizer: {first}") from e
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ckpt.get("world_size", 1) == dist.world_size:
        loader.load_state_dict(ckpt["loader"])
        rng = ckpt["rng"]
        restore_rng_state(rng["per_rank"][dist.rank] if "per_rank" in rng else rng)
    else:
        log.warning(
            "checkpoint %s was written by %d process(es), this run has %d: the data order and "
            "random state restart at the saved step",
            path,
            ckpt.get("world_size", 1),
            dist.world_size,
        )
        loader.load_state_dict(ckpt["loader"])
    return RunState(
        step=int(ckpt["step"]),
        best_top1=float(ckpt["best_top1"]),
        best_step=ckpt.get("best_step"),
        steps_to_target=ckpt.get("steps_to_target"),
        evals=list(ckpt.get("evals") or []),
        train_images=int(ckpt.get("train_images", 0)),
        train_seconds=float(ckpt.get("train_seconds", 0)),
        wall_seconds=float(ckpt.get("wall_seconds", 0)),
    )


def options_from(cls, values: dict[str, Any]):
    """Build an options dataclass from a config section, rejecting keys the dataclass does not know."""
    known = set(cls.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise TrainingError(f"unknown {cls.__name__} keys {sorted(unknown)}; valid: {sorted(known)}")
    return cls(**values)


__all__ = [
    "OptimOptions",
    "ScheduleOptions",
    "TrainerOptions",
    "TrainingError",
    "options_from",
    "resolve_model_name",
    "train",
]
