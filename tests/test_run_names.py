"""A single run is named by what differs, exactly as a sweep job: another value is another run directory,
the same command resumes its own (issue 24)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bn_inception import cli


def single_and_sweep_dirs(*overrides: str) -> tuple[Path, Path]:
    (single,) = cli.compose_jobs("train", list(overrides), False, cli.CONFIG_DIR)
    (swept,) = cli.compose_jobs("train", [*overrides, "hydra.sweep.dir=S"], True, cli.CONFIG_DIR)
    return cli.job_dir(single, False), cli.job_dir(swept, True)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ((), "bn_x5/seed0"),
        (("experiment=bn_x30", "seed=2"), "bn_x30/seed2"),
        (("optim.lr_mult=10", "model.norm=ghost"), "bn_x5/model.norm:ghost+optim.lr_mult:10/seed0"),
        (("data=imagenet", "data.root=/data/imagenet"), "bn_x5/data:imagenet/seed0"),
        # run length, paths, logging and how (not what) it computes: the same run, resumed
        (("trainer.max_steps=40", "logger=wandb", "trainer.compile=false"), "bn_x5/seed0"),
    ],
)
def test_a_single_run_is_named_as_its_sweep_job(overrides, expected):
    single, swept = single_and_sweep_dirs(*overrides)
    assert single == Path("runs", expected) and swept == Path("S", expected)


def test_an_explicit_run_dir_is_kept():
    (cfg,) = cli.compose_jobs("train", ["optim.lr_mult=10", "hydra.run.dir=/x/mine"], False, cli.CONFIG_DIR)
    assert cli.job_dir(cfg, False) == Path("/x/mine")
