"""Evaluate checkpoints alone and as an ensemble, with 1, 10 or 144 crops (Sec. 4.2.3).

    python evaluate.py checkpoints=runs/bn_x30/seed0                  # the data recorded in the checkpoint
    python evaluate.py checkpoints='[runs/a/checkpoints/best.pt,runs/b/checkpoints/best.pt]' crops=144 \
        data=imagenet data.root=/data/imagenet output=eval/ensemble.json
    python evaluate.py checkpoints=sweeps/2025-01-01_00-00-00 limit=1000   # every */checkpoints/best.pt

Options and their units: configs/evaluate.yaml (``python evaluate.py --help``). Known bad input (missing or
refused checkpoints, mismatched members, bad data) ends with one line ``error: ...`` on stderr and exit 1.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bn_inception.engine.checkpoint import CheckpointError
from bn_inception.engine.cli import one_line_errors, register_resolvers
from bn_inception.evaluation.errortable import (
    caption,
    format_markdown,
    format_text,
    write_json,
    write_tensorboard,
)
from bn_inception.evaluation.evaluator import EvaluationError
from bn_inception.evaluation.pipeline import EvalOptions, evaluate_checkpoints

log = logging.getLogger("evaluate")
register_resolvers()  # configs/data/*.yaml are shared with train.py and may use its resolvers


def markdown_path(output: str) -> Path:
    """``eval/table.json`` -> ``eval/table.md`` (never the JSON's own path)."""
    path = Path(output)
    return path.with_suffix(".md") if path.suffix != ".md" else path.with_name(path.name + ".md")


def run(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "checkpoints"):
        raise EvaluationError(
            "no checkpoints given; pass checkpoints=PATH (a .pt file, [a.pt,b.pt], a glob or a dir)"
        )
    specs = cfg.checkpoints
    checkpoints = [str(s) for s in specs] if OmegaConf.is_list(specs) else str(specs)
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    # `data=<name>` picks configs/data/<name>.yaml; without it the first checkpoint's recorded data config is
    # used, with any data.* given here (data.root=..., +data.key=...) on top.
    selected = data if HydraConfig.get().runtime.choices.get("data") not in (None, "null") else None
    options = EvalOptions(**{f.name: cfg[f.name] for f in dataclasses.fields(EvalOptions)})

    report = evaluate_checkpoints(checkpoints, options, data_kwargs=selected, data_overrides=data)
    report.meta["command"] = shlex.join(["python", "evaluate.py", *HydraConfig.get().overrides.task])

    title = caption(report.rows, report.meta["data"]["name"], options.bootstrap)
    skipped = report.meta["data"]["skipped_images"]
    if skipped:
        title += f"; {skipped} unreadable images skipped"
    print(format_text(report.rows, title), flush=True)
    markdown = format_markdown(report.rows, title, command=report.meta["command"])
    md_path = cfg.markdown or (markdown_path(cfg.output) if cfg.output else None)
    if cfg.output:
        write_json(cfg.output, report.rows, report.meta)
        log.info("wrote %s", cfg.output)
    if md_path:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(markdown)
        log.info("wrote %s", md_path)
    if cfg.tb_dir:
        write_tensorboard(cfg.tb_dir, report.rows, markdown)
        log.info("wrote TensorBoard events to %s", cfg.tb_dir)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
@one_line_errors((EvaluationError, CheckpointError), multirun=lambda: False)
def main(cfg: DictConfig) -> None:
    """Known bad input (EvaluationError, CheckpointError) ends as one line ``error: ...`` and exit 1, before
    any table is printed or written."""
    # Hydra's job logging is off (configs/evaluate.yaml): log lines go to stderr, the table to stdout.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[%(asctime)s][%(name)s] %(message)s")
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
    run(cfg)


if __name__ == "__main__":
    main()
