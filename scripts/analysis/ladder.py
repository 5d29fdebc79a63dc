"""Learning-rate ladders (scripts/reproduce_lr_ladder.sh, issue 14): the same network at several multiples of
Inception's rate, short runs, to test the two small-scale mismatches with the paper:

- BN-x30 starts *faster* than BN-x5 here, where the paper's starts slower (Sec. 4.2.2, Figure 2).
  Hypothesis: at this scale a 30x rate is still below the rate at which large steps cost early progress; that
  threshold exists, higher up. Test: BN-x5's network at 5, 30, 100, 300x; early accuracy against the rate.
- Inception at 5x (no BN) does not diverge here, where the paper's "reached" nothing useful. Hypothesis:
  the divergence threshold without BN is higher at this scale, and BN still moves it up. Test: Inception at
  5, 10, 30, 100x against BN-x5's network at the same multiples: which diverge or stay at chance.

A rung is the runs of one (experiment, lr multiple), over seeds; the multiple is read from each run's
``.hydra/config.yaml`` (``optim.lr_mult``; ``optim.lr``, when set, as a multiple of ``optim.base_lr``).
Hand-written: a table of this project's results.json curves (no library reads them).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bn_inception.report.runlogs import ReportError, RunLog, hydra_value
from bn_inception.report.table2 import network_name, stats, stats_text, variant_order

CHANCE_FACTOR = 1.5  # "stayed at chance": final top-1 below 1.5 x chance (15% on 10 classes)


@dataclass(frozen=True)
class Rung:
    experiment: str
    lr_mult: float
    runs: tuple[RunLog, ...]

    def top1_at(self, step: int) -> list[float]:
        """Each run's top-1 at `step` (runs without an evaluation there, e.g. diverged, left out)."""
        return [e.top1 for r in self.runs for e in r.finite_evals() if e.step == step]

    @property
    def diverged(self) -> int:
        return sum(r.diverged for r in self.runs)

    def at_chance(self, chance: float) -> int:
        """Runs that did not diverge but whose last evaluation is below CHANCE_FACTOR x chance."""
        return sum(
            not r.diverged and bool(r.finite_evals()) and r.finite_evals()[-1].top1 < CHANCE_FACTOR * chance
            for r in self.runs
        )


def lr_multiple(run: RunLog) -> float:
    lr, base = hydra_value(run.run_dir, "optim.lr"), hydra_value(run.run_dir, "optim.base_lr")
    if lr is not None and base:
        return float(lr) / float(base)
    mult = hydra_value(run.run_dir, "optim.lr_mult")
    if mult is None:
        raise ReportError(f"{run.run_dir} has no .hydra/config.yaml with optim.lr_mult; not a train.py run")
    return float(mult)


def build_ladder(runs: list[RunLog]) -> list[Rung]:
    """Rungs in the paper's variant order, then by rate."""
    groups: dict[tuple[str, float], list[RunLog]] = {}
    for run in runs:
        groups.setdefault((run.experiment, lr_multiple(run)), []).append(run)
    order = {v: i for i, v in enumerate(variant_order({e for e, _ in groups}))}
    keys = sorted(groups, key=lambda k: (order[k[0]], k[1]))
    return [Rung(e, m, tuple(groups[(e, m)])) for e, m in keys]


def ladder_markdown(rungs: list[Rung], steps: list[int], chance: float = 10.0) -> str:
    head = ["network", "lr (x Inception's)", "runs", *(f"top-1 @ {s:,} (%)" for s in steps), "best top-1 (%)"]
    head += ["diverged", f"at chance (< {CHANCE_FACTOR * chance:.0f}%)"]
    lines = [f"| {' | '.join(head)} |", "|---|---:|---:|" + "---:|" * (len(head) - 3)]
    for rung in rungs:
        bests = [max(e.top1 for e in r.finite_evals()) for r in rung.runs if r.finite_evals()]
        n = len(rung.runs)
        cells = [network_name(rung.experiment), f"{rung.lr_mult:g}x", str(n)]
        cells += [stats_text(stats(rung.top1_at(s)), 1) for s in steps]
        cells += [stats_text(stats(bests), 1), f"{rung.diverged}/{n}", f"{rung.at_chance(chance)}/{n}"]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def early_order(rungs: list[Rung], experiment: str, step: int) -> list[tuple[float, float]]:
    """(lr multiple, mean top-1 at `step`) for one network, in rate order; rungs without it left out."""
    out = []
    for rung in rungs:
        values = rung.top1_at(step)
        if rung.experiment == experiment and values:
            out.append((rung.lr_mult, statistics.fmean(values)))
    return out


def best_rate(rungs: list[Rung], experiment: str, step: int) -> float | None:
    """The multiple with the highest mean top-1 at `step` for one network (None without data)."""
    points = early_order(rungs, experiment, step)
    return max(points, key=lambda p: (p[1], -p[0]))[0] if points else None


def divergence_threshold(rungs: list[Rung], experiment: str, chance: float = 10.0) -> float | None:
    """The lowest multiple at which any run of the network diverged or stayed at chance (None: none did)."""
    failed = [r.lr_mult for r in rungs if r.experiment == experiment and (r.diverged or r.at_chance(chance))]
    return min(failed) if failed else None


def summary_lines(rungs: list[Rung], step: int) -> list[str]:
    out = []
    for experiment in dict.fromkeys(r.experiment for r in rungs):
        best = best_rate(rungs, experiment, step)
        threshold = divergence_threshold(rungs, experiment)
        name = network_name(experiment)
        early = f"highest top-1 at step {step:,} at {best:g}x" if best is not None else "no evaluation"
        fails = f"first failure (diverged or at chance) at {threshold:g}x" if threshold else "no rate failed"
        out.append(f"- {name}: {early}; {fails}.")
    return out
