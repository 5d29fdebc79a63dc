"""Steps to target paired by seed (table2.paired_speedup): fabricated runs with known answers."""

import math

import numpy as np
import pytest

from bn_inception.report.runlogs import load_runs
from bn_inception.report.table2 import build_table2, paired_speedup, table2_markdown, table_row
from tests.report.sweep_fixtures import write_run

BUDGETS = (2000, 4000, 8000, 16000)
BASE_GRID = tuple(range(250, 16001, 250))
VARIANT_GRID = tuple(range(150, 8001, 150))  # not aligned with B/4: a first-evaluation rule would bias it


def curve(steps, speedup=1.0, noise=0.0, rng=None):
    """A concave learning curve (percent) of a network `speedup` times faster than the baseline: 7 points
    per doubling of the steps, still rising at 16,000 steps as our Inception runs are."""
    clean = 40.0 + 7.0 * np.log2(speedup * np.asarray(steps, dtype=float) / 250.0)
    return list(clean + (rng.normal(0.0, noise, len(clean)) if noise else 0.0))


def write_pair(root, seed, speedup, noise=0.0, rng=None):
    write_run(root, f"inception/seed{seed}", "inception", curve(BASE_GRID, 1.0, noise, rng), seed=seed,
              steps=BASE_GRID)  # fmt: skip
    write_run(root, f"bn_x5/seed{seed}", "bn_x5", curve(VARIANT_GRID, speedup, noise, rng), seed=seed,
              steps=VARIANT_GRID)  # fmt: skip


def test_a_constant_true_speedup_comes_out_constant_on_a_misaligned_grid(tmp_path):
    for seed in range(3):
        write_pair(tmp_path, seed, 4.0)
    runs = load_runs(tmp_path)
    for budget in BUDGETS:
        p = paired_speedup(runs, "inception", "bn_x5", budget)
        assert [s.kind for s in p.seeds] == ["crossed"] * 3 and p.bound == ""
        # The chord under a concave curve crosses a little late: within 1% of the true 4.
        assert p.mean == pytest.approx(4.0, rel=0.01)
        for s in p.seeds:
            low, high = s.grid_range
            assert low <= 4.0 < high and s.baseline_steps == budget
    # The first evaluation at or above the target would have said 2000/600 = 3.33x at B = 2,000.
    assert paired_speedup(runs, "inception", "bn_x5", 2000).seeds[0].high == 600


@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_with_seed_noise_a_constant_speedup_comes_out_constant_within_the_intervals(tmp_path, noise_seed):
    # 5 seeds, 1 point of evaluation noise (about our runs' seed spread), a true 4x at every budget: every
    # budget's interval holds the estimate pooled over budgets, so no growth is read into it. The target
    # is the baseline's noisy best, which the variant reaches a little late: a bias of a few percent low.
    rng = np.random.default_rng(noise_seed)
    for seed in range(5):
        write_pair(tmp_path, seed, 4.0, noise=1.0, rng=rng)
    runs = load_runs(tmp_path)
    cells = {budget: paired_speedup(runs, "inception", "bn_x5", budget) for budget in BUDGETS}
    pooled = math.exp(np.mean([math.log(p.mean) for p in cells.values()]))
    for budget, p in cells.items():
        low, high = p.interval()
        assert low <= pooled <= high and 3.4 < p.mean < 4.2, (budget, low, p.mean, high, pooled)


def test_grid_limited_crossings_come_out_as_bounds(tmp_path):
    # Seed 0: above the target at its first evaluation (step 150); seed 1 never reaches it.
    write_run(tmp_path, "inception/seed0", "inception", [50, 60, 70], seed=0, steps=(1000, 2000, 3000))
    write_run(tmp_path, "inception/seed1", "inception", [50, 60, 70], seed=1, steps=(1000, 2000, 3000))
    write_run(tmp_path, "bn_x30/seed0", "bn_x30", [72, 80], seed=0, steps=(150, 300))
    write_run(tmp_path, "bn_x30/seed1", "bn_x30", [50, 65], seed=1, steps=(150, 300))
    runs = load_runs(tmp_path)
    p = paired_speedup(runs, "inception", "bn_x30")
    first, never = p.seeds
    assert (first.bound, first.value) == (">=", 3000 / 150) and first.low == 0
    assert (never.bound, never.value, never.high) == ("<", 3000 / 300, math.inf)
    assert first.text() == "<= 150 (first evaluation): >= 20.00x"
    assert never.text() == "never (ran 300): < 10.00x"
    assert p.bound is None  # bounds both ways: no mean is claimed
    only_first = paired_speedup([r for r in runs if r.seed == 0], "inception", "bn_x30")
    assert only_first.bound == ">=" and only_first.interval() is None


def test_table2_shows_the_paired_speedup_next_to_the_pooled_one(tmp_path):
    # Seed targets 70 and 60 (a pooled 65 is reached only by seed 0); BN-x5 crosses each halfway.
    write_run(tmp_path, "inception/seed0", "inception", [50, 60, 70], seed=0, steps=(1000, 2000, 3000))
    write_run(tmp_path, "inception/seed1", "inception", [50, 55, 60], seed=1, steps=(1000, 2000, 3000))
    write_run(tmp_path, "bn_x5/seed0", "bn_x5", [60, 80], seed=0, steps=(500, 1000))
    write_run(tmp_path, "bn_x5/seed1", "bn_x5", [50, 70], seed=1, steps=(500, 1000))
    table = build_table2(load_runs(tmp_path))
    paired = table_row(table, "bn_x5")["paired_speedup"]
    # Seed 0: 70 crossed at 750 (3000/750 = 4); seed 1: 60 crossed at 750 (3000/750 = 4).
    assert [s.steps for s in paired.seeds] == [750.0, 750.0]
    assert paired.mean == pytest.approx(4.0) and paired.interval() == pytest.approx((4.0, 4.0))
    text = table2_markdown(table)
    assert "| 4.00x [4.00, 4.00] (2 seeds) |" in text
    assert "| BN-x5 | 1 | 60.00 | 3,000 | 750 (500-1,000]: 4.00x [3.00, 6.00) |" in text
