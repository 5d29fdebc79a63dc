"""The budget study (scripts/analysis/speedup.py, scripts/report_speedup.py) on fabricated runs: known
curves give known speed-ups, and the same-rate control splits BN-x5's speed-up into two factors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bn_inception.report.runlogs import load_runs
from scripts.analysis.speedup import SAME_RATE, build_study
from tests.report.sweep_fixtures import write_run

REPO = Path(__file__).resolve().parents[3]
BASE_GRID = tuple(range(250, 8001, 250))
BN_GRID = tuple(range(125, 4001, 125))


def curve(steps, speedup):
    """7 points per doubling of the steps; `speedup` times faster than the baseline."""
    return list(40.0 + 7.0 * np.log2(speedup * np.asarray(steps, dtype=float) / 250.0))


@pytest.fixture
def sweep(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, f"inception/seed{seed}", "inception", curve(BASE_GRID, 1), seed=seed,
                  steps=BASE_GRID)  # fmt: skip
        write_run(tmp_path, f"inception_x5/seed{seed}", "inception_x5", curve(BASE_GRID, 2), seed=seed,
                  steps=BASE_GRID)  # fmt: skip
        write_run(tmp_path, f"bn_x5/seed{seed}", "bn_x5", curve(BN_GRID, 8), seed=seed, steps=BN_GRID)
    # BN-x30 seed 0 is above every target at its first evaluation: only bounds.
    write_run(tmp_path, "bn_x30/seed0", "bn_x30", [99.0, 99.5], seed=0, steps=(125, 250))
    return tmp_path


def test_the_same_rate_control_splits_the_speedup_into_two_factors(sweep):
    study = build_study(load_runs(sweep), [2000, 4000, 8000, 16000])
    total, rate = "BN-x5 vs Inception", "Inception, 5x lr (no BN) vs Inception"
    assert study.labels == (total, "BN-x30 vs Inception", rate, SAME_RATE)
    for b in (2000, 4000, 8000):
        t, r, same = (study.cells[(label, b)] for label in (total, rate, SAME_RATE))
        assert t.mean == pytest.approx(8.0, rel=0.01) and r.mean == pytest.approx(2.0, rel=0.01)
        assert same.mean == pytest.approx(t.mean / r.mean) and same.bound == ""
    x30 = study.cells[("BN-x30 vs Inception", 8000)]
    assert x30.bound == ">=" and x30.text(seeds_word=False) == ">= 64.00x (1, 1 a bound)"
    # Beyond Inception's 8,000 steps nothing is covered; growth compares 2,000 with 8,000.
    assert study.targets[16000] == [] and study.cells[(total, 16000)].seeds == ()
    assert study.growth(total).mean == pytest.approx(1.0, abs=0.01)


def test_report_script_writes_the_table_figure_and_per_seed_lines(sweep):
    proc = subprocess.run([sys.executable, str(REPO / "scripts/report_speedup.py"), str(sweep)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = (sweep / "report.md").read_text()
    assert (sweep / "speedup.png").stat().st_size > 0 and (sweep / "speedup.svg").exists()
    # Budgets 2k, 4k, 8k (doubling up to Inception's length), every comparison a column.
    assert "| budget B (steps) | Inception target (%) | BN-x5 vs Inception |" in report
    assert "| 8,000 | 75.00 ± 0.00 | 8.00x [8.00, 8.00] (2) |" in report
    assert "- BN-x30 vs Inception, B = 2,000, seed 0: <= 125 (first evaluation): >= 16.00x" in report
    assert "- BN at the same rate: BN-x5 vs Inception, 5x lr (no BN): 1.00x [1.00, 1.00] (2)" in report


def test_report_script_without_an_inception_run_is_one_line(tmp_path):
    write_run(tmp_path, "bn_x5/seed0", "bn_x5", [50.0], steps=(250,))
    proc = subprocess.run([sys.executable, str(REPO / "scripts/report_speedup.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == f"error: no evaluated inception run under {tmp_path}; the speed-up needs one\n"
