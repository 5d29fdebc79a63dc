"""The table a multirun ends with: one row per run of the sweep, from the runs' ``results.json``.

Printed by ``train.py -m`` when the sweep ends (its sweeper, ``hydra_plugins/bn_inception_sweeps.py``) and
written to ``<sweep dir>/sweep_summary.md``; ``python scripts/report.py <sweep dir>`` then makes the
paper's Table 2 and figures. Reads JSON only (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

COLUMNS = ("run", "status", "steps", "best top-1 (%)", "final top-1 (%)", "steps to target", "img/s", "wall")


def sweep_rows(sweep_dir: Path, run_dirs: Iterable[Path] = ()) -> list[list[str]]:
    """One row per ``results.json`` under ``sweep_dir``, named by its run directory; and one per directory
    of ``run_dirs`` (the sweep's jobs) that has none: a job that failed or stopped before writing it."""
    missing = {Path(d) for d in run_dirs if not (Path(d) / "results.json").exists()}
    rows = [[_relative(d, sweep_dir), "no results.json", *["-"] * 6] for d in missing]
    for path in sorted(sweep_dir.rglob("results.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            rows.append([_relative(path.parent, sweep_dir), "unreadable", *["-"] * 6])
            continue
        status, target, wall = r.get("status", "?"), r.get("steps_to_target"), r.get("wall_s")
        wall = int(wall) if wall is not None else None
        rows.append(
            [
                _relative(path.parent, sweep_dir),
                f"diverged at {r.get('diverged_at_step')}" if status == "diverged" else status,
                str(r.get("steps", "-")),
                _number(r.get("best_top1")),
                _number(r.get("final_top1")),
                str(target) if target is not None else ("never" if r.get("target_top1") is not None else "-"),
                _number(r.get("img_per_s"), 0),
                "-" if wall is None else f"{wall // 3600}:{wall % 3600 // 60:02d}:{wall % 60:02d}",
            ]
        )
    return sorted(rows)


def sweep_markdown(rows: list[list[str]]) -> str:
    out = [f"| {' | '.join(COLUMNS)} |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(out) + "\n"


def sweep_text(rows: list[list[str]]) -> str:
    """The same table, fixed-width, for the console."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(COLUMNS)]

    def line(values: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            f"{v:<{w}}" if i < 2 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(COLUMNS), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _number(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
