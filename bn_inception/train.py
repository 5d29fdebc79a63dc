"""Train one of the paper's networks: ``python train.py experiment=bn_x30 data=imagenet data.root=...``.

A thin Hydra entry point. Before Hydra creates anything, every job's config is composed and checked against
the schema (``bn_inception/config.py``); the job then calls ``train`` with the typed config.
torch is imported only by the job, so ``--help`` and config errors answer at once.

Exit status: 0 the run completed (or diverged: a result, recorded in results.json); 1 an error, reported
in one line; 2 a bad config value, in one line, before anything ran; 75 stopped by SIGTERM, SIGINT, SIGUSR1
or SIGUSR2 after saving (relaunch the same command to continue); 130 a second Ctrl-C.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bn_inception import cli
from bn_inception.config import register_configs, train_config

log = logging.getLogger("train")
register_configs()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from bn_inception.engine.checkpoint import CheckpointError
    from bn_inception.engine.signals import EXIT_INTERRUPTED
    from bn_inception.engine.trainer import TrainingError, train

    cli.quiet_unless_main()
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    known = (TrainingError, CheckpointError, ValueError, OSError, RuntimeError)  # OSError: names its file
    with cli.quick_exit(multirun):
        with cli.one_line_errors(known, multirun):
            results = train(
                train_config(OmegaConf.to_container(cfg, resolve=True)),
                run_dir,
                experiment=hydra_cfg.runtime.choices.get("experiment") or cfg.name,
                run_files=hydra_files(cfg),
            )
        if cli.process_rank() == 0 and not results.get("unchanged"):  # a finished run said so in one line
            log.info("%s", summary(results, run_dir, tensorboard_logdir(cfg, run_dir, multirun)))
        if results["status"] == "interrupted":
            sys.exit(EXIT_INTERRUPTED)  # also ends a sweep: the scheduler is stopping this job
    return results.get("best_top1")  # a sweeper's objective


def hydra_files(cfg: DictConfig) -> dict[str, str]:
    """Hydra's record of the job (``.hydra/``), written by the trainer once it has accepted the launch (a
    refused one must not overwrite the record of the run in that directory: the reports read it)."""
    hydra_cfg = HydraConfig.get()
    return {
        ".hydra/config.yaml": OmegaConf.to_yaml(cfg),
        ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task),
        ".hydra/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
    }


def tensorboard_logdir(cfg: DictConfig, run_dir: Path, multirun: bool) -> Path:
    """The folder whose runs TensorBoard should list: the sweep, or the parent of ``<name>/seed<k>`` (or of
    ``<name>/<what differs>/seed<k>``)."""
    if multirun:
        return Path(HydraConfig.get().sweep.dir)
    for named in (run_dir.parent, run_dir.parent.parent):
        if run_dir.name == f"seed{cfg.seed}" and named.name == cfg.name:
            return named.parent
    return run_dir


def summary(results: dict, run_dir: Path, logdir: Path) -> str:
    """The lines a user needs after a run: what happened, where everything is, what to run next."""
    status, best, ckpts = results["status"], results.get("best_top1"), results.get("checkpoints", {})
    if status == "diverged":
        headline = f"diverged at step {results['diverged_at_step']}"
    elif status == "interrupted":
        headline = f"interrupted at step {results['steps']} (checkpoint saved)"
    else:
        headline = f"{status} {results['steps']} steps"
    if best is not None:
        headline += f"; best val top-1 {best:.2f}% at step {results['best_step']}"
        if results.get("final_top1") is not None:
            headline += f", final top-1/top-5 {results['final_top1']:.2f}/{results['final_top5']:.2f}%"
    lines = [
        f"{results['name']}/seed{results['seed']}: {headline}",
        f"  run dir:     {run_dir}  (results.json, train.log)",
        "  checkpoints: " + (", ".join(ckpts.values()) if ckpts else "none (no evaluation was reached)"),
        f"  TensorBoard: tensorboard --logdir {shlex.quote(str(logdir))}",
    ]
    if "best" in ckpts:
        lines.append(
            "  evaluate:    " + cli.command("evaluate.py", cli.override("checkpoints", ckpts["best"]))
        )
    if status == "interrupted":
        hydra_cfg = HydraConfig.get()
        sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
        again = cli.continue_command(hydra_cfg.overrides.task, hydra_cfg.overrides.hydra, run_dir, sweep_dir)
        lines.append("  continue:    " + again)
    return "\n".join(lines)


def command() -> None:
    """``bn-train`` and ``python train.py`` (the checkout's shim)."""
    cli.preflight("train")  # every job's config checked before Hydra writes anything: one line, exit 2
    main()
