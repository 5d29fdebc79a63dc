"""How the BN speed-up depends on the baseline's training length (scripts/reproduce_speedup.sh, issue 21).

Every speed-up here is Table 2's paired one (`bn_inception.report.table2.paired_speedup`): per seed,
the target at budget B is that seed's Inception run's best top-1 within its first B steps, reached at its
first evaluation at that value; a variant's steps to it are interpolated between the evaluations around its
crossing, a crossing before its first evaluation or never reached is a bound; over seeds the geometric mean
with a 95% seed-bootstrap interval.

The comparisons: BN-x5, BN-x30 and (when run) Inception-x5, each against Inception; with Inception-x5 (no
BN, BN-x5's rate) BN-x5's speed-up splits, seed by seed, into "the higher rate alone" (Inception-x5 against
Inception) times "BN at the same rate" (BN-x5 against Inception-x5, at Inception's target). Growth: each
seed's speed-up at the largest budget over its speed-up at the smallest, with the same interval. Nothing is
extrapolated beyond the budgets run.

Hand-written: the definition is this project's (no library computes a speed-up from evaluation curves).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bn_inception.report.figures import save_figure
from bn_inception.report.table2 import (
    PAIRED_DEFINITION,
    Paired,
    best_top1,
    figure3_speedup,
    network_name,
    paired_speedup,
    stats,
    stats_text,
)

BASELINE, CONTROL = "inception", "inception_x5"
VARIANTS = ("bn_x5", "bn_x30")
FLIP = {">=": "<", "<": ">=", "": ""}


@dataclass(frozen=True)
class Quotient:
    """One seed's a / b of two speed-ups; bound: a's, or b's flipped, or None (unknown) when they clash."""

    seed: int | None
    value: float
    bound: str | None


def _divide(a: Paired, b: Paired) -> Paired:
    other = {s.seed: s for s in b.seeds}
    seeds = []
    for s in (s for s in a.seeds if s.seed in other):
        kind, k = s.bound, other[s.seed].bound
        if kind is None or k is None:
            bound = None
        else:
            bound = kind if not k else FLIP[k] if not kind or kind == FLIP[k] else None
        seeds.append(Quotient(s.seed, s.value / other[s.seed].value, bound))
    return Paired(tuple(seeds))


@dataclass(frozen=True)
class BudgetStudy:
    budgets: tuple[int, ...]
    labels: tuple[str, ...]
    cells: dict[tuple[str, int], Paired]
    targets: dict[int, list[float]]  # budget -> each covered seed's Inception target

    def growth(self, label: str) -> Paired | None:
        """Each seed's speed-up at the largest budget over that at the smallest (both covered)."""
        covered = [b for b in self.budgets if self.cells[(label, b)].seeds]
        if len(covered) < 2:
            return None
        return _divide(self.cells[(label, covered[-1])], self.cells[(label, covered[0])])


def comparison_label(baseline: str, variant: str) -> str:
    return f"{network_name(variant)} vs {network_name(baseline)}"


SAME_RATE = f"BN at the same rate: {network_name('bn_x5')} vs {network_name(CONTROL)}"


def build_study(runs: list, budgets: list[int]) -> BudgetStudy:
    """Every comparison at every budget (see the module docstring)."""
    present = {r.experiment for r in runs}
    pairs = [(BASELINE, v) for v in (*VARIANTS, CONTROL) if v in present]
    cells, targets = {}, {}
    for budget in budgets:
        targets[budget] = [
            t[0] for r in runs if r.experiment == BASELINE and (t := best_top1(r, budget)) is not None
        ]
        for baseline, variant in pairs:
            label = comparison_label(baseline, variant)
            cells[(label, budget)] = paired_speedup(runs, baseline, variant, budget)
        if CONTROL in present and "bn_x5" in present:
            total = cells[(comparison_label(BASELINE, "bn_x5"), budget)]
            rate = cells[(comparison_label(BASELINE, CONTROL), budget)]
            cells[(SAME_RATE, budget)] = _divide(total, rate)
    labels = tuple(dict.fromkeys(label for label, _ in cells))
    return BudgetStudy(tuple(budgets), labels, cells, targets)


# ---- rendering ----------------------------------------------------------------------------------------


def table_markdown(study: BudgetStudy) -> str:
    head = ["budget B (steps)", "Inception target (%)", *study.labels]
    lines = [f"| {' | '.join(head)} |", "|---:|---:|" + "---|" * len(study.labels)]
    for b in study.budgets:
        t = study.targets[b]
        if not t:
            lines.append(f"| {b:,} | not covered (Inception ran fewer steps) |" + " |" * len(study.labels))
            continue
        row = [
            f"{b:,}",
            stats_text(stats(t), 2),
            *(study.cells[(label, b)].text(seeds_word=False) for label in study.labels),
        ]
        lines.append(f"| {' | '.join(row)} |")
    return "\n".join(lines)


def growth_lines(study: BudgetStudy) -> list[str]:
    out = []
    for label in study.labels:
        g = study.growth(label)
        if g is not None and g.seeds:
            out.append(f"- {label}: {g.text(seeds_word=False)}")
    return out


def report_markdown(study: BudgetStudy, figure: str | None = None, wall_time: str | None = None) -> str:
    parts = [
        "# BN speed-up against the baseline's training length",
        "",
        table_markdown(study),
        "",
        "Geometric mean over seeds [95% seed-bootstrap interval] (seeds; how many are bounds). "
        + PAIRED_DEFINITION,
        "",
        "Growth, seed by seed: speed-up at the largest budget covered / at the smallest (1.00x: constant; "
        "geometric mean [95% seed-bootstrap interval]):",
        "",
        *growth_lines(study),
        "",
    ]
    if figure:
        parts += [f"![speed-up against budget]({figure})", ""]
    parts += ["Per seed (steps to target (grid range]: speed-up [range)):", ""]
    for label in study.labels:
        for b in study.budgets:
            cell = study.cells[(label, b)]
            if label != SAME_RATE:  # quotients have no crossing of their own
                parts += [f"- {label}, B = {b:,}, seed {s.seed}: {s.text()}" for s in cell.seeds]
    if wall_time:
        parts += ["", f"Wall time: {wall_time}"]
    return "\n".join(parts) + "\n"


def speedup_figure(study: BudgetStudy) -> Figure:
    """Speed-up against the baseline's budget (log axes): one thin line per seed, the geometric mean with its
    seed-bootstrap interval (thick, error bars), bounds as triangles (up: at least, down: at most). The
    paper's speed-ups belong to 31 x 10^6 steps and are named in the title, not drawn: nothing is
    extrapolated."""
    figure = Figure(figsize=(8.0, 6.5))
    ax = figure.add_subplot()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    any_bound = False
    for i, label in enumerate(study.labels):
        color, cells = colors[i % len(colors)], [(b, study.cells[(label, b)]) for b in study.budgets]
        seeds = sorted({s.seed for _, c in cells for s in c.seeds}, key=lambda s: (s is None, s))
        for seed in seeds:
            points = [(b, s.value, s.bound) for b, c in cells for s in c.seeds if s.seed == seed]
            ax.plot([p[0] for p in points], [p[1] for p in points], color=color, lw=0.7, alpha=0.45)
            for marker, kind in (("^", ">="), ("v", "<")):
                bounded = [(b, v) for b, v, k in points if k == kind]
                if bounded:
                    ax.plot(*zip(*bounded, strict=True), marker, color=color, alpha=0.7, ls="none")
                    any_bound = True
        means = [(b, c.mean, c.interval()) for b, c in cells if c.mean is not None]
        if means:
            x, y = [m[0] for m in means], [m[1] for m in means]
            err = [[m[1] - (m[2] or (m[1], m[1]))[0] for m in means], [(m[2] or (m[1], m[1]))[1] - m[1]
                   for m in means]]  # fmt: skip
            ax.errorbar(x, y, yerr=err, color=color, lw=2, marker="o", capsize=3, label=label)
    ax.plot([], [], color="0.4", lw=0.7, label="one seed")
    if any_bound:
        ax.plot([], [], "^", color="0.4", ls="none", label="a seed's bound (up: at least; down: at most)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(study.budgets), [f"{b:,}" for b in study.budgets])
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v in (0.5, 2, 3, 5, 20) else ""))
    ax.set_xlabel("Inception's budget B (steps of 32 images)")
    ax.set_ylabel("Speed-up (steps to Inception's best within B)")
    p5, p30 = (figure3_speedup(v) for v in VARIANTS)
    ax.set_title(
        "Speed-up paired by seed against the baseline's budget\n(thick: geometric mean, 95% seed-bootstrap "
        f"interval; the paper, at 31 x 10^6 steps:\nBN-x5 {p5:.1f}x, BN-x30 {p30:.1f}x, "
        "not extrapolated here)",
        fontsize="medium",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", ncol=2)
    figure.tight_layout()
    return figure


def plot_speedup(study: BudgetStudy, stem: Path) -> list[Path]:
    return save_figure(speedup_figure(study), stem)
