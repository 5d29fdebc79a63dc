"""The learning-rate ladders (scripts/analysis/ladder.py), on fabricated run directories."""

from pathlib import Path

from bn_inception.report.runlogs import load_runs
from scripts.analysis.ladder import best_rate, build_ladder, divergence_threshold, ladder_markdown
from tests.report.sweep_fixtures import write_run


def write_rung(root: Path, experiment: str, mult: float, seed: int, top1: list[float], **kw) -> None:
    run = write_run(root, f"{experiment}/x{mult:g}/seed{seed}", experiment, top1, seed=seed,
                    steps=(250, 500, 1000, 1500), **kw)  # fmt: skip
    (run / ".hydra").mkdir()
    (run / ".hydra/config.yaml").write_text(f"optim:\n  base_lr: 0.0015\n  lr_mult: {mult}\n  lr: null\n")


def test_ladder_rows_failures_and_the_best_early_rate(tmp_path):
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
