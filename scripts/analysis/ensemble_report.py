"""The ensemble experiment's report (scripts/reproduce_ensemble.sh): evaluate.py's JSON tables read back into
the paper's Figure 4 form, with the choice made on one half of the test images and the report on the other.

The protocol, fixed before any held-out number is seen:
- the members' checkpoints (`best.pt`) were chosen by training-time validation on the first 5,000 test
  images, and the "best member" is the one with the lowest 1-crop top-1 error on the same images
  (`select_crops1.json`, evaluate.py `images=0:5000`): the selection half;
- everything reported is measured on the other images (`heldout_crops<N>.json`, `images=5000:10000`,
  `per_image=true`): the held-out half, which chose nothing.
- The ensemble's gain over the best member and over the mean member (each image's error averaged over the
  members), and multi-crop's gain over one crop, are per-image differences on the same held-out images,
  with a paired 95% bootstrap interval (1,000 resamples of the images, evaluate.py's own resampler).

Hand-written because it only rearranges evaluate.py's own output (no library reads that format).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bn_inception.evaluation.ensemble import bootstrap_mean_ci
from bn_inception.evaluation.table import FIGURE4
from bn_inception.report.runlogs import ReportError

ENSEMBLE = "ensemble"  # evaluate.py's row name for the as-trained ensemble
SELECT, HELDOUT = "select", "heldout"  # file-name prefixes of the two halves
NEAR_ZERO = 2.0  # percent: a top-5 error below this on 10 classes says nothing about the networks
RESAMPLES = 1000


@dataclass(frozen=True)
class Setting:
    """One evaluate.py output: a crop count on a range of images."""

    name: str  # the JSON's file stem, e.g. heldout_crops144
    crops: int
    image_range: tuple[int, int]
    images: int
    rows: dict[str, dict[str, Any]]  # row name -> evaluate.py's row (top1_err, top1_err_ci, ...)
    wrong: dict[str, np.ndarray] | None  # row name -> per-image top-1 error (0/1); None without per_image
    labels: tuple[int, ...] | None
    distinct_crops: tuple[int, ...]
    seconds: float | None
    command: str

    @property
    def label(self) -> str:
        a, b = self.image_range
        return f"{self.crops} crop{'s' * (self.crops > 1)}, images {a:,}-{b - 1:,}"


def load_setting(path: Path) -> Setting:
    try:
        table = json.loads(path.read_text())
        rows = {r["name"]: r for r in table["rows"] if not r["name"].endswith("[pop]")}
        per_image = table.get("per_image")
        wrong = None
        if per_image:
            wrong = {name: 1.0 - (np.frombuffer(hits.encode(), np.uint8) == ord("1"))
                     for name, hits in per_image["top1"].items()}  # fmt: skip
        return Setting(
            name=path.stem,
            crops=int(table["crops"]),
            image_range=tuple(table.get("image_range") or (0, int(table["data"]["images"]))),
            images=int(table["data"]["images"]),
            rows=rows,
            wrong=wrong,
            labels=tuple(per_image["labels"]) if per_image else None,
            distinct_crops=tuple(table.get("distinct_crops") or ()),
            seconds=table.get("seconds"),
            command=str(table.get("command", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"{path} is not an evaluate.py table ({e}); delete it and re-run") from e


@dataclass(frozen=True)
class Study:
    select: Setting  # 1 crop on the selection half
    heldout: list[Setting]  # by crops, ascending; each with per-image results

    @property
    def members(self) -> list[str]:
        return sorted(name for name in self.select.rows if name != ENSEMBLE)

    @property
    def best(self) -> str:
        """The fixed choice: the lowest 1-crop top-1 error on the selection half (ties: the first name)."""
        return min(self.members, key=lambda name: (self.select.rows[name]["top1_err"], name))

    def setting(self, crops: int) -> Setting | None:
        return next((s for s in self.heldout if s.crops == crops), None)


def load_study(eval_dir: Path) -> Study:
    """`select_crops1.json` and every `heldout_crops<N>.json` in ``eval_dir``."""
    select = eval_dir / f"{SELECT}_crops1.json"
    heldout = sorted(eval_dir.glob(f"{HELDOUT}_crops*.json"))
    if not select.exists() or not heldout:
        raise ReportError(
            f"{eval_dir} needs {select.name} and {HELDOUT}_crops<N>.json (evaluate.py outputs); "
            "run scripts/reproduce_ensemble.sh"
        )
    settings = sorted((load_setting(p) for p in heldout), key=lambda s: s.crops)
    for s in settings:
        if s.wrong is None:
            raise ReportError(f"{s.name}.json has no per-image results; re-run it with per_image=true")
        if set(s.rows) != set(settings[0].rows) or s.labels != settings[0].labels:
            raise ReportError(f"{s.name}.json is not on the same networks and images as {settings[0].name}")
    study = Study(load_setting(select), settings)
    if set(study.select.rows) != set(settings[0].rows):
        raise ReportError(f"{select.name} and {settings[0].name}.json evaluate different networks")
    return study


# ---- paired differences -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gain:
    """Mean per-image difference of top-1 errors (points; positive: the second errs less), 95% interval."""

    value: float
    low: float
    high: float

    def text(self) -> str:
        return f"{self.value:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_gain(worse: np.ndarray, better: np.ndarray) -> Gain:
    diff = worse - better
    low, high = bootstrap_mean_ci(diff, RESAMPLES, seed=0)
    return Gain(100.0 * float(diff.mean()), float(low), float(high))


def mean_member_wrong(study: Study, s: Setting) -> np.ndarray:
    """Each image's top-1 error averaged over the members: the error of a member drawn at random."""
    return np.mean([s.wrong[name] for name in study.members], axis=0)


# ---- rendering ----------------------------------------------------------------------------------------


def _err(row: dict[str, Any] | None, key: str = "top1_err") -> str:
    if row is None:
        return "–"
    low, high = row.get(f"{key}_ci") or (None, None)
    if low is None or high is None:
        return f"{row[key]:.2f}"
    return f"{row[key]:.2f} [{low:.2f}, {high:.2f}]"


def ours_vs_paper(study: Study) -> str:
    """The paper's BN-Inception rows of Figure 4 and ours (held-out half) side by side (error, %)."""
    single, multi = study.setting(1), study.setting(144)
    published = {r[0]: r for r in FIGURE4}  # (model, resolution, crops, models, top-1, top-5 error)
    lines = [
        "| row | paper: crops | paper: models | paper: top-1 / top-5 error (%) | ours: crops | "
        "ours: models | ours: images | ours: top-1 error (%) | ours: top-5 error (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, setting, name in (
        ("BN-Inception single crop", single, study.best),
        ("BN-Inception multicrop", multi, study.best),
        ("BN-Inception ensemble", multi, ENSEMBLE),
    ):
        _, _, crops, models, top1, top5 = published[label]
        row = setting.rows.get(name) if setting else None
        ours = ["–"] * 5
        if row:
            ours = [str(setting.crops), str(len(row["checkpoints"])), f"{setting.images:,}", _err(row)]
            ours.append(_err(row, "top5_err"))
        theirs = f"{top1 if top1 is not None else '–'} / {top5}"
        lines.append(f"| {label} | {crops} | {models} | {theirs} | {' | '.join(ours)} |")
    return "\n".join(lines)


def by_crops(study: Study) -> str:
    """Top-1 error (%) of every member and the ensemble: the selection half (1 crop), then held out."""
    settings = [study.select, *study.heldout]
    head = ["network", *(f"{s.label}{' (selection)' if s is study.select else ''}" for s in settings)]
    lines = [f"| {' | '.join(head)} |", "|---|" + "---:|" * len(settings)]
    for name in [*study.members, ENSEMBLE]:
        mark = " (best member, chosen on the selection half)" if name == study.best else ""
        lines.append(f"| {name}{mark} | {' | '.join(_err(s.rows.get(name)) for s in settings)} |")
    return "\n".join(lines)


def gains_table(study: Study) -> str:
    """Held out: the ensemble against the best and the mean member at every crop count (paired)."""
    lines = [
        "| crops | ensemble | best member | gain over the best member | mean member "
        "| gain over the mean member |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in study.heldout:
        ens, best, mean = s.wrong[ENSEMBLE], s.wrong[study.best], mean_member_wrong(study, s)
        cells = [
            str(s.crops), f"{100 * ens.mean():.2f}", f"{100 * best.mean():.2f}",
            paired_gain(best, ens).text(), f"{100 * mean.mean():.2f}", paired_gain(mean, ens).text(),
        ]  # fmt: skip
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def multicrop_lines(study: Study) -> list[str]:
    """Held out: each multi-crop setting against 1 crop, for the best member and the ensemble (paired)."""
    one = study.setting(1)
    if one is None:
        return []
    out = []
    for s in study.heldout:
        if s.crops == 1:
            continue
        for name in (study.best, ENSEMBLE):
            gain = paired_gain(one.wrong[name], s.wrong[name])
            out.append(f"- {name}: {s.crops} crops against 1: {gain.text()} points of top-1 error")
    return out


def crops_note(study: Study) -> str:
    notes = [f"{s.crops} crops: {'/'.join(map(str, s.distinct_crops))} distinct per image"
             for s in study.heldout if s.distinct_crops and max(s.distinct_crops) < s.crops]  # fmt: skip
    if not notes:
        return ""
    return (
        "Crops that coincide for every image were evaluated once and weighted by their count, which is the "
        f"protocol's average exactly ({'; '.join(notes)}: a square image's left, centre and right squares "
        "are one square)."
    )


def top5_note(study: Study) -> str:
    worst = max((r["top5_err"] for s in study.heldout for r in s.rows.values()), default=math.nan)
    level = "near 0 for every network" if worst < NEAR_ZERO else "far from the paper's regime"
    return (
        f"With 10 classes top-5 error is {level} (at most {worst:.2f}% here): top-1 error carries the "
        "comparison; the paper's 4.9% is top-5 error over 1,000 classes."
    )


def report_markdown(study: Study, wall_time: str | None = None) -> str:
    a, b = study.heldout[0].image_range
    parts = [
        "# The ensemble in miniature (Sec. 4.2.3), on held-out test images",
        "",
        f"Chosen on the selection half (test images {study.select.image_range[0]:,}-"
        f"{study.select.image_range[1] - 1:,}: the checkpoints by training-time validation, the best member "
        f"**{study.best}** by 1-crop top-1 error); reported on the held-out half (images {a:,}-{b - 1:,}, "
        f"{study.heldout[0].images:,} images). Errors in percent with 95% bootstrap intervals over the "
        "images. The paper's rows are ImageNet (1,000 classes); ours Fashion-MNIST (10 classes), so compare "
        "the pattern, not the values.",
        "",
        ours_vs_paper(study),
        "",
        "Every network (top-1 error, %):",
        "",
        by_crops(study),
        "",
        "The ensemble's gain on the held-out half, in points of top-1 error (the member's error minus the "
        "ensemble's, per image, averaged; positive: the ensemble errs less), with paired 95% bootstrap "
        "intervals. The mean member is each image's error averaged over the "
        f"{len(study.members)} members:",
        "",
        gains_table(study),
        "",
        "Multi-crop's gain over one crop on the same held-out images (paired, points of top-1 error):",
        "",
        *multicrop_lines(study),
        "",
        crops_note(study),
        "",
        top5_note(study),
        "",
        "Commands:",
        "",
        *(
            f"- `{s.command}` ({s.seconds:.0f} s)" if s.seconds else f"- `{s.command}`"
            for s in [study.select, *study.heldout]
        ),  # fmt: skip
    ]
    if wall_time:
        parts += ["", f"Wall time: {wall_time}"]
    return "\n".join(parts) + "\n"


def write_report(out_dir: Path) -> tuple[str, Path]:
    """Read ``out_dir/eval/*.json`` and write ``out_dir/report.md``; returns (markdown, path)."""
    study = load_study(out_dir / "eval")
    walls = [p.read_text().strip() for p in (out_dir / "wall_time.txt", out_dir / "eval/wall_time.txt")
             if p.exists()]  # fmt: skip
    text = report_markdown(study, "; ".join(walls).replace("\n", "; ") if walls else None)
    path = out_dir / "report.md"
    path.write_text(text)
    return text, path
