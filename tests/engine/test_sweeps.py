"""The path researchers take: a sweep from the command line, its runs in TensorBoard, the printed evaluate
command pasted into a shell. One small sweep (2 experiments x 2 seeds) serves every test here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import REPO, needs_fashion

pytestmark = needs_fashion

HPARAM_ORDER = ["experiment", "seed", "dataset", "norm", "act", "lr", "weight_decay", "dropout", "lrn",
                "decay_speedup", "shuffle", "distortion", "batch"]  # fmt: skip


def sweep_command(sweep_dir) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"), "-m", f"hydra.sweep.dir={sweep_dir}",
        "experiment=inception,bn_x5", "seed=0,1",
        "data=fashion_mnist",  # the default dataset, given explicitly: it must not name directories
        "data.crop_scale=[0.3,1.0]",  # a list value: directory names must still need no quoting
        "trainer.max_steps=3", "trainer.eval_every=3", "trainer.log_every=50",  # fewer steps than log_every
        "trainer.eval_limit=64", "trainer.probe_images=16", "trainer.target_top1=99", "data.workers=0",
        "trainer.progress=true",  # a bar only on a terminal: here stdout is a pipe, so plain lines
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "small"
    env = {
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",  # `python` as a user's shell finds it
    }
    proc = subprocess.run(
        sweep_command(sweep_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    runs = sorted(p.parent for p in sweep_dir.rglob("results.json"))
    return sweep_dir, proc.stdout + proc.stderr, runs, env


def test_run_directories_name_what_differs_and_need_no_quoting(sweep):
    sweep_dir, _, runs, _ = sweep
    names = [r.relative_to(sweep_dir).as_posix() for r in runs]
    assert names == [f"{e}/data.crop_scale:0.3_1.0/seed{s}" for e in ("bn_x5", "inception") for s in (0, 1)]
    assert not any(set(n) & set("=,[]'\" ") for n in names)


def test_the_printed_evaluate_command_works_when_pasted(sweep):
    _, output, runs, env = sweep
    printed = [
        line.split("evaluate:", 1)[1].strip() for line in output.splitlines() if "evaluate:    " in line
    ]
    assert len(printed) == 4 and all(cmd.startswith("python evaluate.py checkpoints=") for cmd in printed)
    proc = subprocess.run(
        ["bash", "-c", printed[-1]], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bn_x5/data.crop_scale:0.3_1.0/seed1 " in proc.stdout  # the row is named after its run


def test_hparams_show_what_a_run_is_and_no_fake_metrics(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    _, _, runs, _ = sweep
    acc = EventAccumulator(str(runs[1]), size_guidance={"scalars": 0})  # bn_x5, seed 1
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert [h.name for h in experiment.hparam_infos] == HPARAM_ORDER
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {k: v.string_value or v.number_value or v.bool_value for k, v in start.hparams.items()}
    assert values["experiment"] == "bn_x5" and values["seed"] == 1 and values["dataset"] == "fashion_mnist"
    assert (
        values["norm"] == "batch"
        and values["lr"] == pytest.approx(0.0075)
        and values["distortion"] == "reduced"
    )
    tags = set(acc.Tags()["scalars"])
    assert "hparam/best_top1" in tags and "hparam/steps_to_target" not in tags  # 99% never reached: no -1
    # a run shorter than log_every still has its training curves (written at evaluation steps)
    assert [e.step for e in acc.Scalars("train/loss")] == [3] and "perf/img_per_s" in tags


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_real_tensorboard_server_shows_what_a_run_is_first(sweep):
    """TensorBoard's HParams page shows the first 5 keys its server lists; they must be the identity keys,
    and the metrics carry readable titles."""
    import time
    import urllib.request

    sweep_dir, _, _, env = sweep
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep_dir), "--port", str(port),
         "--host", "127.0.0.1", "--load_fast", "false"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/hparams/experiment"
        body = json.dumps({"experimentName": ""}).encode()
        deadline, experiment, last_error = time.monotonic() + 90, None, None
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
                experiment = json.loads(urllib.request.urlopen(request, timeout=10).read())
                if len(experiment.get("hparamInfos", [])) == len(HPARAM_ORDER):
                    break
            except OSError as err:  # the server is still starting: not listening yet, or no data yet
                last_error = err
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert experiment is not None, f"tensorboard did not answer: {last_error}"
    shown = [h["name"] for h in experiment["hparamInfos"][:5]]
    assert shown == ["dataset", "experiment", "lr", "norm", "seed"]
    titles = [m.get("displayName") for m in experiment["metricInfos"]]
    assert titles == ["best top-1 (%)", "final top-1 (%)", "final top-5 (%)", "steps to target"]


def test_console_lines_name_their_run_and_a_sweep_ends_with_its_table(sweep):
    sweep_dir, output, _, _ = sweep
    progress = re.compile(
        r"bn_x5/seed1 \| step 3/3 \| loss [\d.]+ \| lr [\d.e-]+ \| \d+ img/s \| data wait \d+% \| ETA"
    )
    assert progress.search(output) and "inception/seed0 | step 3/3 | val top1" in output
    assert "\r" not in output  # no progress bar off a terminal
    table = (sweep_dir / "sweep_summary.md").read_text().splitlines()
    assert len(table) == 2 + 4 and all("| completed | 3 |" in row and "| never |" in row for row in table[2:])
    assert f"report:      python scripts/report.py {sweep_dir}" in output


def test_relaunching_a_finished_sweep_says_finished_once_per_run(sweep):
    sweep_dir, _, runs, env = sweep
    before = [json.loads((r / "results.json").read_text()) for r in runs]
    proc = subprocess.run(
        sweep_command(sweep_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and out.count("nothing to do") == 4
    assert "resumed" not in out and "evaluate:" not in out
    assert [json.loads((r / "results.json").read_text()) for r in runs] == before


def test_a_sweeper_plugin_gets_its_own_syntax_and_runs_its_trials(cli_env, tmp_path):
    """hydra-optuna-sweeper (issue 24 item 4): the pre-flight checks the base config and leaves
    ``interval(...)`` to the plugin, which runs 2 trials and maximises the run's best top-1."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "optuna"
    quick = ["trainer.max_steps=3", "trainer.eval_every=3", "trainer.eval_limit=64", "trainer.probe_images=0",
             "trainer.progress=false", "data.workers=0"]  # fmt: skip
    optuna = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
              "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=0"]  # fmt: skip
    cmd = [sys.executable, str(REPO / "train.py"), "-m", f"hydra.sweep.dir={sweep_dir}", *optuna, *quick]
    bad = subprocess.run([*cmd, "optim.lr_mult=interval(0.5,2)", "trainer.eval_every=0"], cwd=REPO,
                         env=cli_env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "error: trainer.eval_every=0 is not valid; it must be > 0"
    )
    assert not sweep_dir.exists()
    proc = subprocess.run([*cmd, "optim.lr_mult=interval(0.5,2)"], cwd=REPO, env=cli_env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("results.json"))]
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert all(0.5 * 0.0015 <= r["lr"] <= 2 * 0.0015 for r in runs) and runs[0]["lr"] != runs[1]["lr"]
    best = (sweep_dir / "optimization_results.yaml").read_text()
    assert f"best_value: {max(r['best_top1'] for r in runs)}" in best and "optim.lr_mult:" in best
