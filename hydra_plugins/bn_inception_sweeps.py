"""bn-inception's two Hydra plugins: the sweeper every ``train.py -m`` uses, and the SLURM launcher of
``hydra/launcher=slurm``. Hydra instantiates plugins only from the ``hydra_plugins`` package, hence this
file outside ``bn_inception/``; both are Hydra's and submitit's own classes with what a sweep of training
runs needs added, and nothing replaced.

- :class:`SummarySweeper`: Hydra's basic sweeper runs every job and then raises the first failed job's error
  (locally and under any launcher), before any end-of-sweep callback: the sweep would end with a traceback
  and no table. This one always ends with the table of every run, a failed one and one that never wrote
  ``results.json`` included, then one ``error:`` line and exit status 1 if a run failed.
- :class:`SlurmLauncher`: hydra-submitit-launcher's, plus (1) a run that fails makes its SLURM job fail, so
  SLURM records FAILED 1:0 (Hydra's job runner catches the error, and submitit then recorded COMPLETED 0:0);
  (2) the sweep waits for every job and records one that ended without a result (cancelled, timed out, a
  failed run) as failed, where the plugin stopped waiting at the first, its other jobs still running; (3)
  Ctrl-C cancels the jobs it submitted (each saves its run; re-launching the sweep resumes them) instead of
  leaving them running unseen. submitit's requeue after SLURM's warning signal, its checkpointing of the
  job and its ``max_num_timeout`` count are kept as they are (bn_inception/engine/signals.py).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class SummarySweeper(BasicSweeper):
    """Hydra's basic sweeper (``hydra.sweeper.params``, batches, every job run even after one fails),
    ending with the sweep's table whatever happened."""

    def sweep(self, arguments: list[str]) -> Any:
        try:
            returns = super().sweep(arguments)
        except Exception as e:  # a failed job: raised by Hydra once every job of the batch has run
            failed = self._summary()
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log.error("error: %d of the sweep's runs did not complete; the first error: %s", failed, message)
            sys.exit(1)
        except BaseException:  # a signal stopped a local sweep (exit 75), Ctrl-C
            self._summary()
            raise
        self._summary()
        return returns

    def _summary(self) -> int:
        """One table of every run of the sweep (a job without ``results.json`` too), printed and written to
        ``<sweep dir>/sweep_summary.md``, with the report and TensorBoard commands; the number of runs that
        did not complete (or diverge: a result)."""
        from bn_inception.cli import command, job_dir
        from bn_inception.report.sweep_table import sweep_markdown, sweep_rows, sweep_text

        loader = self.hydra_context.config_loader
        jobs = [o for batch in (self.overrides or []) for o in batch]
        dirs = [job_dir(loader.load_sweep_config(self.config, list(o)), multirun=True) for o in jobs]
        sweep = Path(str(self.config.hydra.sweep.dir))
        if not sweep.is_dir():
            return len(dirs)
        rows = sweep_rows(sweep, dirs)
        (sweep / "sweep_summary.md").write_text(sweep_markdown(rows))
        log.info(
            "sweep %s:\n%s\n  table:       %s\n  report:      %s\n  TensorBoard: tensorboard --logdir %s",
            sweep, sweep_text(rows), sweep / "sweep_summary.md",
            command("scripts/report.py", shlex.quote(str(sweep))), shlex.quote(str(sweep)),
        )  # fmt: skip
        return sum(1 for r in rows if r[1] != "completed" and not r[1].startswith("diverged"))


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """One SLURM job per sweep job, through submitit (``bn_inception/configs/hydra/launcher/slurm.yaml``)."""

    def __call__(self, *args: Any) -> JobReturn:
        """The job, on the cluster: Hydra's job runner keeps a run's error in the JobReturn; raising it
        makes submitit record the error and the SLURM job fail (FAILED 1:0 in sacct)."""
        ret = super().__call__(*args)
        if ret.status == JobStatus.FAILED:
            raise ret._return_value
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout"),
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # the others are submitit's slurm_*
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        indices = range(initial_job_idx, initial_job_idx + len(job_overrides))
        jobs = executor.map_array(
            self,
            [list(o) for o in job_overrides],
            ["hydra.sweep.dir"] * len(indices),
            list(indices),
            [f"job_id_for_{i}" for i in indices],
            [Singleton.get_state()] * len(indices),
        )
        for job, overrides in zip(jobs, job_overrides, strict=True):
            log.info("SLURM job %s: %s", job.job_id, " ".join(overrides))
        try:
            return [_result(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=True)]
        except KeyboardInterrupt:
            ids = [job.job_id for job in jobs]
            subprocess.run(["scancel", *ids], check=False)
            log.warning("cancelled SLURM jobs %s: each saves its run (exit 75); re-launch this command to "
                        "resume", " ".join(ids))  # fmt: skip
            _wait_until_gone(ids)  # the table comes next: let the runs save and say so
            raise SystemExit(130) from None


def _wait_until_gone(ids: Sequence[str], timeout: float = 120) -> None:
    """Until SLURM lists none of these jobs (a cancelled job has KillWait, 30 s by default, to end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(ids)], capture_output=True, text=True)
        if not queued.stdout.strip():
            return
        time.sleep(1)


def _result(job: Any, overrides: Sequence[str]) -> JobReturn:
    """The job's JobReturn once it has ended; a job that ended without one (a failed run, cancelled, timed
    out: submitit's errors) as a failed JobReturn naming its state and log."""
    from submitit.core.utils import UncompletedJobError

    try:
        return job.results()[0]
    except UncompletedJobError as e:
        error = RuntimeError(
            f"SLURM job {job.job_id} ended {job.state} without a result; log: {job.paths.stderr}"
        )
        log.debug("%s", e)
        return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)
