"""Speed-up against the baseline's budget, on fabricated run directories: known curves -> known ratios."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from bn_inception.evaluation.runlogs import load_runs
from bn_inception.evaluation.speedup import build_speedup_table, growth_slope, needed_slope
from tests.evaluation.sweep_fixtures import write_run

REPO = Path(__file__).resolve().parents[2]
INCEPTION_STEPS = tuple(range(1000, 16001, 1000))
BN_STEPS = tuple(range(250, 4001, 250))


@pytest.fixture
def sweep(tmp_path):
    # Inception climbs by 1 point per 1,000 steps (seed 1 half a point lower): its best within B is at B.
    for seed, offset in ((0, 0.0), (1, -0.5)):
        write_run(tmp_path, f"inception/seed{seed}", "inception", [50 + i + offset for i in range(16)],
                  seed=seed, steps=INCEPTION_STEPS)  # fmt: skip
        # BN-x5: 1 point per 250 steps, so it reaches Inception's target at B in B/4 steps (speed-up 4),
        # up to 65 at step 4,000: the 16,000-step target (65 / 64.5) is reached, nothing beyond.
        write_run(tmp_path, f"bn_x5/seed{seed}", "bn_x5", [50 + i for i in range(16)], seed=seed,
                  steps=BN_STEPS)  # fmt: skip
    # BN-x30: seed 0 reaches every target in B/8 steps; seed 1 stops at 55 (step 1,000 of 1,000).
    write_run(tmp_path, "bn_x30/seed0", "bn_x30", [50 + 2 * i for i in range(16)], seed=0, steps=BN_STEPS)
    write_run(tmp_path, "bn_x30/seed1", "bn_x30", [52, 53, 54, 55], seed=1, steps=BN_STEPS)
    return tmp_path


def test_known_curves_give_known_speedups_and_bounds(sweep):
    table = build_speedup_table(load_runs(sweep), [2000, 4000, 8000, 16000, 32000])
    assert table.variants == ("bn_x5", "bn_x30")
    assert table.targets[8000] == [57.0, 56.5] and table.baseline_steps[8000] == [8000, 8000]
    # BN-x5 reaches 57 (and 56.5) at its 8th evaluation, step 2,000: a quarter of Inception's 8,000.
    x5 = table.cell("bn_x5", 8000)
    assert [s.steps for s in x5.seeds] == [2000, 2000]
    assert x5.mean == 4.0 and x5.std == 0.0
    # BN-x30 seed 1 never reaches 58.5/59 (B = 16,000): only a bound, < 16000 / 1000.
    x30 = table.cell("bn_x30", 16000)
    assert [s.steps for s in x30.seeds] == [2250, None]  # 50 + 2 * 8 >= 65 at the 9th evaluation
    assert x30.seeds[1].upper_bound == 16.0 and x30.reached == [16000 / 2250]
    # A run still training has not failed to reach it yet: no bound, and the table says so.
    running = build_speedup_table(load_runs(sweep), [16000])
    assert running.cell("bn_x30", 16000).seeds[1].upper_bound == 16.0
    results = sweep / "bn_x30/seed1/results.json"
    results.write_text(results.read_text().replace('"status": "completed"', '"status": "running"'))
    pending = build_speedup_table(load_runs(sweep), [16000]).cell("bn_x30", 16000).seeds[1]
    assert pending.steps is None and pending.upper_bound is None
    # Beyond Inception's 16,000 steps the budget is not covered: no cells with seeds.
    assert table.targets[32000] == [] and table.cell("bn_x5", 32000).seeds == ()


def test_growth_slope_is_zero_for_a_constant_ratio_and_one_for_a_constant_step(tmp_path):
    steps = tuple(range(1000, 8001, 1000))
    write_run(tmp_path, "inception/seed0", "inception", [50 + i for i in range(8)], steps=steps)
    # bn_x5 reaches every Inception target at B/4 (ratio 4 everywhere); bn_x30 reaches them all at step 500.
    write_run(
        tmp_path, "bn_x5/seed0", "bn_x5", [50 + i for i in range(8)], steps=tuple(range(250, 2001, 250))
    )
    write_run(tmp_path, "bn_x30/seed0", "bn_x30", [40, 70], steps=(250, 500))
    table = build_speedup_table(load_runs(tmp_path), [1000, 2000, 4000, 8000])
    assert [table.cell("bn_x5", b).mean for b in table.budgets] == [4.0, 4.0, 4.0, 4.0]
    assert growth_slope(table, "bn_x5") == pytest.approx(0.0, abs=1e-9)
    assert growth_slope(table, "bn_x30") == pytest.approx(1.0)
    # From 4x at 8,000 steps to the paper's 31.0 / 2.1 at 31e6 steps.
    expected = math.log((31.0 / 2.1) / 4.0) / math.log(31e6 / 8000)
    assert needed_slope(table, "bn_x5") == pytest.approx(expected)


def test_report_script_writes_the_table_figure_and_per_seed_rows(sweep):
    proc = subprocess.run([sys.executable, str(REPO / "scripts/report_speedup.py"), str(sweep)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = (sweep / "report.md").read_text()
    assert (sweep / "speedup.png").stat().st_size > 0 and (sweep / "speedup.svg").exists()
    # Budgets 2k, 4k, 8k, 16k (doubling up to Inception's length); BN-x30 at 16k: 1 of 2 seeds.
    assert "| 16,000 | 64.75 ± 0.35 | 16,000 | 4.00 ± 0.00 [4.00-4.00] (2/2) | 7.11 (1/2) |" in report
    assert "| BN-x30 | 16,000 | 1 | 64.50 | 16,000 | never (ran 1,000) | < 16.00 |" in report


def test_report_script_without_an_inception_run_is_one_line(tmp_path):
    write_run(tmp_path, "bn_x5/seed0", "bn_x5", [50.0], steps=(250,))
    proc = subprocess.run([sys.executable, str(REPO / "scripts/report_speedup.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == f"error: no evaluated inception run under {tmp_path}; the speed-up needs one\n"


def write_rung(root: Path, experiment: str, mult: float, seed: int, top1: list[float], **kw) -> None:
    run = write_run(root, f"{experiment}/x{mult:g}/seed{seed}", experiment, top1, seed=seed,
                    steps=(250, 500, 1000, 1500), **kw)  # fmt: skip
    (run / ".hydra").mkdir()
    (run / ".hydra/config.yaml").write_text(f"optim:\n  base_lr: 0.0015\n  lr_mult: {mult}\n  lr: null\n")


def test_ladder_rows_failures_and_the_best_early_rate(tmp_path):
    from bn_inception.evaluation.ladder import (
        best_rate,
        build_ladder,
        divergence_threshold,
        ladder_markdown,
    )

    for seed in (0, 1):
        write_rung(tmp_path, "bn_x5", 5, seed, [60, 70, 80, 85])
        write_rung(tmp_path, "bn_x5", 30, seed, [65 + seed, 75, 82, 86])
        write_rung(tmp_path, "bn_x5", 300, seed, [40, 50, 70, 80])
        write_rung(tmp_path, "inception", 5, seed, [50, 60, 70, 75])
        write_rung(
            tmp_path,
            "inception",
            30,
            seed,
            [10, 10.5, 9.8, 10],
        )  # stays at chance
    write_rung(tmp_path, "inception", 100, 0, [20], status="diverged", diverged_at_step=400)
    rungs = build_ladder(load_runs(tmp_path))
    assert [(r.experiment, r.lr_mult, len(r.runs)) for r in rungs] == [
        ("inception", 5.0, 2), ("inception", 30.0, 2), ("inception", 100.0, 1),
        ("bn_x5", 5.0, 2), ("bn_x5", 30.0, 2), ("bn_x5", 300.0, 2),
    ]  # fmt: skip
    assert best_rate(rungs, "bn_x5", 250) == 30.0 and best_rate(rungs, "bn_x5", 1500) == 30.0
    assert divergence_threshold(rungs, "inception") == 30.0  # at chance counts as failing
    assert divergence_threshold(rungs, "bn_x5") is None
    table = ladder_markdown(rungs, [250, 1500])
    assert "| BN-x5 | 30x | 2 | 65.5 ± 0.7 | 86.0 ± 0.0 | 86.0 ± 0.0 | 0/2 | 0/2 |" in table
    assert "| Inception | 30x | 2 | 10.0 ± 0.0 | 10.0 ± 0.0 | 10.5 ± 0.0 | 0/2 | 2/2 |" in table
    assert "| Inception | 100x | 1 | 20.0 | – | 20.0 | 1/1 | 0/1 |" in table
