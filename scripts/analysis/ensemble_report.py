"""The ensemble experiment's report (scripts/reproduce_ensemble.sh): evaluate.py's JSON tables, one per crop
setting, read back into the paper's Figure 4 form with the paper's rows beside ours.

Hand-written because it only rearranges evaluate.py's own output (no library reads that format):
- ``ours_vs_paper``: the paper's three BN-Inception rows (single crop, multicrop, ensemble) next to ours:
  our best single member (lowest 1-crop top-1 error on all images) with 1 crop, the same member with 144
  crops, and the ensemble with 144 crops; 144-crop rows are on the images evaluate.py was limited to.
- ``by_crops``: every member and the ensemble (rows) at every crop setting (columns), top-1 error.
- the ensemble's gain over its best member per setting, with evaluate.py's paired bootstrap interval.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bn_inception.evaluation import paper
from bn_inception.evaluation.runlogs import ReportError

ENSEMBLE = "ensemble"  # evaluate.py's row name for the as-trained ensemble
NEAR_ZERO = 2.0  # percent: a top-5 error below this on 10 classes says nothing about the networks


@dataclass(frozen=True)
class Setting:
    """One evaluate.py output: a crop count on a number of images."""

    name: str  # the JSON's file stem, e.g. crops144_first1000
    crops: int
    images: int
    rows: dict[str, dict[str, Any]]  # row name -> evaluate.py's row (top1_err, top1_err_ci, ...)
    gain: dict[str, Any] | None  # evaluate.py's ensemble_gains entry for "ensemble"
    command: str

    @property
    def label(self) -> str:
        return f"{self.crops} crop{'s' if self.crops > 1 else ''}, {self.images:,} images"


def load_settings(eval_dir: Path) -> list[Setting]:
    """Every evaluate.py JSON in ``eval_dir``, ordered by images (most first), then crops."""
    settings = []
    for path in sorted(eval_dir.glob("*.json")):
        try:
            table = json.loads(path.read_text())
            rows = {r["name"]: r for r in table["rows"] if not r["name"].endswith("[pop]")}
            gains = {g["ensemble"]: g for g in table.get("ensemble_gains", [])}
            crops, images = int(table["crops"]), int(table["data"]["images"])
            command = str(table.get("command", ""))
            settings.append(Setting(path.stem, crops, images, rows, gains.get(ENSEMBLE), command))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReportError(f"{path} is not an evaluate.py table ({e}); delete it and re-run") from e
    if not settings:
        raise ReportError(f"no evaluate.py tables (*.json) in {eval_dir}; run scripts/reproduce_ensemble.sh")
    return sorted(settings, key=lambda s: (-s.images, s.crops))


def _err(row: dict[str, Any] | None, key: str = "top1_err") -> str:
    if row is None:
        return "–"
    low, high = row.get(f"{key}_ci") or (None, None)
    if low is None or high is None:
        return f"{row[key]:.2f}"
    return f"{row[key]:.2f} [{low:.2f}, {high:.2f}]"


def _members(settings: list[Setting]) -> list[str]:
    names = {name for s in settings for name in s.rows if name != ENSEMBLE}
    return sorted(names)


def best_member(settings: list[Setting]) -> str | None:
    """The member with the lowest 1-crop top-1 error on the most images (the paper's "single crop" row)."""
    one = [s for s in settings if s.crops == 1]
    if not one:
        return None
    rows = {name: row for name, row in one[0].rows.items() if name != ENSEMBLE}
    return min(rows, key=lambda name: rows[name]["top1_err"]) if rows else None


def _setting(settings: list[Setting], crops: int) -> Setting | None:
    return next((s for s in settings if s.crops == crops), None)


def ours_vs_paper(settings: list[Setting]) -> str:
    """The paper's BN-Inception rows of Figure 4 and ours side by side (top-1 / top-5 error, %)."""
    best = best_member(settings)
    single, multi = _setting(settings, 1), _setting(settings, 144)
    published = {r.model: r for r in paper.FIGURE4}
    lines = [
        "| row | paper: crops | paper: models | paper: top-1 / top-5 error (%) | ours: crops | "
        "ours: models | ours: images | ours: top-1 error (%) | ours: top-5 error (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, setting, name in (
        ("BN-Inception single crop", single, best),
        ("BN-Inception multicrop", multi, best),
        ("BN-Inception ensemble", multi, ENSEMBLE),
    ):
        p = published[label]
        row = setting.rows.get(name) if setting and name else None
        ours = ["–"] * 5
        if row:
            ours = [str(setting.crops), str(len(row["checkpoints"])), f"{setting.images:,}", _err(row)]
            ours.append(_err(row, "top5_err"))
        theirs = f"{p.top1_err if p.top1_err is not None else '–'} / {p.top5_err}"
        lines.append(f"| {label} | {p.crops} | {p.models} | {theirs} | {' | '.join(ours)} |")
    return "\n".join(lines)


def by_crops(settings: list[Setting]) -> str:
    """Top-1 error (%) of every member and the ensemble (rows) at every setting (columns)."""
    head = ["network", *(s.label for s in settings)]
    lines = [f"| {' | '.join(head)} |", "|---|" + "---:|" * len(settings)]
    for name in [*_members(settings), ENSEMBLE]:
        lines.append(f"| {name} | {' | '.join(_err(s.rows.get(name)) for s in settings)} |")
    return "\n".join(lines)


def gain_lines(settings: list[Setting]) -> list[str]:
    out = []
    for s in settings:
        g = s.gain
        if g is None:
            continue
        low, high = g["top1_gain_ci"]
        ci = "" if low is None else f" [{low:+.2f}, {high:+.2f}]"
        gain = f"{g['top1_gain']:+.2f}{ci}"
        out.append(f"- {s.label}: {gain} points of top-1 error against {g['best_member']}")
    return out


def top5_note(settings: list[Setting]) -> str:
    worst = max((r["top5_err"] for s in settings for r in s.rows.values()), default=math.nan)
    level = "near 0 for every network" if worst < NEAR_ZERO else "far from the paper's regime"
    return (
        f"With 10 classes top-5 error is {level} (at most {worst:.2f}% here): top-1 error carries the "
        "comparison; the paper's 4.9% is top-5 error over 1,000 classes."
    )


def report_markdown(settings: list[Setting], wall_time: str | None = None) -> str:
    parts = [
        "# The ensemble in miniature (Sec. 4.2.3)",
        "",
        "Errors in percent with 95% bootstrap intervals over the test images (evaluate.py). The paper's rows "
        "are ImageNet (50,000 validation images, 1,000 classes); ours Fashion-MNIST (10 classes), so compare "
        "the pattern (multi-crop below single crop, the ensemble below its best member), not the values.",
        "",
        ours_vs_paper(settings),
        "",
        "Every network at every setting (top-1 error, %):",
        "",
        by_crops(settings),
        "",
        "The ensemble's gain over its best member: the member's top-1 error minus the ensemble's (positive: "
        "the ensemble errs less), with its paired bootstrap interval over the same images (95%):",
        "",
        *gain_lines(settings),
        "",
        top5_note(settings),
        "",
        "Commands:",
        "",
        *(f"- `{s.command}`" for s in settings),
    ]
    if wall_time:
        parts += ["", f"Wall time: {wall_time}"]
    return "\n".join(parts) + "\n"


def write_report(out_dir: Path) -> tuple[str, Path]:
    """Read ``out_dir/eval/*.json`` and write ``out_dir/report.md``; returns (markdown, path)."""
    settings = load_settings(out_dir / "eval")
    wall = out_dir / "wall_time.txt"
    text = report_markdown(settings, wall.read_text().strip().replace("\n", "; ") if wall.exists() else None)
    path = out_dir / "report.md"
    path.write_text(text)
    return text, path
