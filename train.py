"""Train one of the paper's networks: ``python train.py experiment=bn_x30 data=imagenet data.root=...``.

A thin Hydra entry point: compose the config (configs/train.yaml), turn it into plain arguments, call
``bn_inception.engine.trainer.train``. ``python train.py --help`` lists experiments and datasets.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bn_inception.engine.checkpoint import CheckpointError
from bn_inception.engine.cli import one_line_errors, process_rank, quiet_unless_main, register_resolvers
from bn_inception.engine.trainer import (
    OptimOptions,
    ScheduleOptions,
    TrainerOptions,
    TrainingError,
    options_from,
    train,
)

log = logging.getLogger("train")
register_resolvers()

OPTIM_KEYS = set(OptimOptions.__dataclass_fields__)


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@one_line_errors((TrainingError, CheckpointError, ValueError, FileNotFoundError, RuntimeError), _is_multirun)
def main(cfg: DictConfig) -> float | None:
    quiet_unless_main()
    hydra_cfg = HydraConfig.get()
    config = OmegaConf.to_container(cfg, resolve=True)
    model_kwargs = dict(config["model"])
    results = train(
        run_dir=hydra_cfg.runtime.output_dir,
        name=cfg.name,
        experiment=hydra_cfg.runtime.choices.get("experiment") or cfg.name,
        seed=cfg.seed,
        resume=cfg.resume,
        model_name=model_kwargs.pop("name"),
        model_kwargs=model_kwargs,
        data_kwargs=dict(config["data"]),
        # base_lr/lr_mult and the weight-decay pair are folded into lr/weight_decay by the config's ${mul:}
        optim=options_from(OptimOptions, {k: v for k, v in config["optim"].items() if k in OPTIM_KEYS}),
        schedule=options_from(ScheduleOptions, config["schedule"]),
        trainer=options_from(TrainerOptions, config["trainer"]),
        config=config,
    )
    if process_rank() == 0:
        print_summary(results, hydra_cfg.runtime.output_dir, tensorboard_logdir(cfg, hydra_cfg))
    return results.get("best_top1")  # a sweeper's objective


def tensorboard_logdir(cfg: DictConfig, hydra_cfg) -> str:
    """The folder whose runs TensorBoard should list: the sweep, or the parent of ``<name>/seed<k>``."""
    if _is_multirun():
        return hydra_cfg.sweep.dir
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if run_dir.name == f"seed{cfg.seed}" and run_dir.parent.name == cfg.name:
        return str(run_dir.parent.parent)
    return str(run_dir)


def print_summary(results: dict, run_dir: str, logdir: str) -> None:
    best = results.get("best_top1")
    status = results["status"]
    if status == "diverged":
        headline = f"diverged at step {results['diverged_at_step']}"
    else:
        headline = f"{status} {results['steps']} steps"
    lines = [
        f"{results['name']}: {headline}; best val top-1 "
        + (f"{best:.2f}% at step {results['best_step']}" if best is not None else "n/a")
        + (
            f", final top-1/top-5 {results['final_top1']:.2f}/{results['final_top5']:.2f}%"
            if results.get("final_top1") is not None
            else ""
        ),
        f"  run dir:     {run_dir}  (results.json, train.log)",
        f"  checkpoints: {run_dir}/checkpoints/best.pt, last.pt",
        f"  TensorBoard: tensorboard --logdir {logdir}",
        f"  evaluate:    python evaluate.py checkpoints={run_dir}/checkpoints/best.pt",
    ]
    log.info("\n".join(lines))


if __name__ == "__main__":
    main()
