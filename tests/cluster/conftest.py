"""The cluster tier: a real one-node SLURM cluster (scripts/slurm_test_cluster.sh, from Debian's packages)
and torchrun agents on this host. Helpers shared by its scenarios."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm_test_cluster.sh"
PYTHON = sys.executable

# One deterministic run, stopped and continued in every scenario and compared with an uninterrupted one.
RUN = [
    "experiment=bn_x5",
    "trainer.eval_every=10",
    "trainer.log_every=5",
    "trainer.eval_limit=128",
    "trainer.eval_batch_size=128",
    "trainer.probe_images=32",
    "trainer.progress=false",
    "trainer.deterministic=true",
    "data.workers=0",
]
EVAL_KEYS = ("step", "top1", "top5", "val_loss", "train_loss")


def job_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '/usr/bin:/bin')}"  # `python` in job scripts
    for var in [v for v in env if v.startswith(("SLURM_", "SUBMITIT_"))] + [
        "RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
    ]:
        env.pop(var, None)  # a tier started inside a SLURM job or torchrun must not look like one
    return env


def why_no_cluster() -> str | None:
    """Why this machine cannot have the test cluster (one line), or None."""
    if os.geteuid() != 0:
        return "the SLURM cluster tier needs root (it starts munged, slurmdbd, slurmctld, slurmd)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "the SLURM cluster tier needs Debian's slurm-wlm or apt-get to install it"
    return None


@dataclass
class Cluster:
    dir: Path
    env: dict[str, str]

    def run(self, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def sbatch(self, *args: str) -> str:
        return self.run("sbatch", "--parsable", *args).split(";")[0]

    def state(self, job: str) -> str:
        out = self.run("squeue", "-h", "-j", job, "-o", "%T", check=False)
        return out.splitlines()[0] if out else "GONE"

    def start_now(self, job: str) -> None:
        """A requeued job waits ~2 min (its BeginTime) before it may run again: skip the wait."""
        wait_for(lambda: self.state(job) == "PENDING", 120, f"job {job} pending again")
        self.run("scontrol", "update", f"JobId={job}", "StartTime=now")

    def accounting(self, job: str, attempts: int, timeout: float = 90) -> list[tuple[str, str]]:
        """(job state, the training step's exit code) of each attempt, as sacct records them."""

        def read() -> list[tuple[str, str]] | None:
            out = self.run("sacct", "-n", "-P", "--duplicates", "-j", job, "-o", "JobID,State,ExitCode")
            (self.dir / f"sacct-{job}.txt").write_text(out)  # what the records were read from
            rows = [line.split("|") for line in out.splitlines()]
            jobs = [r for r in rows if "." not in r[0]]
            steps = [r for r in rows if r[0].endswith(".0")]
            done = len(jobs) == attempts and all(r[1] not in ("RUNNING", "PENDING") for r in jobs)
            if not done or len(steps) < attempts:
                return None
            return [(j[1].split()[0], s[2]) for j, s in zip(jobs, steps[-attempts:], strict=True)]

        return wait_for(read, timeout, f"sacct to record {attempts} attempt(s) of job {job}")


def wait_for(check: Callable, timeout: float, what: str, every: float = 0.3):
    """Poll ``check`` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def results(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def log_has(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except OSError:
        return False


def evals(run_dir: Path) -> list[tuple]:
    return [tuple(e[k] for k in EVAL_KEYS) for e in results(run_dir).get("evals", [])]


def exact(run_dir: Path, reference: Path, resumed_at: int) -> bool:
    """Every evaluation of the run (top-1/5, validation loss and the training loss of each interval, the one
    the interruption fell in included) equals the uninterrupted reference's at that step, and there is at
    least one after the step it resumed at."""
    ref = {e[0]: e for e in evals(reference)}
    mine = evals(run_dir)
    return any(e[0] > resumed_at for e in mine) and all(ref.get(e[0]) == e for e in mine)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A one-node SLURM cluster with accounting, for the session; stopped after."""
    reason = why_no_cluster()
    if reason:
        pytest.skip(reason)
    where = tmp_path_factory.mktemp("slurm")
    env = dict(job_env(), CPUS="16")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start", str(where)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"the test cluster did not start:\n{proc.stderr[-3000:]}"
    env["SLURM_CONF"] = str(where / "slurm.conf")
    try:
        yield Cluster(where, env)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(where)], env=env, capture_output=True, timeout=300)
