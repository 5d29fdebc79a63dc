"""The training loop, readable in one sitting: set-up builds a :class:`Run`, :func:`train_loop` runs it.

Steps (optimizer updates) are the unit everywhere, as in the paper's Figure 2. Library code: every input is
a plain argument (the schema's dataclasses, ``bn_inception.config``); ``train.py`` composes and validates
the Hydra config and calls :func:`train_from_config`.

What a run guarantees (docs/design.md): one process owns its directory (``engine/rundir.py``); a signal
ends it after the current step with ``last.pt`` and ``results.json`` written (``engine/signals.py``);
``results.json``, ``last.pt`` and ``best.pt`` always agree after a kill at any instant (``results.json`` is
a function of the checkpoint's content, and ``engine/checkpoint.py`` repairs the pair at start); a
non-finite loss, gradient, parameter, BN statistic or validation loss is divergence, and no checkpoint
holding one is ever written.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import bn_inception  # noqa: F401  (registers the models with timm)
from bn_inception.config import (
    InceptionModelConfig,
    MLPModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    TrainerConfig,
    effective_lr,
    effective_weight_decay,
    validate,
)
from bn_inception.data import (
    DataSplits,
    build_datasets,
    build_eval_loader,
    build_train_loader,
    to_model_input,
)
from bn_inception.engine import tblog, wandb_log
from bn_inception.engine.checkpoint import (
    CheckpointError,
    all_finite,
    copy_checkpoint,
    load_checkpoint,
    model_state_dict,
    reconcile_checkpoints,
    save_checkpoint,
)
from bn_inception.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_object,
    init_distributed,
    shutdown_distributed,
)
from bn_inception.engine.precision import (
    check_deterministic,
    resolve_amp,
    resolve_channels_last,
    resolve_finite_check,
)
from bn_inception.engine.progress import Progress
from bn_inception.engine.rng import capture_rng_state, restore_rng_state
from bn_inception.engine.rundir import (
    RunDirBusy,
    RunLock,
    attach_log_file,
    remove_interrupted_saves,
)
from bn_inception.engine.runinfo import config_differences, config_digest, environment, write_json_atomic
from bn_inception.engine.schedule import build_lr_schedule, decay_interval_steps, scaled_lr
from bn_inception.engine.signals import GracefulStop
from bn_inception.engine.step import NonFiniteGuard, TrainStep, compile_plan
from bn_inception.engine.validate import validate as run_validation
from bn_inception.files import write_atomically

log = logging.getLogger(__name__)

#: Inputs at least this large get the 224-px network; smaller ones (28-64 px) its small-input member.
LARGE_INPUT_MIN = 96


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


@dataclass
class Run:
    """Everything set-up builds and the loop uses: one plain object, no hidden state."""

    dir: Path
    dist: DistInfo
    model: nn.Module  # what the step runs (DDP-wrapped when distributed)
    raw_model: nn.Module
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

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


# ------------------------------------------------------------------------------------------ entry


def train_from_config(
    config: Mapping[str, Any],
    run_dir: str | Path,
    experiment: str | None = None,
    run_files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Train the run a composed ``train.py`` config describes (a plain, resolved dict); see :func:`train`.

    ``run_files`` (relative path -> text, e.g. Hydra's ``.hydra/config.yaml``) are written into the run
    directory once the launch is accepted: a refused one (another config, a finished run) leaves the
    run's record as it was.
    """
    validate(config, TrainConfig)
    model = dict(config["model"])
    model_schema = MLPModelConfig if model.get("name") == "bn_mlp" else InceptionModelConfig
    return train(
        run_dir=Path(run_dir),
        name=config["name"],
        experiment=experiment or config["name"],
        seed=config["seed"],
        resume=config["resume"],
        model=model_schema(**model),
        data=dict(config["data"]),
        optim=OptimConfig(**config["optim"]),
        schedule=ScheduleConfig(**config["schedule"]),
        trainer=TrainerConfig(**config["trainer"]),
        config=dict(config),
        run_files=run_files,
    )


def train(
    *,
    run_dir: Path,
    name: str,
    experiment: str,
    seed: int,
    resume: str,
    model: InceptionModelConfig | MLPModelConfig,
    data: dict[str, Any],
    optim: OptimConfig,
    schedule: ScheduleConfig,
    trainer: TrainerConfig,
    config: dict[str, Any],
    run_files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Train one run in ``run_dir``; returns the ``results.json`` dict (also written there).

    ``status`` is ``completed``, ``diverged`` (a result, not an exception: the run stopped at its first
    non-finite step and keeps its last good checkpoint) or ``interrupted`` (a signal; continue it with
    ``resume=auto``). Another process in ``run_dir`` is refused before anything is written there.
    """
    dist = init_distributed(trainer.device)
    stop = GracefulStop()
    try:
        check_deterministic(trainer.deterministic, bool(getattr(model, "lrn", False)), dist.device)
        # The one place a run's resources are released, in reverse order, on every way out (completed,
        # diverged, failed, a signal, Ctrl-C twice, an error during set-up): the loaders' worker processes,
        # the TensorBoard writer and the probes (`resources`, each from the moment it exists), train.log's
        # handler and the run-directory lock with its heartbeat (owned_run_dir), the signal handlers, then
        # the process group. tests/e2e takes the ways out users meet and checks that nothing is left running.
        with stop, owned_run_dir(run_dir, dist), ExitStack() as resources:
            ckpt = load_resume_checkpoint(resume, run_dir, config, dist)
            done = results_if_finished(run_dir, ckpt, config, trainer.max_steps, dist)
            if done is not None:
                return done
            if dist.is_main:  # the launch is accepted: now its config is the run's record
                for relative, text in (run_files or {}).items():
                    write_atomically(run_dir / relative, text)
            run = set_up(
                run_dir,
                dist,
                stop,
                ckpt,
                name,
                experiment,
                seed,
                model,
                data,
                optim,
                schedule,
                trainer,
                config,
                resources=resources,
            )
            try:
                status = train_loop(run)
            except BaseException:
                record_failure(run)
                raise
            results = finish(run, status)
    finally:
        shutdown_distributed()
    if status == "interrupted":
        stop.pass_on()  # submitit's requeue, now that the run is saved and its directory released
    return results


@contextmanager
def owned_run_dir(run_dir: Path, dist: DistInfo) -> Iterator[None]:
    """Process 0 locks the run directory (every process learns whether it could), removes the temporary
    files of saves a kill interrupted and starts ``train.log``."""
    lock, handler, refusal = None, None, None
    if dist.is_main:
        try:
            lock = RunLock(run_dir)
            lock.acquire()
        except (RunDirBusy, OSError) as e:
            refusal = str(e) if isinstance(e, RunDirBusy) else f"cannot write to {run_dir}: {e.strerror or e}"
    refusal = broadcast_object(refusal)
    if refusal:
        raise TrainingError(refusal)
    try:
        if dist.is_main:
            for path in remove_interrupted_saves(run_dir):
                log.info("removed %s (a save interrupted by a kill)", path)
            handler = attach_log_file(run_dir / "train.log")
        yield
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        if lock is not None:
            lock.release()


def load_resume_checkpoint(
    resume: str, run_dir: Path, config: dict[str, Any], dist: DistInfo
) -> dict[str, Any] | None:
    """The checkpoint to continue from (see ``resume`` in bn_inception/config.py), checked against this
    config, with this run's ``best.pt`` repaired to agree with it."""
    last = run_dir / "checkpoints" / "last.pt"
    if resume == "never":
        if last.exists():
            raise TrainingError(
                f"{run_dir} already holds a run ({last}); pass resume=auto to continue it, "
                f"or hydra.run.dir=<new dir> (or another seed) to start a new one"
            )
        return None
    path = last if resume == "auto" else Path(resume)
    best = run_dir / "checkpoints" / "best.pt"
    if resume == "auto" and not last.exists() and (best.exists() or best.is_symlink()):  # last.pt removed
        raise TrainingError(
            f"{run_dir} holds {best} but no last.pt; continue from it with resume={best}, or start a new run "
            f"with hydra.run.dir=<new dir> (starting here would overwrite it)"
        )
    if resume == "auto" and not last.exists():
        return None
    if not path.is_file():
        inside = path / "checkpoints" / "last.pt"
        hint = f" (in a run directory: resume={inside})" if inside.is_file() else ""
        raise TrainingError(f"resume={resume}: no such checkpoint{hint}; use resume=auto, never, or a path")
    ckpt = load_checkpoint(path)
    missing = [key for key in ("optimizer", "loader", "rng", "step") if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} has no {missing[0]!r} entry: it was not written by train.py and cannot be "
            f"continued; pass a last.pt or best.pt of a run (resume=PATH), or resume=never to start anew"
        )
    diffs = config_differences(ckpt.get("config") or {}, config)
    if diffs and resume == "auto":
        raise TrainingError(
            f"{path} was written with another config ({'; '.join(diffs[:3])}{' ...' * (len(diffs) > 3)});"
            f" resume with the same settings, or start a new run with hydra.run.dir=<new dir>"
        )
    if diffs:
        log.warning("starting from %s with a different config: %s", path, "; ".join(diffs))
    if resume == "auto" and dist.is_main:
        for line in reconcile_checkpoints(run_dir / "checkpoints", ckpt):
            log.warning("%s", line)
    return ckpt


def results_if_finished(
    run_dir: Path, ckpt: dict[str, Any] | None, config: dict[str, Any], max_steps: int, dist: DistInfo
) -> dict[str, Any] | None:
    """A diverged run, or one that already reached ``max_steps``: its results (rewritten from the
    checkpoint, so they agree with it) and one log line; nothing is built or trained."""
    previous = _read_json(run_dir / "results.json")
    diverged_at = previous.get("diverged_at_step") if previous.get("status") == "diverged" else None
    if diverged_at is not None and (ckpt is None or ckpt["step"] < diverged_at):
        if previous.get("config_digest") != config_digest(config):
            raise TrainingError(
                f"{run_dir} holds a diverged run with another config; start the new one with "
                f"hydra.run.dir=<new dir> (or another seed)"
            )
        if dist.is_main:
            log.info("%s: diverged at step %s; nothing to resume", run_dir, previous.get("diverged_at_step"))
        return {**previous, "unchanged": True}
    if ckpt is None or "info" not in ckpt:
        return None
    state = state_from_checkpoint(ckpt)
    if state.step < max_steps or not state.evals:
        return None
    agrees = previous.get("status") == "completed" and previous.get("steps") == state.step
    results = previous if agrees else results_dict(ckpt["info"], state, run_dir, "completed", None, 0)
    if dist.is_main:
        if not agrees:  # a kill came between the last checkpoint and results.json
            write_json_atomic(run_dir / "results.json", results)
        log.info("%s: finished (%d steps, best top-1 %.2f%% at step %d); nothing to do", run_dir, state.step,
                 state.best_top1, state.best_step)  # fmt: skip
    return {**results, "unchanged": True}  # not in the file: tells train.py to print nothing more


# ----------------------------------------------------------------------------------------- set-up


def set_up(
    run_dir,
    dist,
    stop,
    ckpt,
    name,
    experiment,
    seed,
    model,
    data,
    optim,
    schedule,
    trainer,
    config,
    *,
    resources,
) -> Run:
    """Data, model, optimiser and schedule, the saved state, logging: everything the loop needs."""
    device = dist.device
    set_determinism(trainer.deterministic)
    amp_dtype = resolve_amp(trainer.amp, device)
    channels_last = resolve_channels_last(trainer.channels_last, device)

    # data: uint8 batches (JPEG bytes with data.decode=gpu); to_model_input makes the model's input
    splits = build_datasets(**data, seed=seed, device=device)
    global_batch = trainer.batch_size * dist.world_size
    pin = device.type == "cuda"  # page-locked batches: asynchronous host-to-GPU copies
    loader = build_train_loader(
        splits.train,
        batch_size=trainer.batch_size,
        seed=seed,
        rank=dist.rank,
        world_size=dist.world_size,
        pin_memory=pin,
        **splits.loader,
    )
    resources.callback(loader.close)
    val_loader = build_eval_loader(
        splits.val,
        batch_size=trainer.eval_batch_size,
        workers=splits.loader["workers"],
        limit=trainer.eval_limit,
        rank=dist.rank,
        world_size=dist.world_size,
        max_bad_fraction=splits.loader["max_bad_fraction"],
        pin_memory=pin,
    )
    resources.callback(val_loader.close)

    # model: the same initial weights on every process (seeded before building)
    torch.manual_seed(seed)
    arch, create_kwargs = model_arguments(model, splits)
    raw_model = timm.create_model(arch, **create_kwargs)
    if trainer.sync_bn and create_kwargs.get("norm", "batch") != "batch":
        raise TrainingError(
            "trainer.sync_bn=true needs model.norm=batch (paper/ghost BN keep per-replica statistics)"
        )
    if trainer.sync_bn and dist.distributed:
        raw_model = timm.layers.convert_sync_batchnorm(raw_model)
    raw_model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    timm.utils.random_seed(seed, dist.rank)  # dropout differs per process, as on separate replicas

    # optimiser and schedule (Sec. 4.2): SGD with momentum, the lr a pure function of the step
    lr0 = scaled_lr(
        effective_lr(dataclasses.asdict(optim)), global_batch, optim.reference_batch, optim.scale_lr
    )
    finite_check = resolve_finite_check(trainer.finite_check, device)
    optimizer = build_optimizer(
        raw_model, optim, lr0, device, fused=True if finite_check == "device" else None
    )
    interval = decay_interval_steps(
        schedule.decay_epochs, schedule.decay_steps, schedule.speedup, len(splits.train), global_batch
    )
    lr_schedule = build_lr_schedule(optimizer, interval, schedule.decay_rate)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    meter = Meter(device)
    state = RunState()
    if ckpt is not None:
        state = restore(ckpt, raw_model, optimizer, scaler, loader, meter, dist)

    wrapped = raw_model
    if dist.distributed:
        wrapped = DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    compile_mode, eager_why = compile_plan(trainer.compile, device, trainer.sync_bn and dist.distributed)
    guard = NonFiniteGuard(finite_check, trainer.finite_check_every, optimizer, scaler, device)
    solo = not dist.distributed  # under DDP a failed compile stops the run (bn_inception.engine.step)
    step = TrainStep(wrapped, optimizer, scaler, device, amp_dtype, compile_mode, guard=guard, fallback=solo)

    info = {
        "name": name,
        "experiment": experiment,
        "seed": seed,
        "model": arch,
        "parameters": sum(p.numel() for p in raw_model.parameters()),
        "config_digest": config_digest(config),
        "target_top1": trainer.target_top1,
        "global_batch": global_batch,
        "lr": lr0,
        "weight_decay": effective_weight_decay(dataclasses.asdict(optim)),
        "decay_interval_steps": interval,
        "environment": environment(device, dist.world_size),
    }
    progress = Progress(f"{name}/seed{seed}", trainer, dist.is_main, state, global_batch)
    run = Run(
        run_dir,
        dist,
        wrapped,
        raw_model,
        optimizer,
        scaler,
        lr_schedule,
        step,
        loader,
        val_loader,
        splits,
        amp_dtype,
        channels_last,
        trainer,
        state,
        meter,
        info,
        create_kwargs,
        config,
        stop,
        progress,
    )
    if dist.is_main:
        open_logs(
            run,
            config,
            resumed_from=ckpt is not None,
            eager_why=eager_why,
            finite_check=finite_check,
            resources=resources,
        )
    return run


def model_arguments(model: InceptionModelConfig | MLPModelConfig, splits: DataSplits) -> tuple[str, dict]:
    """``timm.create_model``'s name and arguments: the model config (its nulls left to the model's own
    defaults) plus what the data decide (classes, channels, input size)."""
    kwargs = {k: v for k, v in dataclasses.asdict(model).items() if v is not None}
    name = kwargs.pop("name")
    if name == "auto":
        name = "bn_inception" if splits.input_size >= LARGE_INPUT_MIN else "bn_inception_small"
    kwargs.update(num_classes=splits.num_classes, in_chans=splits.in_chans)
    if name != "bn_mlp":
        kwargs["img_size"] = splits.input_size
    return name, kwargs


def set_determinism(deterministic: bool) -> None:
    if deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def build_optimizer(
    model: nn.Module, opts: OptimConfig, lr: float, device: torch.device, fused: bool | None = None
) -> torch.optim.SGD:
    """SGD with momentum; L2 on every parameter, or (``decay_bn_and_bias=false``) not on 1-d ones.

    ``fused`` None: the fused kernel on CUDA and CPU (the devices torch has one for).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if opts.decay_bn_and_bias:
        groups = [{"params": params}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    # The fused kernel: one launch for all parameters, and it can skip an update on the device (found_inf).
    # On a CPU it halves the update of the default per-tensor loop (0.65 vs 1.26 ms for bn_inception_small's
    # 209 tensors, docs/benchmarks.md; the same update, up to floating-point rounding).
    if fused is None:
        fused = True if device.type in ("cuda", "cpu") else None
    weight_decay = effective_weight_decay(dataclasses.asdict(opts))
    return torch.optim.SGD(groups, lr=lr, momentum=opts.momentum, weight_decay=weight_decay, fused=fused)


def restore(ckpt, model, optimizer, scaler, loader, meter, dist: DistInfo) -> RunState:
    """Load a checkpoint's weights, optimiser, sampler position, meter and every RNG; the run's state."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"the checkpoint does not fit this model/optimizer: {first}") from e
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    saved_world = ckpt.get("world_size", 1)
    meters = ckpt.get("meter") or {}
    if saved_world == dist.world_size:
        loader.load_state_dict(ckpt["loader"])
        rng = ckpt["rng"]
        restore_rng_state(rng["per_rank"][dist.rank] if "per_rank" in rng else rng)
        if "per_rank" in meters:  # each process its own sums, so their all-reduce counts each image once
            meter.load_state_dict(meters["per_rank"][dist.rank])
        elif dist.is_main:  # written by one process (or an older multi-process checkpoint: rank 0's)
            meter.load_state_dict(meters)
    else:  # a requeue onto another number of GPUs: continue at the saved step, not bit-exactly
        loader.continue_from(ckpt["loader"])
        if dist.is_main:
            meter.load_state_dict(_summed_meters(meters))  # the saved processes' sums, on one process
            log.warning(
                "the checkpoint was written by %d process(es), this run has %d: continuing at step %d with "
                "the data order and random state re-drawn (not bit-exact)",
                saved_world,
                dist.world_size,
                int(ckpt["step"]),
            )
    return state_from_checkpoint(ckpt)


def state_from_checkpoint(ckpt: dict[str, Any]) -> RunState:
    best = ckpt.get("best_top1")
    return RunState(
        step=int(ckpt["step"]),
        best_top1=None if best is None or best < 0 else float(best),  # older checkpoints: -1 for none
        best_step=ckpt.get("best_step"),
        steps_to_target=ckpt.get("steps_to_target"),
        evals=list(ckpt.get("evals") or []),
        train_images=int(ckpt.get("train_images", 0)),
        train_seconds=float(ckpt.get("train_seconds", 0)),
        wall_seconds=float(ckpt.get("wall_seconds", 0)),
    )


def open_logs(
    run: Run,
    config: dict[str, Any],
    resumed_from: bool,
    eager_why: str,
    finite_check,
    *,
    resources: ExitStack,
) -> None:
    """TensorBoard (its events after the resumed step hidden), the Figure 1 probes, the start-up lines.
    The writer and the probes are ``resources``' from the moment they exist."""
    state = run.state
    # purge_step = step + 1: events a killed segment wrote after the checkpoint are hidden, the resumed
    # step's own evaluation stays visible.
    run.writer = tblog.open_writer(str(run.dir), purge_step=state.step + 1 if resumed_from else None)
    if config.get("logger") == "wandb":  # the same scalars, the HParams and the config, to W&B too
        run.writer = wandb_log.mirror(run.writer, run.dir, config, tblog.run_hparams(config, run.info))
    resources.callback(run.writer.close)
    if not resumed_from:
        tblog.write_hparams(run.writer, tblog.run_hparams(config, run.info))
        tblog.write_compare_layout(run.writer)
    if hasattr(run.raw_model, "probe_modules") and run.trainer.probe_images > 0:
        run.probes = tblog.ActivationPercentiles(run.raw_model.probe_modules(), run.trainer.probe_images)
        resources.callback(run.probes.remove)
    info = run.info
    if resumed_from:
        log.info("resumed %s at step %d", run.dir, state.step)
    log.info(
        "run %s/seed%s: %s (%s, %s parameters) on %s, %d process(es), global batch %d, lr %.5g, "
        "L2 %.3g, decay x%.3g every %.0f steps, %d steps",
        info["name"],
        info["seed"],
        info["model"],
        info["experiment"],
        f"{info['parameters']:,}",
        run.dist.device,
        run.dist.world_size,
        info["global_batch"],
        info["lr"],
        info["weight_decay"],
        run.lr_schedule.decay_rate,  # the schedule as built (a library caller may pass a partial config)
        info["decay_interval_steps"],
        run.trainer.max_steps,
    )
    log.info(
        "data %s: %d train / %d val images, %d classes, %d px; decoded on %s; amp %s, channels_last %s%s, "
        "non-finite check %s",
        run.splits.name,
        len(run.splits.train),
        run.val_loader.num_images,
        run.splits.num_classes,
        run.splits.input_size,
        "the GPU" if run.splits.decode_on_device else "the CPU",
        run.amp_dtype,
        run.channels_last,
        # "compiled" is said after the first step, which compiles (bn_inception.engine.step)
        f", torch.compile: eager ({eager_why})" if eager_why else "",
        finite_check,
    )


# ------------------------------------------------------------------------------------------- loop


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
    return run.stop.requested(
        agree=lambda mine: bool(all_reduce_sum(torch.tensor([float(mine)], device=run.dist.device)) > 0)
    )


def log_training(run: Run) -> None:
    """``train/*`` and ``perf/*`` scalars since the last log line; the progress bar or line."""
    loss, top1, count = run.meter.since_log()
    if count == 0:
        return
    lr = run.optimizer.param_groups[0]["lr"]
    perf = run.progress.tick(run.state.step, loss, lr)
    if run.is_main:
        scalars = {"train/loss": loss, "train/top1": top1, "train/lr": lr, **perf}
        tblog.write_scalars(run.writer, scalars, run.state.step)


def evaluate_and_checkpoint(run: Run) -> bool:
    """Validate; record; write last.pt (and best.pt on an improvement), results.json, the log line.
    False, writing nothing, when any tensor of the model or the validation loss is not finite."""
    state = run.state
    with run.progress.paused():
        with run.probes.recording() if run.probes is not None else _nothing():
            metrics = run_validation(
                run.raw_model,
                run.val_loader,
                run.dist.device,
                run.amp_dtype,
                run.channels_last,
                mean=run.splits.mean,
                std=run.splits.std,
            )
        if not model_finite(run) or not math.isfinite(metrics["loss"]):
            return False
        record = {
            "step": state.step,
            "top1": metrics["top1"],
            "top5": metrics["top5"],
            "val_loss": metrics["loss"],
            "train_loss": run.meter.since_eval(run.dist),
        }
        state.evals.append(record)
        improved = state.best_top1 is None or metrics["top1"] > state.best_top1
        if improved:
            state.best_top1, state.best_step = metrics["top1"], state.step
        target = run.trainer.target_top1
        if target is not None and state.steps_to_target is None and metrics["top1"] >= target:
            state.steps_to_target = state.step
        ckpt = checkpoint_dict(run)
        if run.is_main:
            write_eval_scalars(run, metrics)
            save_checkpoints(run, ckpt, improved)
            write_results(run, "running")
            run.progress.evaluation(state, record)
    return True


def save_interrupted(run: Run) -> bool:
    """After a signal: write last.pt at this step and flush the logs. False if the model is not finite."""
    if not model_finite(run):
        return False
    ckpt = checkpoint_dict(run)
    if run.is_main:
        save_checkpoints(run, ckpt, improved=False)
        log.warning(
            "%s: stopped by %s at step %d; saved %s",
            run.info["name"],
            run.stop.received or "a signal to another process",
            run.state.step,
            run.dir / "checkpoints" / "last.pt",
        )
    return True


def finish(run: Run, status: str) -> dict[str, Any]:
    """Write the final results, close the logs, and report a divergence in one line."""
    run.progress.close()
    diverged_at = run.step.diverged_at if status == "diverged" else None
    if status == "diverged" and diverged_at is None:  # found at an evaluation or a save
        diverged_at = run.state.step
    if status == "diverged" and run.is_main:
        last = run.dir / "checkpoints" / "last.pt"
        kept = (
            f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written before it"
        )
        log.warning(
            "run %s diverged at step %d (non-finite loss, gradients, weights or BN statistics); %s",
            run.info["name"],
            diverged_at,
            kept,
        )
    results = write_results(run, status, diverged_at)
    if run.writer is not None:
        run.writer.flush()
    return results


def record_failure(run: Run) -> None:
    """A crash or an error: results.json says ``failed`` (where it can still be written); the last good
    checkpoint and the logs stay for a relaunch to continue from."""
    try:
        run.progress.close()
        write_results(run, "failed")
    except Exception:  # noqa: BLE001 - the original error is the one to report
        log.debug("could not record the failure", exc_info=True)


# -------------------------------------------------------------------------- checkpoints and results


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
    state = run.state
    state.train_images, state.train_seconds = run.progress.totals(state)
    return {
        "model": model_state_dict(run.raw_model),
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
            "input_size": run.splits.input_size,
            "mean": list(run.splits.mean),
            "std": list(run.splits.std),
            "classes": list(run.splits.classes),
            "in_chans": run.splits.in_chans,
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


def write_results(run: Run, status: str, diverged_at: int | None = None) -> dict[str, Any]:
    """results.json from the run's state (what the newest checkpoint holds, plus the status)."""
    state = run.state
    state.train_images, state.train_seconds = run.progress.totals(state)
    skipped = _skipped(run.loader, run.val_loader)
    results = results_dict(
        run.info,
        state,
        run.dir,
        status,
        diverged_at,
        skipped,
        wall_s=state.wall_seconds + time.perf_counter() - run.wall_start,
    )
    if run.is_main:
        try:
            write_json_atomic(run.dir / "results.json", results)
        except OSError as e:
            raise TrainingError(
                f"could not write {run.dir / 'results.json'}: {e.strerror or e}; free disk space or make the "
                f"directory writable, then relaunch (resume=auto continues from the last checkpoint)"
            ) from e
    return results


def results_dict(
    info,
    state: RunState,
    run_dir: Path,
    status: str,
    diverged_at: int | None,
    skipped: Any,
    wall_s: float | None = None,
) -> dict[str, Any]:
    """The ``results.json`` of a run (docs/design.md): its facts, its state, and the checkpoints that
    exist, so nothing names a file that is not there."""
    last = state.evals[-1] if state.evals else {}
    ckpts = run_dir / "checkpoints"
    files = {k: str(ckpts / f"{k}.pt") for k in ("last", "best") if (ckpts / f"{k}.pt").exists()}
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
        checkpoints=files,
        evals=state.evals,
        environment=info.get("environment"),
    )
    return results


def write_eval_scalars(run: Run, metrics: dict[str, float]) -> None:
    state = run.state
    scalars = {
        "val/top1": metrics["top1"],
        "val/top5": metrics["top5"],
        "val/loss": metrics["loss"],
        "hparam/best_top1": state.best_top1,
        "hparam/final_top1": metrics["top1"],
        "hparam/final_top5": metrics["top5"],
    }
    if state.steps_to_target is not None:  # "not reached" is an empty HParams cell, not a -1
        scalars["hparam/steps_to_target"] = float(state.steps_to_target)
    if run.probes is not None:
        scalars.update(run.probes.percentiles())
    tblog.write_scalars(run.writer, scalars, state.step)


# ----------------------------------------------------------------------------------------- helpers


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

    def since_eval(self, dist: DistInfo) -> float:
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


def _summed_meters(meters: dict[str, Any]) -> dict[str, list[float]]:
    """The training-loss sums of every process that wrote the checkpoint, added up for one process."""
    parts = meters.get("per_rank", [meters] if meters else [])
    if not parts:
        return {}
    return {
        k: [sum(column) for column in zip(*(p[k] for p in parts), strict=True)] for k in ("sums", "logged")
    }


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _skipped(loader, val_loader) -> int:
    val_bad = set(getattr(val_loader, "bad_files", []) or [])
    return int(getattr(loader, "skipped_images", 0)) + len(val_bad)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


__all__ = ["Run", "RunState", "TrainingError", "train", "train_from_config", "train_loop"]
