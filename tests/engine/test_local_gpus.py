"""hydra/launcher=local_gpus: each sweep job sees one GPU of its own, N at a time (checked on a CPU by the
environment each job gets, with a faked list of 3 GPUs and 4 jobs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hydra_plugins.bn_inception_gpus import visible_gpus

APP = """
import json, os, time
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    start = time.time()
    time.sleep(2)
    job = HydraConfig.get().job.num
    gpu = os.environ["CUDA_VISIBLE_DEVICES"]
    record = dict(job=job, gpu=gpu, pid=os.getpid(), start=start, end=time.time())
    Path(cfg.out, f"job{job}.json").write_text(json.dumps(record))

main()
"""

CONFIG = """
defaults:
  - override hydra/launcher: local_gpus
  - _self_
x: 0
out: OUT
hydra:
  searchpath: [pkg://bn_inception.configs]
  sweep: {dir: OUT/sweep}
"""


def test_each_job_sees_one_gpu_of_its_own_n_at_a_time(tmp_path, repo, cli_env):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "app.yaml").write_text(CONFIG.replace("OUT", str(tmp_path)))
    env = {**cli_env, "CUDA_VISIBLE_DEVICES": "0,1,2"}
    proc = subprocess.run(
        [sys.executable, "app.py", "-m", "x=0,1,2,3"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    jobs = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(4)]
    assert all(job["gpu"] in ("0", "1", "2") for job in jobs)  # one device each, from the visible ones
    assert len({job["pid"] for job in jobs}) <= 3  # 3 GPUs: 3 jobs at once
    for a in jobs:
        for b in jobs:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["gpu"] != b["gpu"], (a, b)  # jobs running together never share a GPU
            if a["pid"] == b["pid"]:
                assert a["gpu"] == b["gpu"]  # a worker keeps its GPU (CUDA ignores a later change)
    log = proc.stdout + proc.stderr
    for job in jobs:  # each job's first line names its GPU
        assert f"job {job['job']} on GPU {job['gpu']} (CUDA_VISIBLE_DEVICES={job['gpu']}" in log


def test_the_gpus_are_cuda_visible_devices(tmp_path, repo, cli_env):
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5d2a"}) == ["GPU-5d2a"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=local_gpus", "seed=0,1",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=repo, env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: hydra/launcher=")
    assert not (tmp_path / "sweep").exists()
    assert Path(repo, "bn_inception/configs/hydra/launcher/local_gpus.yaml").is_file()
