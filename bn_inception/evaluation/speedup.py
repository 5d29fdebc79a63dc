"""How the BN speed-up depends on the baseline's training length (scripts/reproduce_speedup.sh, issue 14).

Definition (stated again under the rendered table, `DEFINITION`):
- Runs are paired by seed: the `inception` run of seed s is the baseline of every BN variant's run of seed s.
- Budget B is covered by a seed when its Inception run has an evaluation at step >= B. Inception's target
  at B is its best top-1 over its evaluations at steps <= B; its steps to target is the first such step
  reaching it (as in Table 2, `table2.steps_to_reach`, with the same tolerance).
- A variant's steps to the target is the first evaluated step of its run whose top-1 reaches the target,
  at any step (the variant has its own, shorter budget). Speed-up at B = Inception's steps to target /
  the variant's. A run that never reaches the target gives only a bound: speed-up < Inception's steps /
  the run's last evaluated step; such seeds are counted in "k/N reached" and left out of the mean.
- Per variant and budget: mean, sample standard deviation and range over the seeds that reached.
- Growth: the least-squares slope of log(speed-up) against log(B) over the budgets every seed reached
  (0: the speed-up saturates; 1: it grows in proportion to the budget). The paper's regime needs, from
  our largest budget's speed-up, the slope that reaches the paper's speed-up at its 31 x 10^6 steps.

Hand-written: the definition is this project's (no library computes a speed-up from evaluation curves).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from bn_inception.evaluation import paper
from bn_inception.evaluation.runlogs import RunLog
from bn_inception.evaluation.table2 import TARGET_TOLERANCE, network_name, steps_to_reach, variant_order

BASELINE = "inception"
PAPER_BUDGET = 31.0e6  # steps: Inception's steps to its 72.2% (Figure 3), the paper's budget

DEFINITION = (
    "Paired by seed. Target at budget B = Inception's best top-1 within its first B steps; Inception's "
    "steps = its first evaluated step reaching that target; a BN variant's steps = its first evaluated step "
    "reaching it (any step). Speed-up = Inception's steps / the variant's; mean ± sample std [min-max] over "
    "the seeds that reached it (k/N). A seed that never reached it only bounds the speed-up from above "
    "(< Inception's steps / its last evaluated step)."
)


@dataclass(frozen=True)
class SeedResult:
    """One seed of one variant at one budget."""

    seed: int | None
    target: float  # percent: Inception's best top-1 within the budget
    baseline_steps: int  # Inception's first step reaching the target
    steps: int | None  # the variant's first step reaching the target; None: never
    last_step: int  # the variant run's last evaluated step
    running: bool = False  # the variant run is still training: not reaching the target yet bounds nothing

    @property
    def speedup(self) -> float | None:
        return self.baseline_steps / self.steps if self.steps else None

    @property
    def upper_bound(self) -> float | None:
        """For a seed that never reached the target: the speed-up is below this."""
        if self.steps is not None or self.running or not self.last_step:
            return None
        return self.baseline_steps / self.last_step


@dataclass(frozen=True)
class Cell:
    """One variant at one budget, over seeds."""

    variant: str
    budget: int
    seeds: tuple[SeedResult, ...]

    @property
    def reached(self) -> list[float]:
        return [s.speedup for s in self.seeds if s.speedup is not None]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.reached) if self.reached else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.reached) if len(self.reached) > 1 else None


@dataclass(frozen=True)
class SpeedupTable:
    budgets: tuple[int, ...]
    variants: tuple[str, ...]
    cells: dict[tuple[str, int], Cell]
    targets: dict[int, list[float]]  # budget -> Inception's target per covered seed
    baseline_steps: dict[int, list[int]]  # budget -> Inception's steps to it per covered seed

    def cell(self, variant: str, budget: int) -> Cell:
        return self.cells[(variant, budget)]


def budget_target(run: RunLog, budget: int) -> tuple[float, int] | None:
    """(Inception's best top-1 within the first `budget` steps, first step reaching it); None when the run
    has no evaluation at or beyond `budget` (the budget is not covered) or none within it."""
    evals = run.finite_evals()
    if not evals or max(e.step for e in evals) < budget:
        return None
    within = [e for e in evals if e.step <= budget]
    if not within:
        return None
    target = max(e.top1 for e in within)
    return target, next(e.step for e in within if e.top1 >= target - TARGET_TOLERANCE)


def build_speedup_table(runs: list[RunLog], budgets: list[int]) -> SpeedupTable:
    """Speed-up at every budget for every BN variant (see the module docstring)."""
    baselines = {run.seed: run for run in runs if run.experiment == BASELINE}
    variants = [v for v in variant_order({r.experiment for r in runs}) if v != BASELINE]
    cells, targets, base_steps = {}, {}, {}
    for budget in budgets:
        by_seed = {seed: t for seed, run in baselines.items() if (t := budget_target(run, budget))}
        targets[budget] = [t for t, _ in by_seed.values()]
        base_steps[budget] = [s for _, s in by_seed.values()]
        for variant in variants:
            seeds = []
            for run in sorted(
                (r for r in runs if r.experiment == variant), key=lambda r: (r.seed is None, r.seed)
            ):
                if run.seed not in by_seed or not run.finite_evals():
                    continue
                target, steps = by_seed[run.seed]
                last = run.finite_evals()[-1].step
                reached = steps_to_reach(run, target)
                seeds.append(SeedResult(run.seed, target, steps, reached, last, run.status == "running"))
            cells[(variant, budget)] = Cell(variant, budget, tuple(seeds))
    return SpeedupTable(tuple(budgets), tuple(variants), cells, targets, base_steps)


def fully_reached(table: SpeedupTable, variant: str) -> list[tuple[int, float]]:
    """(budget, mean speed-up) at the budgets where every seed of `variant` reached the target."""
    return [
        (b, c.mean)
        for b in table.budgets
        if (c := table.cell(variant, b)).seeds and len(c.reached) == len(c.seeds) and c.mean
    ]


def growth_slope(table: SpeedupTable, variant: str) -> float | None:
    """Least-squares slope of log(mean speed-up) on log(budget) over the fully reached budgets; None with
    fewer than two."""
    points = fully_reached(table, variant)
    if len(points) < 2:
        return None
    x, y = np.log(np.array(points)).T
    return float(np.polyfit(x, y, 1)[0])


def paper_speedup(variant: str) -> float | None:
    """The paper's speed-up for a Figure 3 variant (None for others, or one that never reached 72.2%)."""
    return paper.figure3_speedup(variant) if variant in paper.FIGURE3_BY_VARIANT else None


def needed_slope(table: SpeedupTable, variant: str) -> float | None:
    """The slope that would take our speed-up at the largest fully reached budget to the paper's at 31e6."""
    published, reached = paper_speedup(variant), fully_reached(table, variant)
    if published is None or not reached:
        return None
    budget, ours = reached[-1]
    return math.log(published / ours) / math.log(PAPER_BUDGET / budget)


# ---- rendering ----------------------------------------------------------------------------------------


def _cell_text(cell: Cell) -> str:
    if not cell.seeds:
        return "–"
    n, k = len(cell.seeds), len(cell.reached)
    if not k:
        bounds = [s.upper_bound for s in cell.seeds if s.upper_bound is not None]
        return f"< {min(bounds):.2f} (0/{n})" if bounds else f"not yet (0/{n}, running)"
    text = f"{cell.mean:.2f}"
    if cell.std is not None:
        text += f" ± {cell.std:.2f} [{min(cell.reached):.2f}-{max(cell.reached):.2f}]"
    return f"{text} ({k}/{n})"


def table_markdown(table: SpeedupTable) -> str:
    head = ["budget B (steps)", "Inception target (%)", "Inception steps to it"]
    head += [f"{network_name(v)} speed-up" for v in table.variants]
    lines = [f"| {' | '.join(head)} |", "|---:|" + "---:|" * (len(head) - 1)]
    for b in table.budgets:
        targets, steps = table.targets[b], table.baseline_steps[b]
        if not targets:
            lines.append(f"| {b:,} | not covered (Inception ran fewer steps) |" + " |" * (len(head) - 2))
            continue
        target = f"{statistics.fmean(targets):.2f}" + (
            f" ± {statistics.stdev(targets):.2f}" if len(targets) > 1 else ""
        )
        row = [f"{b:,}", target, f"{statistics.fmean(steps):,.0f}"]
        row += [_cell_text(table.cell(v, b)) for v in table.variants]
        lines.append(f"| {' | '.join(row)} |")
    return "\n".join(lines)


def per_seed_markdown(table: SpeedupTable) -> str:
    lines = ["| variant | budget B | seed | target (%) | Inception steps | variant steps | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for v in table.variants:
        for b in table.budgets:
            for s in table.cell(v, b).seeds:
                steps = f"{s.steps:,}" if s.steps else f"never (ran {s.last_step:,})"
                speed = f"{s.speedup:.2f}" if s.speedup else f"< {s.upper_bound:.2f}"
                if s.running and not s.steps:
                    steps, speed = f"not yet (running, at {s.last_step:,})", "–"
                cells = [
                    network_name(v),
                    f"{b:,}",
                    str(s.seed),
                    f"{s.target:.2f}",
                    f"{s.baseline_steps:,}",
                    steps,
                    speed,
                ]
                lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def growth_lines(table: SpeedupTable) -> list[str]:
    out = []
    for v in table.variants:
        slope, needed = growth_slope(table, v), needed_slope(table, v)
        if slope is None:
            out.append(f"- {network_name(v)}: fewer than two budgets reached by every seed; no slope.")
            continue
        published = paper_speedup(v)
        text = f"- {network_name(v)}: speed-up ∝ B^{slope:.2f} over the budgets every seed reached"
        if needed is not None and published is not None:
            paper_regime = f"the paper's {published:.1f}x at 31 x 10^6 steps"
            text += f"; reaching {paper_regime} from here would need B^{needed:.2f}"
        out.append(text + ".")
    return out


def report_markdown(table: SpeedupTable, figure: str | None = None, wall_time: str | None = None) -> str:
    parts = [
        "# BN speed-up against the baseline's training length",
        "",
        table_markdown(table),
        "",
        DEFINITION,
        "",
        "How the speed-up grows with the budget (log-log slope):",
        "",
        *growth_lines(table),
        "",
    ]
    if figure:
        parts += [f"![speed-up against budget]({figure})", ""]
    parts += ["Per seed:", "", per_seed_markdown(table), ""]
    if wall_time:
        parts += [f"Wall time: {wall_time}", ""]
    return "\n".join(parts)
