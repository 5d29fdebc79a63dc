"""The user's paths, end to end: train.py alone, in sweeps (Hydra's basic launcher and local_parallel) and
under torchrun, stopped by SIGTERM and continued; evaluate.py with 1 and 10 crops and a 2-model ensemble;
scripts/report.py and report_ladder.py on a sweep; scripts/prepare_imagenet.py on a devkit layout. Each is
a subprocess as a user types it, on a generated ImageNet-layout tree read by loader workers, and each must
end on its own within seconds of its last line with nothing left running (see conftest.py). Printed
commands are pasted into bash.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from bn_inception.engine.checkpoint import load_checkpoint
from bn_inception.engine.signals import EXIT_INTERRUPTED
from tests.e2e.conftest import TREE_RUN, Sampler, run, signal_after

pytestmark = pytest.mark.xdist_group("e2e")  # one xdist worker runs the whole tier (pyproject.toml)


WORKERS = 2  # data.workers in TREE_RUN: per loader, and a run has two (training and evaluation)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def printed(ended, label: str) -> list[str]:
    """The commands a run printed after ``label`` (``evaluate:``, ``continue:``, ``report:``)."""
    return [line.split(label, 1)[1].strip() for line in ended.lines() if line.lstrip().startswith(label)]


def paste(command: str, env: dict[str, str], **kwargs):
    return run(["bash", "-c", command], env, **kwargs)


def assert_finished_run_dir(run_dir: Path, steps: int) -> dict:
    res = results(run_dir)
    assert res["status"] == "completed" and res["steps"] == steps, res
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == steps
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["step"] == res["best_step"]
    assert (run_dir / "train.log").stat().st_size > 0 and list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert not (run_dir / ".lock").exists() and not list(run_dir.rglob("*.tmp"))
    return res


# ------------------------------------------------------------------------------------------ one run


@pytest.fixture(scope="module")
def single(tree, user_env, e2e_home):
    run_dir = e2e_home / "runs" / "single"
    ended = run(["python", "train.py", *TREE_RUN, f"data.root={tree}", f"hydra.run.dir={run_dir}"], user_env)
    return run_dir, ended


def test_a_run_on_an_image_tree_ends_right_after_its_summary(single):
    run_dir, ended = single
    ended.check(0)
    res = assert_finished_run_dir(run_dir, 8)
    assert [e["step"] for e in res["evals"]] == [4, 8] and res["skipped_images"] == 0
    assert ended.lines()[-1].lstrip().startswith("evaluate:")  # the summary is the last thing printed


def test_the_printed_evaluate_command_runs_when_pasted(single, user_env):
    _, ended = single
    (command,) = printed(ended, "evaluate:")
    evaluated = paste(command, user_env).check(0)
    assert "imagenet validation, 32 images" in evaluated.output
    (row,) = [line.split() for line in evaluated.lines() if line.split()[:1] == ["runs/single"]]
    assert row[1:4] == ["32", "1", "1"]  # resolution, crops, models


# ------------------------------------------------------------------------ sweeps, report, ensemble


@pytest.fixture(scope="module")
def sweep(tree, user_env, e2e_home):
    """Five jobs in one process (Hydra's basic launcher), the process tree sampled throughout."""
    sweep_dir = e2e_home / "sweeps" / "basic"
    sampler, starts = Sampler(), []

    def on_line(line, command):
        if "] - run bn_x5/seed" in line:  # a job's first line, before its loaders start workers
            starts.append(time.monotonic())

    args = ["python", "train.py", "-m", "seed=0,1,2,3,4", *TREE_RUN, f"data.root={tree}",
            "trainer.max_steps=4", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    ended = run(args, user_env, on_line=on_line, sampler=sampler)
    return sweep_dir, ended, sampler.samples, starts


def test_a_sweep_runs_its_jobs_and_each_jobs_workers_are_gone_before_the_next(sweep):
    sweep_dir, ended, samples, starts = sweep
    ended.check(0)
    runs = sorted(p.parent for p in sweep_dir.rglob("results.json"))
    assert [r.name for r in runs] == [f"seed{k}" for k in range(5)]
    for run_dir in runs:
        assert_finished_run_dir(run_dir, 4)
    assert (sweep_dir / "sweep_summary.md").is_file()
    # at most one job's loader workers at any moment: a job's workers are stopped before the next starts
    most = max(len(pids) - 1 for _, pids in samples)
    assert 0 < most <= 2 * WORKERS, f"{most} loader processes alive at once"
    # and the memory of the whole process tree stays flat from the second job to the last
    assert len(starts) == 5
    peaks = [
        max((sum(rss.values()) for t, rss in samples if start <= t < end), default=0.0)
        for start, end in zip(starts, [*starts[1:], float("inf")], strict=True)
    ]
    assert peaks[-1] < peaks[1] + 150, f"peak MiB per job: {[round(p) for p in peaks]}"


def test_the_printed_report_command_writes_table2_and_figure2(sweep, user_env):
    sweep_dir, ended, _, _ = sweep
    (command,) = printed(ended, "report:")
    paste(command, user_env).check(0)
    for name in ("table2.md", "table2.json", "figure2.png", "figure2.svg", "report.md"):
        assert (sweep_dir / name).stat().st_size > 0, name


def test_the_ladder_report_reads_a_sweep(sweep, user_env, tmp_path):
    sweep_dir, _, _, _ = sweep
    copy = tmp_path / "ladder"  # report_ladder.py writes report.md, as report.py does: its own folder
    shutil.copytree(sweep_dir, copy, ignore=shutil.ignore_patterns("*.pt"))
    ended = run(["python", "scripts/report_ladder.py", str(copy)], user_env).check(0)
    assert "# Learning-rate ladders" in ended.output and (copy / "report.md").is_file()


def test_an_ensemble_of_two_checkpoints_with_10_crops(sweep, user_env):
    sweep_dir, _, _, _ = sweep
    a, b = sorted(sweep_dir.rglob("seed[01]/checkpoints/best.pt"))
    evaluated = run(["python", "evaluate.py", f"checkpoints=[{a},{b}]", "crops=10"], user_env).check(0)
    table = [line.split() for line in evaluated.lines() if line.split()[1:2] == ["32"]]  # model, px, ...
    rows = {words[0]: words[2:4] for words in table}  # crops, models
    assert rows == {"seed0": ["10", "1"], "seed1": ["10", "1"], "ensemble": ["10", "2"]}
    assert "ensemble vs its best member" in evaluated.output


def test_a_parallel_sweep_runs_both_jobs_and_ends(tree, user_env, e2e_home):
    sweep_dir = e2e_home / "sweeps" / "parallel"
    args = ["python", "train.py", "-m", "hydra/launcher=local_parallel", "seed=0,1", *TREE_RUN,
            f"data.root={tree}", "trainer.max_steps=4", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    # joblib's loky executor stops its job processes at exit: 6-8 s on a busy 2-core machine, 33 s once at
    # a load average of 12 (of a command that ran 160 s)
    run(args, user_env).check(0)
    runs = sorted(p.parent for p in sweep_dir.rglob("results.json"))
    assert [r.name for r in runs] == ["seed0", "seed1"]
    for run_dir in runs:
        assert_finished_run_dir(run_dir, 4)


# ------------------------------------------------------------------------------- stop and continue


def test_sigterm_saves_and_exits_75_and_the_printed_command_continues_to_the_end(tree, user_env, e2e_home):
    run_dir = e2e_home / "runs" / "stopped"
    args = ["python", "train.py", *TREE_RUN, f"data.root={tree}", "trainer.max_steps=16",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    stopped = run(args, user_env, on_line=signal_after("| step 2/16 |")).check(EXIT_INTERRUPTED)
    res = results(run_dir)
    assert res["status"] == "interrupted" and 2 <= res["steps"] < 16
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == res["steps"]
    assert "Traceback" not in stopped.output
    (command,) = printed(stopped, "continue:")
    paste(command, user_env).check(0)
    res = assert_finished_run_dir(run_dir, 16)
    assert [e["step"] for e in res["evals"]] == [4, 8, 12, 16]


def test_torchrun_two_processes_stop_on_sigterm_and_continue_to_the_end(tree, user_env, e2e_home):
    run_dir = e2e_home / "runs" / "torchrun"
    args = ["torchrun", "--standalone", "--nproc_per_node=2", "train.py", *TREE_RUN, f"data.root={tree}",
            "trainer.max_steps=12", f"hydra.run.dir={run_dir}"]  # fmt: skip
    # SIGTERM to every process, as SLURM sends it: the training processes get it twice (torchrun passes its
    # own on), save and exit 75; torchrun reports its own SignalException (exit 1)
    run(args, user_env, on_line=signal_after("| step 2/12 |")).check(1)
    res = results(run_dir)
    assert res["status"] == "interrupted" and res["environment"]["world_size"] == 2
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == res["steps"] < 12
    run(args, user_env).check(0)
    res = assert_finished_run_dir(run_dir, 12)
    assert res["global_batch"] == 32  # 16 images per process
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["world_size"] == 2


# ------------------------------------------------------------------------------------- ImageNet's val


def test_prepare_imagenet_sorts_a_devkit_val_folder_that_evaluate_then_reads(single, user_env, e2e_home):
    from bn_inception.data.synthetic import DEVKIT_DIR, make_synthetic_imagenet

    flat = make_synthetic_imagenet(
        e2e_home / "devkit", num_classes=4, train_per_class=1, val_per_class=8, min_size=24, max_size=40,
        val_layout="flat", label_files=("devkit",),
    ).root  # fmt: skip
    truth = flat / DEVKIT_DIR / "ILSVRC2012_validation_ground_truth.txt"
    prepare = ["python", "scripts/prepare_imagenet.py", str(flat / "val"), "--labels", str(truth)]
    run(prepare, user_env).check(0)
    assert sorted(len(list(d.glob("*.JPEG"))) for d in (flat / "val").iterdir()) == [8, 8, 8, 8]
    run_dir, _ = single
    best = run_dir / "checkpoints" / "best.pt"
    evaluated = run(["python", "evaluate.py", f"checkpoints={best}", f"data.root={flat}"], user_env).check(0)
    assert "imagenet validation, 32 images" in evaluated.output
