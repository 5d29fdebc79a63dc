"""Table 2 (the paper's Figure 3 table): steps to reach Inception's best accuracy, best accuracies, speed-ups.

Two definitions, stated under the table: pooled (`DEFINITION`, the paper's) and paired by seed
(`PAIRED_DEFINITION`, docs/results.md's, issue 21). A run reaches a target at its first evaluation with
top-1 >= target - 1e-9 (so a single Inception run reaches its own best despite a mean's rounding); diverged
runs count in N. Known bias of the paired one: the target is the best of noisy evaluations, reached a little
late (a true 4x reads 3.7-3.9x with 1 point of noise: tests/report/test_paired_speedup.py), as is the paper's.
The table is held as table2.json writes it: one dict per row, read by the markdown and the claims.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from bn_inception.report.runlogs import RunLog, is_mnist_run

TARGET_TOLERANCE = 1e-9  # percentage points
SEED_RESAMPLES = 10_000  # bootstrap resamples of the seeds for a paired speed-up's interval

# The paper's Figure 3 (Sec. 4.2.2), in its order, under our names: (steps to reach Inception's best, 72.2%,
# in 10^6 32-image steps (None: never), the network's best single-crop top-1 (%) on ILSVRC-2012 val).
FIGURE3: dict[str, tuple[float | None, float]] = {
    "inception": (31.0, 72.2),
    "bn_baseline": (13.3, 72.7),
    "bn_x5": (2.1, 73.0),
    "bn_x30": (2.7, 74.8),
    "bn_x5_sigmoid": (None, 69.8),
}
FIGURE3_TARGET_TOP1 = 72.2
VARIANTS = tuple(FIGURE3)
#: The paper's names, and the text's two non-BN controls (Sec. 4.2.2) as it describes them.
NAMES = {
    "inception": "Inception",
    "bn_baseline": "BN-Baseline",
    "bn_x5": "BN-x5",
    "bn_x30": "BN-x30",
    "bn_x5_sigmoid": "BN-x5-Sigmoid",
    "inception_sigmoid": "Inception, sigmoid (no BN)",
    "inception_x5": "Inception, 5x lr (no BN)",
}

DEFINITION = (
    "Target = mean over the `inception` runs of each run's best validation top-1 (max over its evaluations); "
    "with one Inception run, its best (the paper's 72.2%). Steps to target = first evaluated step with "
    "top-1 >= target; mean ± sample std over the runs that reached it (k/N reached). Best top-1 = mean ± "
    "sample std over runs with at least one evaluation. Speed-up = Inception's mean steps to target / the "
    "variant's mean steps to target. Steps are this sweep's optimizer steps (its batch size), not the "
    "paper's 32-image steps: compare speed-ups and accuracies, not raw step counts. Paper columns: "
    "Figure 3 (steps in 10^6, target 72.2%); paper speed-up = 31.0 / the variant's steps."
)
PAIRED_DEFINITION = (
    "Paired by seed: each seed's target is its own Inception run's best; the variant's steps to it are "
    "interpolated between the evaluations around the crossing; speed-up = Inception's steps / the "
    'variant\'s; geometric mean over seeds with a 95% seed-bootstrap interval; ">="/"<": a bound (the '
    "run was above the target at its first evaluation / never reached it)."
)


def figure3_speedup(variant: str) -> float | None:
    steps = FIGURE3[variant][0]
    return FIGURE3["inception"][0] / steps if steps is not None else None


def network_name(variant: str) -> str:
    return NAMES.get(variant, variant)


def variant_order(variants: set[str]) -> list[str]:
    return [v for v in VARIANTS if v in variants] + sorted(variants - set(VARIANTS))


def stats(values: list) -> dict | None:
    """Mean, sample std (None for n < 2), min, max and n of the values that are not None."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return dict(mean=statistics.fmean(values), std=std, min=min(values), max=max(values), n=len(values))


def best_top1(run: RunLog, budget: int | None = None) -> tuple[float, int] | None:
    """(best top-1 within `budget` steps (None: all), first step at it); None without an evaluation there,
    or when the run stopped short of `budget` (it does not cover it)."""
    evals = run.finite_evals()
    within = [e for e in evals if budget is None or e.step <= budget]
    if not within or evals[-1].step < (budget or 0):
        return None
    best = max(e.top1 for e in within)
    return best, next(e.step for e in within if e.top1 == best)


def build_table2(runs: list[RunLog]) -> dict:
    """Table 2 as table2.json holds it (docs/results.md): the target, then one dict per variant."""
    runs = [run for run in runs if not is_mnist_run(run)]
    # The target: the mean best top-1 of the `inception` runs with an evaluation (the paper's 72.2%).
    bests = [b[0] for run in runs if run.experiment == "inception" and (b := best_top1(run)) is not None]
    target = statistics.fmean(bests) if bests else None
    groups: dict[str, list[dict]] = {}
    for run in runs:
        best, best_step = best_top1(run) or (None, None)
        reached = None
        if target is not None:
            reached = next((e.step for e in run.finite_evals() if e.top1 >= target - TARGET_TOLERANCE), None)
        groups.setdefault(run.experiment, []).append(
            dict(path=run.path, seed=run.seed, status=run.status, best_top1=best, best_step=best_step,
                 steps_to_target=reached, diverged_at_step=run.diverged_at_step)
        )  # fmt: skip
    inception = stats([r["steps_to_target"] for r in groups.get("inception", [])])
    rows = []
    for variant in variant_order(set(groups)):
        group, steps = groups[variant], stats([r["steps_to_target"] for r in groups[variant]])
        n_reached = sum(r["steps_to_target"] is not None for r in group)
        pooled = inception["mean"] / steps["mean"] if inception and steps and steps["mean"] else None
        paired = paired_speedup(runs, "inception", variant) if variant != "inception" else None
        e6, top1 = FIGURE3.get(variant, (None, None))
        rows.append(
            {
                "variant": variant,
                "network": network_name(variant),
                "n_runs": len(group),
                "n_reached": n_reached if target is not None else None,
                "n_diverged": sum(r["diverged_at_step"] is not None for r in group),
                "steps_to_target": steps,
                "best_top1": stats([r["best_top1"] for r in group]),
                "steps_to_best": stats([r["best_step"] for r in group]),
                "speedup": pooled,
                "paired_speedup": paired if paired is not None and paired.seeds else None,  # json: to_json
                "runs": group,
                "paper": None
                if variant not in FIGURE3
                else {"steps_to_72_2_e6": e6, "max_top1": top1, "speedup": figure3_speedup(variant)},
            }
        )
    return {
        "target_top1": target,
        "target_definition": "mean over inception runs of each run's best validation top-1",
        "n_inception_runs": len(groups.get("inception", [])),
        "paper_target_top1": FIGURE3_TARGET_TOP1,
        "definition": DEFINITION,
        "rows": rows,
    }


def table_row(table: dict, variant: str) -> dict | None:
    return next((row for row in table["rows"] if row["variant"] == variant), None)


# ---- paired by seed ------------------------------------------------------------------------------------


def crossing(points: list[tuple[int, float]], target: float) -> tuple[str, float, float, float] | None:
    """Where a curve [(step, top1)] first reaches `target`, within the evaluation grid's (low, high]:
    ("crossed", interpolated steps, low, high), or a bound: ("by_first", its first step, 0, it) or
    ("never", its last step, it, inf); None without points."""
    for i, (step, top1) in enumerate(points):
        if top1 >= target - TARGET_TOLERANCE:
            if i == 0:
                return "by_first", float(step), 0.0, float(step)
            s0, a0 = points[i - 1]
            frac = min(1.0, max(0.0, (target - a0) / (top1 - a0)))
            return "crossed", s0 + frac * (step - s0), float(s0), float(step)
    return ("never", float(points[-1][0]), float(points[-1][0]), math.inf) if points else None


@dataclass(frozen=True)
class SeedSpeedup:
    seed: int | None
    target: float
    baseline_steps: int
    kind: str  # `crossing`'s: "crossed", "by_first" or "never"
    steps: float  # the variant's steps to the target, or their bound
    low: float  # the evaluation grid's (low, high] around it
    high: float

    @property
    def value(self) -> float:  # the speed-up, or its bound
        return self.baseline_steps / self.steps

    @property
    def bound(self) -> str:
        return {"crossed": "", "by_first": ">=", "never": "<"}[self.kind]

    @property
    def grid_range(self) -> tuple[float, float]:  # what the evaluation grid allows
        return self.baseline_steps / self.high, (self.baseline_steps / self.low if self.low else math.inf)

    def text(self) -> str:
        """Steps and speed-up with the grid's range: "1,830 (1,750-2,000]: 4.37x [4.00, 4.57)"."""
        if self.kind == "never":
            return f"never (ran {self.low:,.0f}): < {self.value:.2f}x"
        if self.kind == "by_first":
            return f"<= {self.high:,.0f} (first evaluation): >= {self.value:.2f}x"
        lo, hi = self.grid_range
        return f"{self.steps:,.0f} ({self.low:,.0f}-{self.high:,.0f}]: {self.value:.2f}x [{lo:.2f}, {hi:.2f})"

    def to_json(self) -> dict:
        grid = [self.low, self.high if math.isfinite(self.high) else None]
        return dict(seed=self.seed, target=self.target, baseline_steps=self.baseline_steps, kind=self.kind,
                    steps=self.steps, grid=grid, speedup=self.value)  # fmt: skip


@dataclass(frozen=True)
class Paired:
    """Speed-ups over seeds, each with `.seed`, `.value` and `.bound` ("": estimated, ">=" / "<": a bound,
    None: bounded both ways); a `SeedSpeedup` each, or the quotients scripts/analysis/speedup.py forms."""

    seeds: tuple

    @property
    def bound(self) -> str | None:
        """ "" (every seed estimated), ">=" / "<" (the mean is a bound that way), None: bounds both ways."""
        kinds = {s.bound for s in self.seeds} - {""}
        return "" if not kinds else (kinds.pop() if len(kinds) == 1 else None)

    @property
    def mean(self) -> float | None:
        return float(np.exp(np.mean(np.log([s.value for s in self.seeds])))) if self.seeds else None

    def interval(self, resamples: int = SEED_RESAMPLES) -> tuple[float, float] | None:
        """95% percentile interval of the geometric mean over resampled seeds; fixed draws (reproducible)."""
        if len(self.seeds) < 2:
            return None
        logs = np.log([s.value for s in self.seeds])
        draws = np.random.default_rng(0).integers(0, len(logs), size=(resamples, len(logs)))
        low, high = np.percentile(logs[draws].mean(axis=1), [2.5, 97.5])
        return float(np.exp(low)), float(np.exp(high))

    def text(self, seeds_word: bool = True) -> str:
        """ "3.91x [3.10, 4.80] (3 seeds)"; a bound as ">= 4.00x ..." with its bounded seeds counted."""
        n = len(self.seeds)
        if not n:
            return "–"
        if self.bound is None:
            return f"bounds both ways ({n} seed{'s' * (n != 1)})"
        ci = self.interval()
        text = f"{self.bound + ' ' if self.bound else ''}{self.mean:.2f}x"
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        n_bounds = sum(bool(s.bound) for s in self.seeds)
        count = f"{n} seed{'s' * (n != 1)}" if seeds_word else str(n)
        return f"{text} ({count}{f', {n_bounds} a bound' if n_bounds else ''})"

    def to_json(self) -> dict:
        ci = self.interval()
        seeds = [s.to_json() for s in self.seeds]
        return {"geo_mean": self.mean, "ci95": list(ci) if ci else None, "bound": self.bound, "seeds": seeds}


def paired_speedup(runs: list[RunLog], baseline: str, variant: str, budget: int | None = None) -> Paired:
    """Seed by seed: each seed's target is its baseline run's best within the budget."""
    bases = {r.seed: r for r in runs if r.experiment == baseline}
    seeds = []
    for run in sorted((r for r in runs if r.experiment == variant), key=lambda r: (r.seed is None, r.seed)):
        base = bases.get(run.seed)
        target = best_top1(base, budget) if base is not None else None
        points = [(e.step, e.top1) for e in run.finite_evals()]
        cross = crossing(points, target[0]) if target is not None else None
        if cross is not None and not (cross[0] == "never" and run.status == "running"):  # bounds nothing yet
            seeds.append(SeedSpeedup(run.seed, target[0], target[1], *cross))
    return Paired(tuple(seeds))


# ---- rendering -----------------------------------------------------------------------------------------

TABLE2_HEADER = (
    "| network | runs | steps to target | reached | best top-1 (%) | speed-up (pooled) | speed-up, paired "
    "by seed: geo-mean [95% CI] | paper: steps to 72.2% (10^6) | paper: max accuracy (%) | paper: speed-up "
    "| notes |"
)


def stats_text(s: dict | None, digits: int, n_all: int | None = None) -> str:
    """ "mean ± std", with " (n=k)" when fewer than `n_all` values; "–" for none."""
    if s is None:
        return "–"
    text = f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["std"] is not None else "")
    return text + (f" (n={s['n']})" if n_all is not None and s["n"] != n_all else "")


def _cells(row: dict, has_target: bool) -> list[str]:
    diverged = [r["diverged_at_step"] for r in row["runs"] if r["diverged_at_step"] is not None]
    if not has_target:
        steps = "no target (no inception runs)"
    elif row["steps_to_target"] is not None:
        steps = stats_text(row["steps_to_target"], 0)
    elif len(diverged) == row["n_runs"]:
        steps = f"diverged at step{'s' if len(diverged) > 1 else ''} {', '.join(map(str, diverged))}"
    else:
        steps = "never"
    paper = ["–", "–", "–"]
    if (p := row["paper"]) is not None:
        e6, top1 = p["steps_to_72_2_e6"], f"{p['max_top1']:.1f}"
        inception = FIGURE3["inception"][0]
        paper = ["never", top1, "never"] if e6 is None else [f"{e6:.1f}", top1, f"{p['speedup']:.1f}x "
                                                             f"({inception:.1f}/{e6:.1f})"]  # fmt: skip
    notes = [
        (f"seed {r['seed']}" if r["seed"] is not None else r["path"])
        + (f" diverged at step {d}" if (d := r["diverged_at_step"]) is not None else f" {r['status']}")
        for r in row["runs"]
        if r["diverged_at_step"] is not None or r["status"] != "completed"
    ]
    return [
        steps,
        f"{row['n_reached']}/{row['n_runs']}" if has_target else "–",
        "no evaluation" if row["best_top1"] is None else stats_text(row["best_top1"], 2, row["n_runs"]),
        f"{row['speedup']:.2f}x" if row["speedup"] is not None else "–",
        row["paired_speedup"].text() if row["paired_speedup"] is not None else "–",
        *paper,
        "; ".join(notes),
    ]


def table2_markdown(table: dict) -> str:
    has_target = (target := table["target_top1"]) is not None
    lines = ["# Table 2 (the paper's Figure 3): steps to reach Inception's best validation top-1", ""]
    if not table["rows"]:
        lines.append(
            "**No runs for Table 2 in this sweep** (only `mnist_figure1` runs, which make Figure 1)."
        )
    elif has_target:
        n = table["n_inception_runs"]
        lines.append(
            f"Target: **{target:.2f}%** validation top-1, the mean best of {n} `inception` "
            f"run{'s' if n != 1 else ''} (paper: {FIGURE3_TARGET_TOP1}%)."
        )
    else:
        lines.append(
            "**No `inception` runs in this sweep**: there is no target, so steps to target and speed-ups are "
            "not computed; best accuracies are reported."
        )
    lines += ["", TABLE2_HEADER, "|" + "---|" * TABLE2_HEADER.count(" | ") + "---|"]
    for row in table["rows"]:
        cells = [f"{row['network']} (`{row['variant']}`)", str(row["n_runs"]), *_cells(row, has_target)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", DEFINITION, "", PAIRED_DEFINITION, ""]
    paired = [r for r in table["rows"] if r["paired_speedup"] is not None]
    if paired:
        lines += [
            "Paired by seed: each seed's target (its Inception run's best) and the variant's crossing of it, "
            "interpolated, with the evaluation grid's range (steps: speed-up [range]):",
            "",
            "| network | seed | target (%) | Inception steps | steps to target: speed-up |",
            "|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {r['network']} | {s.seed} | {s.target:.2f} | {s.baseline_steps:,} | {s.text()} |"
            for r in paired
            for s in r["paired_speedup"].seeds
        ]
    return "\n".join([*lines, ""])
