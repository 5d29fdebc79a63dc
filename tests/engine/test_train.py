"""train.py end to end, as a user runs it: tiny runs on Fashion-MNIST (28 px, the small model) on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bn_inception.engine.checkpoint import load_checkpoint
from tests.engine.conftest import QUICK, needs_fashion

pytestmark = needs_fashion


def run_train(repo, python, env, run_dir, *overrides, check=True, timeout=240):
    cmd = [python, str(repo / "train.py"), f"hydra.run.dir={run_dir}", *QUICK, *overrides]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, repo, python):
    env = dict(os.environ, PYTHONPATH=str(repo), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    run_dir = tmp_path_factory.mktemp("runs") / "bn_x5" / "seed0"
    proc = run_train(repo, python, env, run_dir, "experiment=bn_x5", "trainer.target_top1=20")
    return run_dir, proc


def test_run_writes_results_checkpoints_logs_and_a_summary(finished_run):
    run_dir, proc = finished_run
    res = results(run_dir)
    for key in (
        "status",
        "steps",
        "best_top1",
        "final_top1",
        "final_top5",
        "final_train_loss",
        "steps_to_target",
        "img_per_s",
        "wall_s",
        "skipped_images",
        "config_digest",
    ):
        assert key in res, key
    assert res["status"] == "completed" and res["steps"] == 12 and res["experiment"] == "bn_x5"
    assert [e["step"] for e in res["evals"]] == [4, 8, 12]
    assert res["best_top1"] == max(e["top1"] for e in res["evals"])
    assert 0 <= res["final_top1"] <= res["final_top5"] <= 100
    assert res["img_per_s"] > 0 and res["skipped_images"] == 0
    assert (run_dir / "train.log").stat().st_size > 0
    assert (
        "best val top-1" in proc.stdout + proc.stderr and "tensorboard --logdir" in proc.stdout + proc.stderr
    )
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert last["step"] == 12 and best["step"] == res["best_step"]
    assert last["config"]["name"] == "bn_x5" and last["model_name"] == "bn_inception_small"
    assert last["data"]["classes"] and last["data"]["input_size"] == 28


def test_tensorboard_tags_and_hparams(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = finished_run
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/top1",
        "train/lr",
        "val/top1",
        "val/top5",
        "perf/img_per_s",
        "perf/data_wait_frac",
        "hparam/best_top1",
    ):
        assert tag in tags, tag
    assert any(t.startswith("act/") and t.endswith("/p85") for t in tags)
    val = [(e.step, e.value) for e in acc.Scalars("val/top1")]
    assert val == pytest.approx([(e["step"], e["top1"]) for e in results(run_dir)["evals"]])
    lr = {e.step: e.value for e in acc.Scalars("train/lr")}
    assert lr[2] == pytest.approx(0.0075)  # BN-x5: 5 x 0.0015


def test_tensorboard_server_serves_the_scalars(finished_run, tmp_path):
    """Start a real tensorboard on a free loopback port and read val/top1 back over its HTTP API."""
    import socket
    import urllib.request

    run_dir, _ = finished_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            "tensorboard",
            "--logdir",
            str(run_dir.parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=seed0&tag=val/top1"
        deadline, body = time.time() + 60, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = json.loads(r.read())
                    if body:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        assert body, "tensorboard did not serve val/top1"
        assert [(row[1], row[2]) for row in body] == pytest.approx(
            [(e["step"], e["top1"]) for e in results(run_dir)["evals"]]
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_rerun_of_a_finished_run_does_nothing_and_other_config_is_refused(
    finished_run, repo, python, cli_env
):
    run_dir, _ = finished_run
    before = results(run_dir)
    proc = run_train(repo, python, cli_env, run_dir, "experiment=bn_x5", "trainer.target_top1=20")
    assert "nothing to do" in proc.stdout + proc.stderr
    assert results(run_dir)["evals"] == before["evals"]
    proc = run_train(repo, python, cli_env, run_dir, "experiment=bn_x5", "optim.lr=0.1", check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error:") and "optim.lr" in err and "hydra.run.dir" in err
    proc = run_train(repo, python, cli_env, run_dir, "experiment=bn_x5", "resume=never", check=False)
    assert proc.returncode == 1 and "resume=auto" in proc.stderr


def test_a_damaged_run_directory_is_one_line_naming_the_file(finished_run, repo, python, cli_env, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run[0], run_dir)
    (run_dir / "train.log").unlink()
    (run_dir / "train.log").mkdir()  # a folder where the log belongs (an rsync gone wrong)
    proc = run_train(repo, python, cli_env, run_dir, "experiment=bn_x5", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line == f"error: [Errno 21] Is a directory: '{run_dir / 'train.log'}'"


def test_divergence_is_a_result_and_keeps_the_last_good_checkpoint(repo, python, cli_env, tmp_path):
    run_dir = tmp_path / "diverge"
    # Inception (no BN) at 1e4 x its learning rate: the parameters reach machine infinity (Sec. 4.2.2).
    proc = run_train(
        repo,
        python,
        cli_env,
        run_dir,
        "experiment=inception",
        "optim.lr=15",
        "trainer.eval_every=1",
        "trainer.max_steps=50",
    )
    res = results(run_dir)
    assert proc.returncode == 0
    assert res["status"] == "diverged" and 1 <= res["diverged_at_step"] <= 50
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["step"] < res["diverged_at_step"]
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    # resuming a diverged run does not train it again
    proc = run_train(
        repo,
        python,
        cli_env,
        run_dir,
        "experiment=inception",
        "optim.lr=15",
        "trainer.eval_every=1",
        "trainer.max_steps=50",
    )
    assert "diverged" in proc.stdout + proc.stderr and results(run_dir) == res


def test_sweep_goes_on_past_a_failed_job(repo, python, cli_env, tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        python,
        str(repo / "train.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        *QUICK,
        "trainer.max_steps=4",
        "experiment=bn_x5",
        "trainer.sync_bn=true",
        "model.norm=ghost,batch",  # a valid config that fails at set-up: sync_bn needs torch's BN
    ]
    proc = subprocess.run(cmd, cwd=repo, env=cli_env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1, proc.stderr[-2000:]
    done = list(sweep.rglob("results.json"))
    assert len(done) == 1 and json.loads(done[0].read_text())["status"] == "completed"
    assert "model.norm" in str(done[0]) and "batch" in str(done[0]) and done[0].parent.name == "seed0"
    # the sweep still ends with its table, the failed run in it, then one error line (no traceback)
    table = (sweep / "sweep_summary.md").read_text().splitlines()[2:]
    assert [row.split(" | ")[:2] for row in table] == [
        ["| bn_x5/model.norm:batch+trainer.deterministic:True+trainer.sync_bn:True/seed0", "completed"],
        ["| bn_x5/model.norm:ghost+trainer.deterministic:True+trainer.sync_bn:True/seed0", "no results.json"],
    ]
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and output.index("report:") < output.index("1 of the sweep's runs")
    assert "did not complete; the first error: trainer.sync_bn=true needs model.norm=batch" in output


def test_torchrun_two_cpu_processes(repo, python, cli_env, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(repo / "train.py"),
        f"hydra.run.dir={run_dir}",
        *QUICK,
        "trainer.max_steps=6",
        "trainer.eval_every=3",
        "experiment=bn_x5",
    ]
    proc = subprocess.run(cmd, cwd=repo, env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = results(run_dir)
    assert res["status"] == "completed" and res["global_batch"] == 64
    assert res["environment"]["world_size"] == 2
    # 32 per process; the lr scales linearly with the global batch of 64
    assert res["lr"] == pytest.approx(0.015)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["world_size"] == 2
    # requeued onto one process: continues from the saved step instead of refusing
    proc = run_train(
        repo, python, cli_env, run_dir, "experiment=bn_x5", "trainer.max_steps=9", "trainer.eval_every=3"
    )
    res = results(run_dir)
    assert res["status"] == "completed" and res["steps"] == 9 and res["global_batch"] == 32
    assert [e["step"] for e in res["evals"]] == [3, 6, 9] and "continuing at step 6" in proc.stdout


def test_help_lists_experiments_and_datasets(repo, python, cli_env):
    proc = subprocess.run(
        [python, str(repo / "train.py"), "--help"],
        cwd=repo,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    for word in ("bn_x30", "bn_x5_sigmoid", "mnist_figure1", "fashion_mnist", "imagenet_subset"):
        assert word in proc.stdout


def test_unknown_experiment_is_one_clear_error(repo, python, cli_env):
    proc = subprocess.run(
        [python, str(repo / "train.py"), "experiment=bn_x50"],
        cwd=repo,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "bn_x50" in proc.stderr and "bn_x30" in proc.stderr


def test_resume_from_a_corrupt_checkpoint_is_one_clear_error(repo, python, cli_env, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 half a zip file")
    proc = run_train(repo, python, cli_env, tmp_path / "run", f"resume={bad}", check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error:") and str(bad) in err and "corrupt or truncated" in err
