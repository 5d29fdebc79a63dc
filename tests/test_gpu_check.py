"""benchmarks/gpu_check.py, the one command to run when a GPU is lent (issue 23), in its CPU dry run: every
step it will run on the GPU runs here at tiny sizes (train.py in each precision mode, the host-sync probe,
the device decode path against the CPU decode, evaluate.py with 1 and 10 crops, a resume, torchrun with 2
processes, the throughput benchmark), so the GPU's minutes are not spent finding a broken command."""

from __future__ import annotations

import subprocess

STEPS = {
    "env": "PASS", "data": "PASS", "syncs": "PASS", "fp32": "PASS", "bf16": "PASS", "channels-last": "PASS",
    "decode-pixels": "PASS", "decode-train": "SKIP", "evaluate": "PASS", "resume": "PASS", "compile": "SKIP",
    "ddp": "PASS", "throughput": "PASS", "throughput-gpu-decode": "SKIP",
}  # fmt: skip


def test_the_gpu_check_dry_run_runs_every_step(repo, python, cli_env, tmp_path):
    cli_env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the throughput benchmark's generated tree
    cmd = [python, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path / "out"), "--budget", "1200"]
    proc = subprocess.run(cmd, cwd=repo, env=cli_env, capture_output=True, text=True, timeout=1260)
    verdicts = {
        line.split()[1]: line.split()[0]
        for line in proc.stdout.splitlines()
        if line.startswith(("PASS ", "FAIL ", "SKIP "))
    }
    assert verdicts == STEPS, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0 and "| (b) train() from JPEG files (full pipeline) |" in proc.stdout
    assert (
        "0 syncs on plain steps" in proc.stdout
        and "2 process(es)" in (tmp_path / "out" / "ddp.log").read_text()
    )
