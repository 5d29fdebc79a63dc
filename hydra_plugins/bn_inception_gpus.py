"""``hydra/launcher=local_gpus``: a sweep on one multi-GPU machine without SLURM, one job per GPU.

Hydra's joblib launcher runs ``n_jobs`` jobs at once in worker processes, but every job sees every GPU and
trains on the first (facebookresearch/hydra#1331, #2602). This is that launcher, with each worker process
claiming one GPU for its lifetime before its first job: ``CUDA_VISIBLE_DEVICES`` is set to that GPU alone
(before the job touches CUDA, so ``cuda`` in the job is that GPU), and the job's first log line names it.
A worker keeps its GPU because CUDA, once started in a process, ignores later changes of the variable;
the claim is a ``flock`` on one file per GPU, which the kernel releases when a worker process ends.

The GPUs are those in ``CUDA_VISIBLE_DEVICES`` (``CUDA_VISIBLE_DEVICES=2,3`` uses those two), else every
GPU torch sees; ``n_jobs`` (-1: one per GPU) runs fewer at once.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)


def visible_gpus(env: Any = os.environ) -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs)."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() not in ("", "-1")]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


class LocalGPUsLauncher(JoblibLauncher):
    """Hydra's joblib launcher, one GPU per worker process (configs: hydra/launcher/local_gpus.yaml)."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        gpus = visible_gpus()
        if not gpus:
            print("error: hydra/launcher=local_gpus found no GPU (CUDA_VISIBLE_DEVICES or torch); on a CPU "
                  "use hydra/launcher=local_parallel", file=sys.stderr)  # fmt: skip
            sys.exit(2)
        n_jobs = int(self.joblib.get("n_jobs") or -1)
        self.joblib["n_jobs"] = len(gpus) if n_jobs < 1 else min(n_jobs, len(gpus))
        self.claims = tempfile.mkdtemp(prefix="bn_inception_gpus_")  # for every batch of the sweep
        atexit.register(shutil.rmtree, self.claims, True)
        log.info("one job per GPU: %s, %d at once", ",".join(gpus), self.joblib["n_jobs"])
        task = OnOneGPU(task_function, gpus, self.claims)
        super().setup(hydra_context=hydra_context, task_function=task, config=config)


class OnOneGPU:
    """The job function, run in a worker process on the GPU that process holds (picklable for joblib)."""

    def __init__(self, task_function: Any, gpus: Sequence[str], claims: str) -> None:
        self.task_function, self.gpus, self.claims = task_function, list(gpus), claims

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        gpu = self.claim()
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        job = HydraConfig.get().job
        log.info("job %s on GPU %s (CUDA_VISIBLE_DEVICES=%s, pid %d)", job.num, gpu, gpu, os.getpid())
        return self.task_function(cfg)

    def claim(self) -> str:
        """This process's GPU: the one it holds, else the first free one (waiting while all are held). The
        claim is kept in the environment, not in this module: Hydra re-executes plugin modules per job."""
        held = os.environ.get("BN_INCEPTION_GPU_CLAIM", "")
        if held.startswith(self.claims + os.sep):
            return held[len(self.claims) + len(os.sep) :]
        while True:
            for gpu in self.gpus:
                fd = os.open(Path(self.claims) / gpu, os.O_CREAT | os.O_WRONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                os.environ["BN_INCEPTION_GPU_CLAIM"] = str(Path(self.claims) / gpu)  # fd open: held for life
                return gpu
            time.sleep(0.2)  # a worker that just ended is releasing its GPU
