"""The cluster path as users take it, on a real one-node SLURM cluster and with torchrun agents on one host.

Every scenario stops the same deterministic run in its own way, checks what SLURM recorded (job state and
the training step's exit code of each attempt, from sacct), lets it continue as it would on a cluster, and
checks that it continued exactly: every evaluation after the resume (the training loss of the interval the
stop fell in included) equals that of an uninterrupted run. The scenarios run at once (the cluster has 16
CPU slots; the processes share the machine's cores), so the tier costs about its slowest scenario. SLURM's
own waits are cut where a test cluster allows: a requeued job's ~2 min BeginTime (``scontrol update
StartTime=now``), and the time limit, shortened with ``scontrol update EndTime=...`` once the run trains,
so that SLURM's 30 s timer warns or stops it at its next tick instead of after a whole minute. The
preempted job holds the node's one ``token`` (a generic resource, as a GPU would be), so that the job of
the higher partition preempts it and no other.

Where no cluster can be had (not root, no apt-get) the SLURM scenarios skip with one line; the torchrun one
runs everywhere.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cluster.conftest import PYTHON, REPO, RUN, exact, job_env, log_has, results, wait_for

pytestmark = pytest.mark.xdist_group("cluster")  # one xdist worker runs the whole tier (pyproject.toml)


SLURM_CPU = [  # one CPU task per job on the test cluster
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
]
LONG = "trainer.max_steps=100000"  # runs the test stops itself after their first evaluation past the resume
SHORT = "trainer.max_steps=40"  # runs that end on their own
# Two processes agree to stop at the next logging step: every step, so that a stop falls inside an
# evaluation interval, where both processes' training-loss sums must be saved (logging does not change a run)
EVERY_STEP = "trainer.log_every=1"
STARTED: list[subprocess.Popen] = []  # what the tier starts outside SLURM: stopped at its end if still there


def start(cmd: list[str], log: Path | None = None, **env: str) -> subprocess.Popen:
    """A process of its own session (so that it and its children can be stopped together)."""
    out = log.open("w") if log is not None else subprocess.PIPE
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(job_env(), **env), stdout=out, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, preexec_fn=default_sigint)  # fmt: skip
    STARTED.append(proc)
    return proc


def default_sigint() -> None:
    """Ctrl-C as a terminal gives it: a tier started in the background by a shell without job control (CI,
    nohup, `cmd &` in a script) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt in
    the launcher (the Ctrl-C scenario waited forever under such a start)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def train_script(where: Path) -> Path:
    """A job script as users write one without submitit: srun, one task per process."""
    return where / "train.sbatch"


def write_train_script(where: Path) -> None:
    command = f'srun python train.py {" ".join(RUN)} "$@"'
    train_script(where).write_text(f"#!/bin/bash\n#SBATCH --open-mode=append\ncd {REPO}\n{command}\n")


def readme_recipe() -> str:
    """The README's sbatch recipe, as written there."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    recipe = [b for b in blocks if "#SBATCH --open-mode=append" in b]
    assert len(recipe) == 1, "README.md must hold one sbatch recipe (#SBATCH --open-mode=append)"
    return recipe[0]


def first_step(run_dir: Path) -> None:
    wait_for(lambda: log_has(run_dir / "train.log", "| step "), 300, f"{run_dir.name} to train")


def stopped_at(run_dir: Path) -> int:
    """The step a stopped segment saved (results.json: interrupted)."""
    res = wait_for(lambda: (r := results(run_dir)).get("status") == "interrupted" and r, 120, "the save")
    return res["steps"]


def evaluated_past(run_dir: Path, step: int, timeout: float = 300) -> None:
    wait_for(lambda: any(e["step"] > step for e in results(run_dir).get("evals", [])), timeout,
             f"{run_dir.name} to evaluate after step {step}")  # fmt: skip


def submitit_jobs(sweep: Path) -> list[str]:
    """The SLURM job ids of a submitit sweep (its .submitit/<job id>/<job id>_submitted.pkl)."""
    return sorted(
        p.name.removesuffix("_submitted.pkl") for p in (sweep / ".submitit").glob("*/*_submitted.pkl")
    )


def sacct_text(records: list[tuple[str, str]]) -> str:
    return " -> ".join(f"{state} {code}" for state, code in records)


# ---------------------------------------------------------------------------------------- scenarios


def scenario_warning(cluster, tmp: Path, reference: Path) -> dict:
    """submitit's warning (SIGUSR2 before a time limit): save, submitit requeues, the job continues exactly.
    Ended by Ctrl-C on the launcher, which cancels its job (saved: exit 75) and still prints the table."""
    sweep = tmp / "warning"
    launcher = start(
        [PYTHON, "train.py", "-m", "hydra/launcher=slurm", *SLURM_CPU, "hydra.launcher.timeout_min=10",
         "hydra.launcher.signal_delay_s=120", f"hydra.sweep.dir={sweep}", *RUN, LONG, "data.workers=1"],
        SLURM_CONF=cluster.env["SLURM_CONF"],
    )  # fmt: skip
    run_dir = wait_for(lambda: next((p.parent for p in sweep.glob("*/*/*/train.log")), None), 300, "the run")
    first_step(run_dir)
    job = submitit_jobs(sweep)[0]
    # the time limit now ends in 120 s: SLURM's timer sends the warning (signal_delay_s=120) at its next tick
    cluster.run("scontrol", "update", f"JobId={job}", "EndTime=now+120")
    k = stopped_at(run_dir)
    cluster.start_now(job)
    # the requeued job keeps the shortened limit: give it back its 10 minutes, or a slow resume meets a second
    # warning (and a second requeue) before the Ctrl-C below
    cluster.run("scontrol", "update", f"JobId={job}", "TimeLimit=10")
    wait_for(lambda: log_has(run_dir / "train.log", f"resumed {run_dir} at step {k}"), 300, "the resume")
    evaluated_past(run_dir, k)
    launcher.send_signal(signal.SIGINT)  # Ctrl-C: cancels its job (which saves, 75), waits, prints the table
    output = launcher.communicate(timeout=300)[0]
    (tmp / "warning-launcher.log").write_text(output)
    log = (run_dir / "train.log").read_text()
    out = "".join(p.read_text() for p in (sweep / ".submitit" / job).glob("*_log.*"))
    return {
        "scenario": "warning signal (submitit, SIGUSR2), then Ctrl-C on the launcher",
        "records": cluster.accounting(job, 2),
        "launcher_exit": launcher.returncode,
        "resumed_at": k,
        "run_dir": run_dir,
        "reference": reference,
        "saved_by_usr2": f"stopped by SIGUSR2 at step {k}" in log,
        "requeued_by_submitit": log_has(
            sweep / ".submitit" / job / f"{job}_0_log.out", f"Requeued job {job}"
        ),
        "table": "interrupted" in output and "cancelled SLURM jobs" in output and "report:" in output,
        "traceback": "Traceback" in output or "Traceback" in log,
        # submitit's handler ran once, in the training process (loader workers ignore SIGUSR2)
        "one_checkpoint": len(re.findall(r"submitit INFO \(.*\) - Calling checkpoint method", out)) == 1
        and "AssertionError" not in out,
    }


def scenario_time_limit(cluster, tmp: Path, reference: Path) -> dict:
    """A time limit without --signal: srun delivers SIGTERM twice; save, exit 75; submit it again."""
    run_dir = tmp / "time_limit"
    script = train_script(tmp)
    args = ["-o", str(tmp / "time_limit-%j.out"), str(script), LONG, f"hydra.run.dir={run_dir}"]
    job = cluster.sbatch("-J", "time_limit", *args)
    first_step(run_dir)
    cluster.run(
        "scontrol", "update", f"JobId={job}", "EndTime=now"
    )  # SLURM's timer stops it at its next tick
    k = stopped_at(run_dir)
    records = cluster.accounting(job, 1)
    again = cluster.sbatch("-J", "time_limit", *args)
    evaluated_past(run_dir, k)
    cluster.run("scancel", again)
    records += cluster.accounting(again, 1)
    wait_for(
        lambda: log_has(tmp / f"time_limit-{job}.out", "Exited with exit code 75"), 60, "srun's exit line"
    )
    first = (tmp / f"time_limit-{job}.out").read_text()
    return {"scenario": "time limit without --signal (SIGTERM twice), then sbatch again", "records": records,
            "resumed_at": k, "run_dir": run_dir, "reference": reference,
            # srun forwarded SLURM's SIGTERM a second time; the run saw one request, saved and exited 75
            "double_sigterm": "forcing job termination" in first and first.count("SIGTERM received") == 1,
            }  # fmt: skip


def scenario_requeue(cluster, tmp: Path, reference: Path, tasks: int = 1, ref2: Path | None = None) -> dict:
    """``scontrol requeue``: one SIGTERM; save, exit 75; SLURM runs the job again, which resumes and ends."""
    name = "requeue" if tasks == 1 else "two_tasks"
    run_dir = tmp / name
    every = [EVERY_STEP] if tasks > 1 else []
    job = cluster.sbatch("-J", name, "-n", str(tasks), "-o", str(tmp / f"{name}-%j.out"),
                         str(train_script(tmp)), SHORT, *every, f"hydra.run.dir={run_dir}")  # fmt: skip
    if tasks > 1:  # stop inside an evaluation interval, after one: the loss sums of both processes matter
        wait_for(lambda: log_has(run_dir / "train.log", "| step 11/"), 300, "step 11")
    else:
        first_step(run_dir)
    cluster.run("scontrol", "requeue", job)
    k = stopped_at(run_dir)
    cluster.start_now(job)
    records = cluster.accounting(job, 2, timeout=300)
    res = results(run_dir)
    what = "scontrol requeue" if tasks == 1 else "2-task job (srun, no submitit), scontrol requeue"
    return {"scenario": what,
            "records": records, "resumed_at": k, "run_dir": run_dir, "reference": ref2 or reference,
            "completed": res["status"] == "completed" and res["steps"] == 40,
            "world_size": res["environment"]["world_size"]}  # fmt: skip


def scenario_scancel(cluster, tmp: Path, reference: Path) -> dict:
    """``scancel``: one SIGTERM; save, exit 75; the job is gone, so submit it again."""
    run_dir = tmp / "scancel"
    args = ["-o", str(tmp / "scancel-%j.out"), str(train_script(tmp)), SHORT, f"hydra.run.dir={run_dir}"]
    job = cluster.sbatch("-J", "scancel", *args)
    first_step(run_dir)
    cluster.run("scancel", job)
    k = stopped_at(run_dir)
    records = cluster.accounting(job, 1)
    wait_for(lambda: log_has(tmp / f"scancel-{job}.out", "Exited with exit code 75"), 60, "srun's exit line")
    again = cluster.sbatch("-J", "scancel", *args)
    records += cluster.accounting(again, 1, timeout=300)
    res = results(run_dir)
    return {"scenario": "scancel, then sbatch again", "records": records, "resumed_at": k,
            "run_dir": run_dir, "reference": reference, "completed": res["status"] == "completed",

            }  # fmt: skip


def scenario_recipe(cluster, tmp: Path, reference: Path) -> dict:
    """The README's job script: the warning makes the run save and exit 75, the script requeues its job, the
    next segment resumes, ends with 0, and SLURM records COMPLETED; one log file holds both segments."""
    run_dir = tmp / "recipe"
    script = tmp / "recipe.sbatch"
    script.write_text(readme_recipe())
    log = tmp / "recipe.out"
    job = cluster.sbatch("-J", "recipe", "-n", "1", "-o", str(log), f"--chdir={REPO}", str(script), *RUN,
                         SHORT, f"hydra.run.dir={run_dir}")  # fmt: skip
    first_step(run_dir)
    cluster.run("scancel", "--signal=USR2", job)  # what SLURM sends at --signal=USR2@300
    k = stopped_at(run_dir)
    cluster.start_now(job)
    records = cluster.accounting(job, 2, timeout=300)
    text = log.read_text()
    return {"scenario": "README sbatch recipe: warning, the script requeues", "records": records,
            "resumed_at": k, "run_dir": run_dir, "reference": reference,
            "one_log": f"stopped by SIGUSR2 at step {k}" in text and "completed 40 steps" in text,
            }  # fmt: skip


def scenario_preemption(cluster, tmp: Path, reference: Path) -> dict:
    """A job of partition urgent needs what the running job holds (the node's one token, as it would a GPU):
    the running job gets SIGTERM twice (srun), saves, exits 75, and SLURM requeues it (PreemptMode=REQUEUE);
    it resumes and ends."""
    run_dir = tmp / "preempt"
    job = cluster.sbatch("-J", "preempt", "-p", "debug", "--gres=token:1", "-o", str(tmp / "preempt-%j.out"),
                         str(train_script(tmp)), SHORT, f"hydra.run.dir={run_dir}")  # fmt: skip
    first_step(run_dir)
    urgent = cluster.sbatch("-p", "urgent", "--gres=token:1", "-o", "/dev/null", "--wrap", "sleep 1")
    k = stopped_at(run_dir)
    wait_for(lambda: cluster.state(urgent) == "GONE", 300, "the urgent job")
    cluster.start_now(job)
    records = cluster.accounting(job, 2, timeout=300)
    return {"scenario": "preemption (PreemptMode=REQUEUE)", "records": records, "resumed_at": k,
            "run_dir": run_dir, "reference": reference,
            "completed": results(run_dir).get("status") == "completed"}  # fmt: skip


def scenario_sweep(cluster, tmp: Path) -> dict:
    """A 2-job sweep through hydra/launcher=slurm, one job failing at set-up: both run, the table lists both,
    the sweep exits 1, and SLURM records the failed run as FAILED."""
    sweep = tmp / "sweep"
    proc = subprocess.run(
        [PYTHON, "train.py", "-m", "hydra/launcher=slurm", *SLURM_CPU, "hydra.launcher.timeout_min=5",
         "hydra.launcher.signal_delay_s=60", f"hydra.sweep.dir={sweep}", *RUN, "trainer.max_steps=6",
         "trainer.eval_every=3", "model.norm=ghost", "trainer.sync_bn=false,true"],
        cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    jobs = submitit_jobs(sweep)
    table = (sweep / "sweep_summary.md").read_text().splitlines()[2:]
    return {
        "scenario": "2-job sweep (hydra/launcher=slurm), one run failing",
        "records": [r for job in jobs for r in cluster.accounting(job, 1)],
        "sweep_exit": proc.returncode,
        "rows": [row.split(" | ")[:2] for row in table],
        "output": proc.stdout + proc.stderr,
    }


# ---------------------------------------------------------------------------------------------- torchrun


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(run_dir: Path, *args: str, log: Path) -> subprocess.Popen:
    cmd = [PYTHON, "-m", "torch.distributed.run", *args, "train.py", *RUN, SHORT, EVERY_STEP]
    return start([*cmd, f"hydra.run.dir={run_dir}"], log, LOGLEVEL="INFO")


def workers_of(agent: subprocess.Popen) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def scenario_torchrun(tmp: Path, ref2: Path) -> dict:
    """Two torchrun agents (--nnodes=2) on this host, one worker each, launched again by the test where a
    scheduler would (a SLURM requeue, a Kubernetes restart): torch 2.14's in-place restarts are unreliable
    (README), so ``--max-restarts=0``. A worker killed (SIGKILL): both agents fail (status 1), and the job
    launched again resumes from the last checkpoint. SIGTERM to one agent (a node stopped): every process
    saves at the same step and exits 75, both agents end (status 1), and the job launched again resumes
    there. Each continuation is exact."""
    run_dir = tmp / "torchrun"

    def job() -> tuple[subprocess.Popen, subprocess.Popen]:
        port = free_port()
        rdzv = ["--nnodes=2", "--nproc_per_node=1", "--max-restarts=0", "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=bn-cluster-tier"]  # fmt: skip
        first = torchrun(run_dir, *rdzv, log=tmp / f"agent-{port}-a.log")
        wait_for(lambda: listening(port), 120, "the first agent's rendezvous store")
        return first, torchrun(run_dir, *rdzv, log=tmp / f"agent-{port}-b.log")

    a, b = job()
    wait_for(lambda: log_has(run_dir / "train.log", "| step 15/"), 300, "step 15")
    os.kill(workers_of(b)[0], signal.SIGKILL)
    killed = (a.wait(timeout=300), b.wait(timeout=300))
    a, b = job()
    wait_for(lambda: log_has(run_dir / "train.log", f"resumed {run_dir} at step 10"), 300, "the resume")
    wait_for(lambda: log_has(run_dir / "train.log", "| step 21/"), 300, "step 21")
    b.send_signal(signal.SIGTERM)
    stopped = (a.wait(timeout=300), b.wait(timeout=300))
    k = stopped_at(run_dir)
    a, b = job()
    ended = (a.wait(timeout=600), b.wait(timeout=600))
    res = results(run_dir)
    log = (run_dir / "train.log").read_text()
    return {
        "scenario": "torchrun --nnodes=2: a worker killed, then SIGTERM to one agent; the job launched again",
        "records": [("worker killed", str(killed)), ("agent SIGTERMed", str(stopped)), ("again", str(ended))],
        "exits": (killed, stopped, ended),
        "resumed_at": k,
        "run_dir": run_dir,
        "reference": ref2,
        "completed": res.get("status") == "completed" and res.get("steps") == 40,
        "saved": re.search(rf"stopped by (SIGTERM|a signal to another process) at step {k}", log) is not None,
        "resumed_twice": f"resumed {run_dir} at step 10" in log and f"resumed {run_dir} at step {k}" in log,
    }


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------------------------------------ tier


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The uninterrupted runs every scenario is compared with: one process and two (torchrun --standalone),
    40 steps each; the first is continued (exactly) where a scenario went further."""
    tmp = tmp_path_factory.mktemp("references")
    one = start([PYTHON, "train.py", *RUN, SHORT, f"hydra.run.dir={tmp / 'one'}"], tmp / "one.log")
    two = torchrun(tmp / "two", "--standalone", "--nproc_per_node=2", log=tmp / "two.log")
    try:
        yield tmp / "one", tmp / "two", one, two
    finally:
        for proc in STARTED:  # a scenario that failed half-way leaves no process behind
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def reach(reference: Path, process: subprocess.Popen, step: int) -> None:
    """The reference has evaluated at ``step``: wait for it, or continue it that far (one process)."""
    process.wait(timeout=600)
    if any(e["step"] >= step for e in results(reference).get("evals", [])):
        return
    steps = -(-step // 10) * 10  # its evaluations fall every 10 steps
    subprocess.run([PYTHON, "train.py", *RUN, f"trainer.max_steps={steps}", f"hydra.run.dir={reference}"],
                   cwd=REPO, env=job_env(), capture_output=True, timeout=600, check=True)  # fmt: skip


@pytest.fixture(scope="module")
def tier(request, references, tmp_path_factory):
    """Every scenario at once; their outcomes by name, each with ``exact``."""
    one, two, one_proc, two_proc = references
    tmp = tmp_path_factory.mktemp("tier")
    write_train_script(tmp)
    start = time.monotonic()
    outcomes: dict = {}
    try:
        cluster = request.getfixturevalue("cluster")
    except pytest.skip.Exception as e:
        cluster, outcomes["_skipped"] = None, str(e)
    jobs = {"torchrun": lambda: scenario_torchrun(tmp, two)}
    if cluster is not None:
        jobs.update(
            warning=lambda: scenario_warning(cluster, tmp, one),
            time_limit=lambda: scenario_time_limit(cluster, tmp, one),
            requeue=lambda: scenario_requeue(cluster, tmp, one),
            two_tasks=lambda: scenario_requeue(cluster, tmp, one, tasks=2, ref2=two),
            scancel=lambda: scenario_scancel(cluster, tmp, one),
            recipe=lambda: scenario_recipe(cluster, tmp, one),
            sweep=lambda: scenario_sweep(cluster, tmp),
            preemption=lambda: scenario_preemption(cluster, tmp, one),
        )
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(caught, fn) for name, fn in jobs.items()}
        outcomes.update({name: future.result() for name, future in futures.items()})
    for o in sorted((o for o in outcomes.values() if isinstance(o, dict) and "run_dir" in o),
                    key=lambda o: str(o["reference"])):  # fmt: skip
        last = max((e["step"] for e in results(o["run_dir"]).get("evals", [])), default=0)
        reach(o["reference"], one_proc if o["reference"] == one else two_proc, last)
        o["exact"] = exact(o["run_dir"], o["reference"], o["resumed_at"])
    outcomes["_wall_s"] = time.monotonic() - start
    (tmp / "table.md").write_text(table(outcomes))
    return outcomes


def caught(fn):
    start = time.monotonic()
    try:
        outcome = fn()
        outcome["wall_s"] = time.monotonic() - start
        return outcome
    except Exception as e:  # noqa: BLE001 - reported by that scenario's test
        return e


def table(outcomes: dict) -> str:
    lines = [
        "| scenario (its wall time) | exit codes recorded | step resumed at | exact |",
        "|---|---|---:|---|",
    ]
    for name, o in outcomes.items():
        if isinstance(o, BaseException):
            lines.append(f"| {name} | failed: {type(o).__name__}: {str(o)[:300]} | - | - |")
        elif isinstance(o, dict) and "records" in o:
            exact = {True: "yes", False: "NO", None: "-"}[o.get("exact")]
            lines.append(f"| {o['scenario']} ({o['wall_s']:.0f} s) | {sacct_text(o['records'])} | "
                         f"{o.get('resumed_at', '-')} | {exact} |")  # fmt: skip
    return "\n".join(lines) + f"\n\ntier wall time: {outcomes['_wall_s']:.0f} s\n"


def outcome(tier, name: str) -> dict:
    if name not in tier:
        pytest.skip(tier.get("_skipped", "no SLURM test cluster"))
    o = tier[name]
    if isinstance(o, BaseException):
        raise o
    return o


# ------------------------------------------------------------------------------------------------ tests


#: SLURM records a cancelled step's exit code (75) only if the step ended before it closed the job's record
CANCELLED = (("CANCELLED", "0:0"), ("CANCELLED", "75:0"))


def test_warning_signal_saves_and_submitit_requeues_exactly(tier):
    o = outcome(tier, "warning")
    assert o["saved_by_usr2"] and o["requeued_by_submitit"] and o["exact"], o
    # the warned segment saved and exited 75 after submitit's requeue; the cancelled one too
    assert o["records"][0] == ("REQUEUED", "75:0") and o["records"][1] in CANCELLED, o["records"]
    assert o["launcher_exit"] == 130 and o["table"] and not o["traceback"] and o["one_checkpoint"]


def test_time_limit_without_signal_saves_despite_two_sigterms(tier):
    o = outcome(tier, "time_limit")
    # SLURM records a timed-out step as TIMEOUT 0:0 whatever it exited with; srun reports the 75
    assert o["records"][0] == ("TIMEOUT", "0:0") and o["double_sigterm"] and o["exact"], o


def test_scontrol_requeue_saves_and_the_job_continues_exactly(tier):
    o = outcome(tier, "requeue")
    assert o["records"] == [("REQUEUED", "75:0"), ("COMPLETED", "0:0")] and o["completed"] and o["exact"], o


def test_scancel_saves_and_a_new_job_continues_exactly(tier):
    o = outcome(tier, "scancel")
    assert o["records"][0] in CANCELLED and o["records"][1] == ("COMPLETED", "0:0"), o
    assert o["completed"] and o["exact"], o


def test_preemption_saves_and_slurm_requeues_it(tier):
    o = outcome(tier, "preemption")
    assert o["records"] == [("PREEMPTED", "75:0"), ("COMPLETED", "0:0")] and o["completed"] and o["exact"], o


def test_the_readme_sbatch_recipe_requeues_on_75_and_completes(tier):
    o = outcome(tier, "recipe")
    assert o["records"] == [("REQUEUED", "75:0"), ("COMPLETED", "0:0")] and o["one_log"] and o["exact"], o


def test_a_two_task_srun_job_without_submitit_trains_and_continues_exactly(tier):
    o = outcome(tier, "two_tasks")
    assert o["world_size"] == 2 and o["completed"] and o["exact"], o
    assert o["resumed_at"] % 10, o  # inside an evaluation interval: its training loss sums both processes
    assert o["records"] == [("REQUEUED", "75:0"), ("COMPLETED", "0:0")], o


def test_a_slurm_sweep_with_a_failed_job_ends_with_its_table(tier):
    o = outcome(tier, "sweep")
    assert o["sweep_exit"] == 1, o["output"][-3000:]
    assert o["rows"] == [
        ["| bn_x5/model.norm:ghost+trainer.deterministic:True+trainer.sync_bn:False/seed0", "completed"],
        ["| bn_x5/model.norm:ghost+trainer.deterministic:True+trainer.sync_bn:True/seed0", "no results.json"],
    ], o["rows"]
    assert sorted(o["records"]) == [("COMPLETED", "0:0"), ("FAILED", "1:0")]
    assert "1 of the sweep's runs did not complete" in o["output"] and "Traceback" not in o["output"]


def test_torchrun_jobs_continue_exactly_after_a_killed_worker_and_a_stopped_node(tier):
    o = outcome(tier, "torchrun")
    assert o["exact"] and o["completed"] and o["saved"] and o["resumed_twice"] and o["resumed_at"] % 10, o
    assert o["exits"] == ((1, 1), (1, 1), (0, 0)), o  # torchrun reports the workers' 75 (and a signal) as 1


def test_the_tier_table(tier, capsys):
    """The closing table (scenario, exit codes recorded, step resumed at, exact) and the wall time."""
    with capsys.disabled():
        print("\n" + table(tier))
