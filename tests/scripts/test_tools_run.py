"""Benchmarks and scripts cannot rot: each ``benchmarks/*.py`` runs here with a smoke setting (tiny sizes,
seconds; its figures mean nothing) as a user types it, to its table and the end of its process, and each
``scripts/*.py`` is run by the test named below. A new file without a smoke setting fails this module.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import REPO, run
from tests.engine.conftest import needs_fashion

STAND_IN = """import sys, timm
model = timm.create_model(sys.argv[1])  # registered by the launcher, as timm's train.py would find it
print("stand-in built", type(model).__name__)
"""

#: benchmarks/<file>: (arguments, a line fragment of the table it prints); ``{tmp}`` is a scratch folder.
BENCHMARKS = {
    "data_throughput.py": [
        ("--images 16 --batches 2 --repeats 1 --input-size 32 --batch-size 4 --workers 1 "
         "--data-dir {tmp}/jpegs --skip-fashion-mnist", "| ours (full) |"),
    ],
    "eval_throughput.py": [
        ("--model bn_inception_small --input-size 32 --images 8 --members 2 --batch-size 4 --repeats 1",
         "ratio t(ens2) / (2 t_model + t_decode)"),
    ],
    "imagenet_scale.py": [
        ("--scratch {tmp}/scale --classes 4 --train 256 --val 8 --sources 2 --workers 1 --smoke",
         "| this checkout | warm |"),
    ],
    "model_step_time.py": [("--steps 1 --warmup 1 --repeats 1", "ms/step")],
    "timm_train_launcher.py": [("{tmp}/stand_in.py bn_inception_small", "stand-in built BNInception")],
    "train_throughput.py": [
        ("--steps 2 --warmup 1 --repeats 1", "| ratio train.py / bare fed by the loader"),
        ("--device cpu --modes synthetic,pipeline --model bn_inception_small --input-size 32 --classes 4 "
         "--images 32 --batch 4 --steps 2 --warmup 2 --workers 1", "| (b) train() from JPEG files"),
    ],
}  # fmt: skip

#: benchmarks/<file> run by a test module of their own (GPU checks: a CPU dry run).
BENCHMARKS_ELSEWHERE = {"gpu_check.py": "tests/test_gpu_check.py"}

#: scripts/<file>: the test module that runs it.
SCRIPTS = {
    "convert_caffe_bninception.py": "tests/models/test_caffe_port.py",
    "describe_models.py": "tests/models/test_figure5.py",
    "make_synthetic_imagenet.py": "tests/data/test_synthetic.py",
    "prepare_imagenet.py": "tests/e2e/test_user_paths.py",
    "report.py": "tests/e2e/test_user_paths.py",
    "report_ensemble.py": "tests/scripts/analysis/test_ensemble_report.py",
    "report_ladder.py": "tests/e2e/test_user_paths.py",
    "report_speedup.py": "tests/scripts/analysis/test_speedup.py",
    "timm_run.py": "tests/scripts/test_timm_run.py",
}


def test_every_benchmark_and_script_has_a_smoke_setting_the_suite_runs():
    benchmarks = {**BENCHMARKS, **BENCHMARKS_ELSEWHERE}
    assert sorted(p.name for p in (REPO / "benchmarks").glob("*.py")) == sorted(benchmarks)
    assert sorted(p.name for p in (REPO / "scripts").glob("*.py")) == sorted(SCRIPTS)
    for script, test in {**SCRIPTS, **BENCHMARKS_ELSEWHERE}.items():
        assert script.removesuffix(".py") in (REPO / test).read_text(), f"{test} does not run {script}"


def _marks(name: str, args: str) -> list:
    fashion = name == "train_throughput.py" and "--modes" not in args  # its CPU default: Fashion-MNIST
    return [needs_fashion] if fashion else []


CASES = [
    pytest.param(name, args, shows, marks=_marks(name, args), id=f"{name}-{k}")
    for name, settings in BENCHMARKS.items()
    for k, (args, shows) in enumerate(settings)
]


@pytest.mark.parametrize(("name", "args", "shows"), CASES)
def test_a_benchmark_runs_its_smoke_setting_to_its_table(name, args, shows, cli_env, tmp_path):
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    env = {**cli_env, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # generated trees go here, not ~/.cache
    command = ["python", f"benchmarks/{name}", *args.format(tmp=tmp_path).split()]
    ended = run(command, env, timeout=300).check(0)
    assert shows in ended.output, ended.tail()
