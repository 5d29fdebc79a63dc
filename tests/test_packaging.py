"""The package as a user installs it: a wheel built by pip, installed in a fresh virtual environment (with the
torch already installed: its dependencies' ranges must accept the tested lock, requirements.txt), then
``bn-train`` and ``bn-evaluate`` run from a folder that is not a checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.engine.conftest import needs_fashion


def run(*argv: str | Path, cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    argv = [str(a) for a in argv]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert not check or proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@needs_fashion
def test_a_wheel_in_a_fresh_venv_trains_and_evaluates_from_any_folder(tmp_path, repo, cli_env):
    env = {k: v for k, v in cli_env.items() if k != "PYTHONPATH"}  # nothing of the checkout importable
    source = tmp_path / "source"  # a copy: the build's own build/ folder stays out of the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("bn_inception", "hydra_plugins"):
        shutil.copytree(repo / part, source / part, ignore=ignore)
    shutil.copy(repo / "pyproject.toml", source)
    pip = [sys.executable, "-m", "pip", "-q"]
    wheel_dir = tmp_path / "dist"
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheel_dir, source, cwd=tmp_path, env=env)
    (wheel,) = (tmp_path / "dist").glob("bn_inception-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (repo / "bn_inception" / "configs").rglob("*.yaml"):  # every experiment, dataset, launcher
        assert path.relative_to(repo).as_posix() in names, path
    assert {"hydra_plugins/bn_inception_sweeps.py", "hydra_plugins/bn_inception_gpus.py"} <= names

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=tmp_path, env=env)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    # no index: every dependency must be satisfied by what is installed (the lock) within pyproject's ranges
    run(python, "-m", "pip", "install", "--no-index", "-q", wheel, cwd=tmp_path, env=env)
    home = tmp_path / "elsewhere"
    home.mkdir()
    where = run(python, "-c", "import bn_inception; print(bn_inception.__file__)", cwd=home, env=env).stdout
    assert where.startswith(str(venv))

    helped = run(bin_dir / "bn-train", "--help", cwd=home, env=env).stdout
    assert "bn_x5_sigmoid" in helped and "imagenet_subset" in helped
    assert "checkpoints=PATH" in run(bin_dir / "bn-evaluate", "--help", cwd=home, env=env).stdout
    # the plugins come from the wheel: the local_gpus launcher answers (no GPU here)
    gpus = ["-m", "hydra/launcher=local_gpus", "seed=0,1"]
    refused = run(bin_dir / "bn-train", *gpus, cwd=home, env=env, check=False)
    assert refused.returncode == 2 and "error: hydra/launcher=local_gpus found no GPU" in refused.stderr

    tiny = ["trainer.max_steps=2", "trainer.eval_every=2", "trainer.eval_limit=32", "trainer.progress=false"]
    trained = run(bin_dir / "bn-train", *tiny, "data.workers=0", cwd=home, env=env)
    results = json.loads((home / "runs" / "bn_x5" / "seed0" / "results.json").read_text())
    assert results["status"] == "completed" and results["steps"] == 2
    printed = trained.stdout + trained.stderr
    assert "evaluate:    bn-evaluate checkpoints=" in printed  # the printed command is the installed one
    evaluated = run(bin_dir / "bn-evaluate", "checkpoints=runs/bn_x5/seed0", "images=32", cwd=home, env=env)
    assert "bn_x5/seed0" in evaluated.stdout
