"""Fabricated run directories in the docs/design.md format: results.json plus real TensorBoard event files."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

STEPS = tuple(range(100, 1001, 100))


def write_run(
    root: Path,
    rel: str,
    experiment: str,
    top1: list[float],
    *,
    seed: int = 0,
    name: str | None = None,
    status: str = "completed",
    diverged_at_step: int | None = None,
    steps: tuple[int, ...] = STEPS,
    act: dict[str, dict[str, list[float]]] | None = None,
    norm: str | None = None,
) -> Path:
    """One run dir: evals at `steps[:len(top1)]`; `act` = {probe: {"p15"|"p50"|"p85": values per step}}."""
    run_dir = root / rel
    run_dir.mkdir(parents=True)
    evals = [
        {"step": s, "top1": v, "top5": min(100.0, v + 20), "train_loss": 1.0}
        for s, v in zip(steps, top1, strict=False)
    ]
    best = max(top1) if top1 else None
    results = {
        "name": name or experiment,
        "experiment": experiment,
        "seed": seed,
        "status": status,
        "diverged_at_step": diverged_at_step,
        "steps": diverged_at_step or (evals[-1]["step"] if evals else 0),
        "best_top1": best,
        "best_step": evals[top1.index(best)]["step"] if evals else None,
        "final_top1": top1[-1] if top1 else None,
        "final_top5": None,
        "final_train_loss": 1.0,
        "target_top1": None,
        "steps_to_target": None,
        "img_per_s": 1000.0,
        "wall_s": 10.0,
        "skipped_images": 0,
        "config_digest": "sha256:0",
        "evals": evals,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    writer = SummaryWriter(log_dir=str(run_dir))
    for e in evals:
        writer.add_scalar("val/top1", e["top1"], e["step"])
    for probe, stats in (act or {}).items():
        for stat, values in stats.items():
            for step, value in zip(steps, values, strict=False):
                writer.add_scalar(f"act/{probe}/{stat}", value, step)
    writer.close()
    if norm is not None:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(
            f"name: {name}\nmodel:\n  name: bn_mlp\n  norm: {norm}\n"
        )
    return run_dir


def mnist_act(drift: float) -> dict[str, dict[str, list[float]]]:
    """hidden1..hidden3 percentiles; the last layer's median moves by `drift` per step."""
    probes = {}
    for layer in (1, 2, 3):
        p50 = [layer * 0.1 + drift * i for i in range(len(STEPS))]
        probes[f"hidden{layer}"] = {
            "p15": [v - 1.0 for v in p50],
            "p50": p50,
            "p85": [v + 1.0 for v in p50],
        }
    return probes


def write_sweep(root: Path) -> Path:
    """The sweep the tests know the answers for (see test_report.py for the expected numbers)."""
    write_run(root, "inception/seed0", "inception", [5, 10, 20, 30, 40, 50, 55, 58, 60, 60])
    write_run(root, "bn_baseline/seed0", "bn_baseline", [10, 30, 45, 55, 60, 62, 63, 63, 63, 63])
    for seed, reach in enumerate((2, 3, 4)):  # reach 60 at steps 200, 300, 400; bests 70, 71, 72
        curve = [50.0] * (reach - 1) + [60.0] * (10 - reach) + [70.0 + seed]
        write_run(root, f"bn_x5/seed{seed}", "bn_x5", curve, seed=seed)
    write_run(
        root, "bn_x30/seed0", "bn_x30", [20, 40], status="diverged", diverged_at_step=250
    )  # diverged before reaching 60
    write_run(root, "bn_x5_sigmoid/seed0", "bn_x5_sigmoid", [10, 20, 30, 40, 50, 55, 55, 55, 55, 55])
    write_run(root, "ensemble_m1/seed0", "ensemble_m1", [30, 40, 50, 55, 58, 61, 61, 61, 61, 61])
    write_run(root, "ensemble_m1/seed1", "ensemble_m1", [30, 40, 50, 50, 50, 50, 50, 50, 50, 50], seed=1)
    write_mnist(root)
    return root


def write_mnist(root: Path) -> None:
    no_bn = [80, 85, 88, 90, 91, 92, 92, 93, 93, 93]
    with_bn = [90, 93, 95, 96, 97, 97, 97, 98, 98, 98]
    for name, norm, curve, drift in (
        ("mnist_figure1_none", "none", no_bn, 0.5),
        ("mnist_figure1_batch", "batch", with_bn, 0.0),
    ):
        write_run(root, f"{name}/seed0", "mnist_figure1", curve, name=name, norm=norm, act=mnist_act(drift))
