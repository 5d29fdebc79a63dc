"""Evaluate checkpoints alone and as an ensemble, with 1, 10 or 144 crops (Sec. 4.2.3).

    python evaluate.py checkpoints=runs/bn_x30/seed0                  # the data recorded in the checkpoint
    python evaluate.py checkpoints='[runs/a/checkpoints/best.pt,runs/b/checkpoints/best.pt]' crops=144 \
        data=imagenet data.root=/data/imagenet output=eval/ensemble.json
    python evaluate.py checkpoints=sweeps/2025-01-01_00-00-00 images=1000   # every */checkpoints/best.pt
    python evaluate.py checkpoints=sweeps/x crops=144 images=5000:10000       # test images 5000..9999 only

Options and their units: ``bn_inception/config.py`` (EvalConfig; ``python evaluate.py --help``). A bad
option value ends with one line and exit 2 before anything is loaded; known bad input (missing or refused
checkpoints, mismatched members, bad data, an output path that is not ours to overwrite) with one line
``error: ...`` and exit 1, before any table is printed or written.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bn_inception import cli
from bn_inception.config import EvalConfig, register_configs

register_configs()


def run(cfg: DictConfig) -> None:
    from bn_inception.evaluation.checkpoints import find_checkpoints
    from bn_inception.evaluation.evaluator import evaluate_checkpoints
    from bn_inception.evaluation.table import check_outputs, write_report

    values = OmegaConf.to_container(cfg, resolve=True)
    options = EvalConfig(**{f.name: values[f.name] for f in dataclasses.fields(EvalConfig)})
    check_outputs(options, find_checkpoints(options.checkpoints))
    # `data=<name>` picks configs/data/<name>.yaml; without it the first checkpoint's recorded data config is
    # used, with any data.* given here (data.root=..., +data.key=...) on top.
    data = options.data or {}
    selected = data if HydraConfig.get().runtime.choices.get("data") not in (None, "null") else None
    report = evaluate_checkpoints(options.checkpoints, options, data_kwargs=selected, data_overrides=data)
    write_report(report, options, shlex.join(["python", "evaluate.py", *HydraConfig.get().overrides.task]))


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    import torch

    from bn_inception.engine.checkpoint import CheckpointError
    from bn_inception.evaluation.checkpoints import EvaluationError

    # Hydra's job logging is off (configs/evaluate.yaml): log lines go to stderr, the table to stdout.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[%(asctime)s][%(name)s] %(message)s")
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
    with cli.one_line_errors((EvaluationError, CheckpointError), multirun=False):
        run(cfg)


def command() -> None:
    """``bn-evaluate`` and ``python evaluate.py`` (the checkout's shim)."""
    cli.preflight("evaluate")  # every option checked before anything loads: one line, exit 2
    main()
