"""A training run: ``train(cfg)`` -> :func:`build` -> ``Run`` -> ``train_loop`` -> ``finish`` (in loop.py).

Steps (optimizer updates) are the unit everywhere, as in the paper's Figure 2. What a run guarantees
(docs/design.md): one process owns its directory (the lock of ``files.py``); a signal ends it after the
current step with ``last.pt`` and ``results.json`` written (``engine/signals.py``); ``results.json``,
``last.pt`` and ``best.pt`` agree after a kill at any instant (``results.json`` is a function of the
checkpoint's content, and ``engine/checkpoint.py`` repairs the pair at start); a non-finite loss, gradient,
parameter, BN statistic or validation loss is divergence, and no checkpoint holding one is ever written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import bn_inception  # noqa: F401  (registers the models with timm)
from bn_inception.config import OptimConfig, TrainConfig, effective_lr, effective_weight_decay
from bn_inception.data import DataSplits, build_datasets, build_eval_loader, build_train_loader
from bn_inception.engine import tblog, wandb_log
from bn_inception.engine.checkpoint import (
    CheckpointError,
    config_differences,
    config_digest,
    load_checkpoint,
    reconcile_checkpoints,
    restore_rng_state,
)
from bn_inception.engine.distributed import DistInfo, broadcast_object, init_distributed, shutdown_distributed
from bn_inception.engine.loop import Meter, Run, RunState, TrainingError, finish, train_loop, write_results
from bn_inception.engine.precision import (
    check_deterministic,
    environment,
    resolve_amp,
    resolve_channels_last,
    resolve_finite_check,
)
from bn_inception.engine.progress import Progress
from bn_inception.engine.schedule import build_lr_schedule, decay_interval_steps
from bn_inception.engine.signals import GracefulStop
from bn_inception.engine.step import NonFiniteGuard, TrainStep, compile_plan
from bn_inception.files import LockFile, describe, write_atomically

log = logging.getLogger(__name__)

#: Inputs at least this large get the 224-px network; smaller ones (28-64 px) its small-input member.
LARGE_INPUT_MIN = 96
LOCK_NAME = ".lock"  # the run directory's lock file (bn_inception/files.py's LockFile)


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    experiment: str | None = None,
    run_files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Train one run in ``run_dir`` (``cfg`` checked by ``config.train_config``); returns the ``results.json``
    dict, also written there. ``status``: ``completed``, ``diverged`` (a result, not an exception: the run
    stopped at its first non-finite step and keeps its last good checkpoint) or ``interrupted`` (a signal;
    ``resume=auto`` continues it). ``run_files`` (relative path -> text: Hydra's ``.hydra/``) are written
    once the launch is accepted, so a refused one leaves the run's record as it was.
    """
    run_dir, config = Path(run_dir), dataclasses.asdict(cfg)
    dist, stop = init_distributed(cfg.trainer.device), GracefulStop()
    try:
        check_deterministic(cfg.trainer.deterministic, bool(getattr(cfg.model, "lrn", False)), dist.device)
        # The one place a run's resources are released, in reverse order, on every way out (completed,
        # diverged, failed, a signal, Ctrl-C twice, an error during set-up): the loaders' worker processes,
        # the TensorBoard writer and the probes (`resources`, each from the moment it exists), train.log's
        # handler and the run-directory lock with its heartbeat (owned_run_dir), the signal handlers, then
        # the process group. tests/e2e takes the ways out users meet and checks that nothing is left running.
        with stop, owned_run_dir(run_dir, dist), ExitStack() as resources:
            ckpt = load_resume_checkpoint(cfg.resume, run_dir, config, dist)
            done = results_if_finished(run_dir, ckpt, config, cfg.trainer.max_steps, dist)
            if done is not None:
                return done
            if dist.is_main:
                for relative, text in (run_files or {}).items():
                    write_atomically(run_dir / relative, text)
            run = build(cfg, config, run_dir, dist, stop, ckpt, experiment or cfg.name, resources)
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


def record_failure(run: Run) -> None:
    """A crash or an error: results.json says so; the last good checkpoint and logs stay. torch's SIGCHLD
    handler raises in this thread whenever a child exits while a loader worker is known dead (the error
    being recorded, often), so it waits until the record is written."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGCHLD, signal.SIG_DFL) if main else None
    try:
        run.progress.close()
        write_results(run, "failed")
    except Exception:  # noqa: BLE001 - the original error is the one to report
        log.debug("could not record the failure", exc_info=True)
    finally:
        if main:
            signal.signal(signal.SIGCHLD, handler)


@contextmanager
def owned_run_dir(run_dir: Path, dist: DistInfo) -> Iterator[None]:
    """Process 0 locks the run directory (every process learns whether it could), removes the temporary
    files of saves a kill interrupted (``.<name>.*.tmp``, stray lock temps) and writes ``train.log``."""
    lock, refusal = None, None
    if dist.is_main:
        try:
            lock = lock_run_dir(run_dir)
        except TrainingError as e:
            refusal = str(e)
        except OSError as e:
            refusal = f"cannot write to {run_dir}: {e.strerror or e}"
    if refusal := broadcast_object(refusal):
        raise TrainingError(refusal)
    if lock is None:  # not process 0
        yield
        return
    with lock:
        for path in [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp"),
                     *run_dir.glob(f"{LOCK_NAME}.*")]:  # fmt: skip
            with contextlib.suppress(OSError):
                path.unlink()
                log.info("removed %s (a save interrupted by a kill)", path)
        handler = logging.FileHandler(run_dir / "train.log", mode="a")
        console = next((h for h in logging.getLogger().handlers if h.formatter is not None), None)
        fmt = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
        handler.setFormatter(console.formatter if console else logging.Formatter(fmt))
        logging.getLogger().addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def lock_run_dir(run_dir: Path) -> LockFile:
    """Make this process the run directory's only writer (the lock of ``bn_inception/files.py``), or raise
    :class:`TrainingError` naming the live holder, without changing anything in the directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = LockFile(run_dir / LOCK_NAME)
    if (holder := lock.try_acquire()) is not None:
        raise TrainingError(
            f"run directory {run_dir} is in use by {describe(holder)}; wait for that run to end or stop it, "
            f"or use another directory (hydra.run.dir=... or another seed)"
        )
    return lock


def load_resume_checkpoint(
    resume: str, run_dir: Path, config: dict[str, Any], dist: DistInfo
) -> dict[str, Any] | None:
    """The checkpoint to continue from (see ``resume`` in bn_inception/config.py), checked against this
    config, with this run's ``best.pt`` repaired to agree with it."""
    last, best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    new_dir = "hydra.run.dir=<new dir>"
    if resume == "never" and last.exists():
        raise TrainingError(
            f"{run_dir} already holds a run ({last}); pass resume=auto to continue it, "
            f"or {new_dir} (or another seed) to start a new one"
        )
    if resume == "auto" and not last.exists() and (best.exists() or best.is_symlink()):  # last.pt removed
        raise TrainingError(
            f"{run_dir} holds {best} but no last.pt; continue from it with resume={best}, or start a new run "
            f"with {new_dir} (starting here would overwrite it)"
        )
    if resume == "never" or (resume == "auto" and not last.exists()):
        return None
    path = last if resume == "auto" else Path(resume)
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
            f" resume with the same settings, or start a new run with {new_dir}"
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
    try:
        previous = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        previous = {}
    diverged_at = previous.get("diverged_at_step") if previous.get("status") == "diverged" else None
    if diverged_at is not None and (ckpt is None or ckpt["step"] < diverged_at):
        if previous.get("config_digest") != config_digest(config):
            raise TrainingError(
                f"{run_dir} holds a diverged run with another config; start the new one with "
                f"hydra.run.dir=<new dir> (or another seed)"
            )
        if dist.is_main:
            log.info("%s: diverged at step %s; nothing to resume", run_dir, diverged_at)
        return {**previous, "unchanged": True}
    if ckpt is None or "info" not in ckpt:
        return None
    state = RunState.of(ckpt)
    if state.step < max_steps or not state.evals:
        return None
    results = previous
    if not (previous.get("status") == "completed" and previous.get("steps") == state.step):
        # a kill came between the last checkpoint and results.json
        results = write_results(None, "completed", info=ckpt["info"], state=state, run_dir=run_dir, dist=dist)
    if dist.is_main:
        log.info("%s: finished (%d steps, best top-1 %.2f%% at step %d); nothing to do", run_dir, state.step,
                 state.best_top1, state.best_step)  # fmt: skip
    return {**results, "unchanged": True}  # not in the file: tells train.py to print nothing more


def build(
    cfg: TrainConfig,
    config: dict[str, Any],
    run_dir: Path,
    dist: DistInfo,
    stop: GracefulStop,
    ckpt: dict[str, Any] | None,
    experiment: str,
    resources: ExitStack,
) -> Run:
    """Data, model, optimiser and schedule, the saved state, logging: everything the loop needs (``config``:
    ``cfg`` as a dict). What must be released is handed to ``resources`` the moment it exists."""
    trainer, device = cfg.trainer, dist.device
    if trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not trainer.deterministic
    amp_dtype = resolve_amp(trainer.amp, device)
    channels_last = resolve_channels_last(trainer.channels_last, device)

    # data: uint8 batches (float on the GPU with data.decode=gpu); to_model_input makes the model's input
    splits = build_datasets(**dataclasses.asdict(cfg.data), seed=cfg.seed, device=device)
    global_batch = trainer.batch_size * dist.world_size
    shard = dict(rank=dist.rank, world_size=dist.world_size, pin_memory=device.type == "cuda")
    loader = build_train_loader(splits.train, batch_size=trainer.batch_size, seed=cfg.seed, **shard,
                                **splits.loader)  # fmt: skip
    resources.callback(loader.close)
    val_loader = build_eval_loader(splits.val, batch_size=trainer.eval_batch_size, limit=trainer.eval_limit,
                                   workers=splits.loader["workers"],
                                   max_bad_fraction=splits.loader["max_bad_fraction"], **shard)  # fmt: skip
    resources.callback(val_loader.close)

    # model: the same initial weights on every process (seeded before building)
    torch.manual_seed(cfg.seed)
    arch, model_kwargs = model_arguments(cfg.model, splits)
    raw_model = timm.create_model(arch, **model_kwargs)
    if trainer.sync_bn and model_kwargs.get("norm", "batch") != "batch":
        raise TrainingError("trainer.sync_bn=true needs model.norm=batch (paper/ghost BN keep per-replica "
                            "statistics)")  # fmt: skip
    if trainer.sync_bn and dist.distributed:
        raw_model = timm.layers.convert_sync_batchnorm(raw_model)
    raw_model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    timm.utils.random_seed(cfg.seed, dist.rank)  # dropout differs per process, as on separate replicas

    # optimiser and schedule (Sec. 4.2): SGD with momentum, the lr a pure function of the step
    optim, schedule = cfg.optim, cfg.schedule
    lr0 = effective_lr(optim, global_batch)
    finite_check = resolve_finite_check(trainer.finite_check, device)
    optimizer = build_optimizer(raw_model, optim, lr0, device)
    interval = decay_interval_steps(schedule.decay_epochs, schedule.decay_steps, schedule.speedup,
                                    len(splits.train), global_batch)  # fmt: skip
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    meter, state = Meter(device), RunState()
    if ckpt is not None:
        state = restore(ckpt, raw_model, optimizer, scaler, loader, meter, dist)

    model = raw_model
    if dist.distributed:
        model = DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    compile_mode, eager_why = compile_plan(trainer.compile, device, trainer.sync_bn and dist.distributed)
    guard = NonFiniteGuard(finite_check, trainer.finite_check_every, optimizer, scaler, device)
    # under DDP a failed compile stops the run (bn_inception.engine.step)
    step = TrainStep(model, optimizer, scaler, device, amp_dtype, compile_mode, guard=guard,
                     fallback=not dist.distributed)  # fmt: skip
    info = {
        "name": cfg.name,
        "experiment": experiment,
        "seed": cfg.seed,
        "model": arch,
        "parameters": sum(p.numel() for p in raw_model.parameters()),
        "config_digest": config_digest(config),
        "target_top1": trainer.target_top1,
        "global_batch": global_batch,
        "lr": lr0,
        "weight_decay": effective_weight_decay(optim),
        "decay_interval_steps": interval,
        "environment": environment(device, dist.world_size),
    }
    run = Run(
        dir=run_dir,
        dist=dist,
        raw_model=raw_model,
        optimizer=optimizer,
        scaler=scaler,
        lr_schedule=build_lr_schedule(optimizer, interval, schedule.decay_rate),
        step=step,
        loader=loader,
        val_loader=val_loader,
        splits=splits,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        trainer=trainer,
        state=state,
        meter=meter,
        info=info,
        model_kwargs=model_kwargs,
        config=config,
        stop=stop,
        progress=Progress(f"{cfg.name}/seed{cfg.seed}", trainer, dist.is_main, state, global_batch),
    )
    if dist.is_main:
        open_logs(run, resumed=ckpt is not None, resources=resources)
        compiled = f", torch.compile: eager ({eager_why})" if eager_why else ""  # "compiled": after step 1
        log.info(
            "data %s: %d train / %d val images, %d classes, %d px; decoded on %s; amp %s, channels_last "
            "%s%s, non-finite check %s", splits.name, len(splits.train), val_loader.num_images,
            splits.num_classes, splits.input_size, "the GPU" if splits.decode_on_device else "the CPU",
            amp_dtype, channels_last, compiled, finite_check,
        )  # fmt: skip
    return run


def model_arguments(model: Any, splits: DataSplits) -> tuple[str, dict]:
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


def build_optimizer(
    model: nn.Module, opts: OptimConfig, lr: float, device: torch.device, fused: bool | None = None
) -> torch.optim.SGD:
    """SGD with momentum; L2 on every parameter, or (``decay_bn_and_bias=false``) not on 1-d ones. The fused
    kernel (``fused`` None: on CUDA and CPU) is one launch for all parameters and can skip an update on the
    device (``finite_check=device``); on a CPU it halves the update of the per-tensor loop (0.65 vs 1.26 ms
    for bn_inception_small's 209 tensors, docs/benchmarks.md)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": params}]
    if not opts.decay_bn_and_bias:
        groups = [{"params": [p for p in params if p.ndim > 1]},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]  # fmt: skip
    fused = (device.type in ("cuda", "cpu") or None) if fused is None else fused
    return torch.optim.SGD(groups, lr=lr, momentum=opts.momentum, weight_decay=effective_weight_decay(opts),
                           fused=fused)  # fmt: skip


def restore(ckpt, model, optimizer, scaler, loader, meter: Meter, dist: DistInfo) -> RunState:
    """Load a checkpoint's weights, optimiser, sampler position, meter and every RNG; the run's state."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"the checkpoint does not fit this model/optimizer: {first}") from e
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    saved_world, meters = ckpt.get("world_size", 1), ckpt.get("meter") or {}
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
        if dist.is_main:  # the saved processes' training-loss sums, added up on one process
            parts = meters.get("per_rank", [meters] if meters else [])
            meter.load_state_dict({k: [sum(c) for c in zip(*(p[k] for p in parts), strict=True)]
                                   for k in ("sums", "logged")} if parts else {})  # fmt: skip
            log.warning(
                "the checkpoint was written by %d process(es), this run has %d: continuing at step %d with "
                "the data order and random state re-drawn (not bit-exact)",
                saved_world, dist.world_size, int(ckpt["step"]),
            )  # fmt: skip
    return RunState.of(ckpt)


def open_logs(run: Run, resumed: bool, resources: ExitStack) -> None:
    """TensorBoard (its events after the resumed step hidden), the Figure 1 probes, the start-up line."""
    state, info = run.state, run.info
    # purge_step = step + 1: events a killed segment wrote after the checkpoint are hidden, the resumed
    # step's own evaluation stays visible. flush_secs=10: the default 120 s could lose two minutes on SIGKILL.
    purge_step = state.step + 1 if resumed else None
    run.writer = tblog.SummaryWriter(str(run.dir), purge_step=purge_step, flush_secs=10)
    if run.config.get("logger") == "wandb":  # the same scalars, the HParams and the config, to W&B too
        run.writer = wandb_log.mirror(run.writer, run.dir, run.config, tblog.run_hparams(run.config, info))
    resources.callback(run.writer.close)
    if not resumed:
        tblog.write_hparams(run.writer, tblog.run_hparams(run.config, info))
        tblog.write_compare_layout(run.writer)
    if hasattr(run.raw_model, "probe_modules") and run.trainer.probe_images > 0:
        run.probes = tblog.ActivationPercentiles(run.raw_model.probe_modules(), run.trainer.probe_images)
        resources.callback(run.probes.remove)
    if resumed:
        log.info("resumed %s at step %d", run.dir, state.step)
    log.info(
        "run %s/seed%s: %s (%s, %s parameters) on %s, %d process(es), global batch %d, lr %.5g, "
        "L2 %.3g, decay x%.3g every %.0f steps, %d steps",
        info["name"], info["seed"], info["model"], info["experiment"], f"{info['parameters']:,}",
        run.dist.device, run.dist.world_size, info["global_batch"], info["lr"], info["weight_decay"],
        run.lr_schedule.decay_rate, info["decay_interval_steps"], run.trainer.max_steps,
    )  # fmt: skip


__all__ = ["Run", "RunState", "TrainingError", "build", "train", "train_loop"]
