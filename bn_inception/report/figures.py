"""Figures 1 and 2 of the paper from a sweep's runs, as PNG and SVG (an Agg canvas: no pyplot, no global
backend switch; a fixed SVG hash salt and no date, so the same logs give the same files)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bn_inception.report.runlogs import (
    PERCENTILE_TAGS,
    ReportError,
    RunLog,
    act_percentiles,
    hydra_value,
    is_mnist_run,
    last_hidden_probe,
    uses_batch_norm,
)
from bn_inception.report.table2 import crossing, network_name, variant_order

# Reproducible SVG: element ids come from a salted hash; the default salt is random per process.
_SVG_RC = {"svg.hashsalt": "bn-inception-report"}
WITHOUT_BN, WITH_BN = "Without BN", "With BN"
BAND_LABEL = "mean over seeds; band: min-max"
DATASET_NAMES = {
    "fashion_mnist": "Fashion-MNIST",
    "imagenet": "ImageNet",
    "imagenet_subset": "ImageNet subset",
    "synthetic": "synthetic images",
    "mnist": "MNIST",
}


@dataclass(frozen=True)
class Curve:
    steps: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n_runs: int


def mean_curve(runs: list[RunLog]) -> Curve:
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for e in run.finite_evals():
            by_step.setdefault(e.step, []).append(e.top1)
    steps = sorted(by_step)
    return Curve(
        steps=tuple(steps),
        mean=tuple(math.fsum(by_step[s]) / len(by_step[s]) for s in steps),
        low=tuple(min(by_step[s]) for s in steps),
        high=tuple(max(by_step[s]) for s in steps),
        n_runs=len(runs),
    )


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    FigureCanvasAgg(figure)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    with matplotlib.rc_context(_SVG_RC):
        figure.savefig(paths[0], dpi=150)
        figure.savefig(paths[1], metadata={"Date": None})
    return paths


def _plot_curve(ax, curve: Curve, label: str, color: str) -> None:
    ax.plot(curve.steps, curve.mean, color=color, label=label + (f" (n={curve.n_runs})" * (curve.n_runs > 1)))
    if curve.n_runs > 1:
        ax.fill_between(curve.steps, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)


def dataset_name(runs: list[RunLog]) -> str | None:
    for run in runs:
        name = hydra_value(run.run_dir, "data.name")
        if name:
            return DATASET_NAMES.get(str(name), str(name))
    return None


FIGURE2_BOTTOM = 40.0  # percent: the paper's Figure 2 spans 0.4-0.8 of accuracy


def _plot_variant(ax, group: list[RunLog], variant: str, color: str) -> tuple[Curve, bool]:
    curve = mean_curve(group)
    label = network_name(variant)
    if curve.steps and max(curve.high) < FIGURE2_BOTTOM:
        label += f" (below the axis: best {max(curve.mean):.1f}%)"
    _plot_curve(ax, curve, label, color)
    diverged = [run for run in group if run.diverged]
    for run in diverged:  # an x where it stopped, at its last accuracy before it (0 if none)
        before = [e.top1 for e in run.finite_evals() if e.step <= run.diverged_at_step]
        ax.plot([run.diverged_at_step], [before[-1] if before else 0.0], "x", ms=9, mew=2, color=color)
    return curve, bool(diverged)


def figure2(
    runs: list[RunLog], target_top1: float | None, log_x: bool = False, title: str | None = None
) -> Figure:
    """Figure 2 as the paper's: mean curve per variant (min-max band), "steps to match Inception" markers,
    y from 40% (a curve below says so in the legend); the legend outside the axes, covering no curve."""
    runs = [run for run in runs if not is_mnist_run(run)]
    figure = Figure(figsize=(9.0, 4.5))
    ax = figure.add_subplot()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    any_diverged, matches, top = False, [], FIGURE2_BOTTOM + 40.0
    for i, variant in enumerate(variant_order({run.experiment for run in runs})):
        color = colors[i % len(colors)]
        curve, diverged = _plot_variant(ax, [r for r in runs if r.experiment == variant], variant, color)
        any_diverged |= diverged
        top = max([top, *curve.high])
        if target_top1 is not None and variant != "inception":
            cross = crossing(list(zip(curve.steps, curve.mean, strict=True)), target_top1)
            matches += [(cross[1], color)] if cross and cross[0] != "never" else []
    if any_diverged:  # one neutral legend entry for every variant's x
        ax.plot([], [], marker="x", markersize=9, mew=2, color="k", ls="none", label="diverged")
    if target_top1 is not None:
        ax.axhline(
            target_top1, color="0.4", ls="--", lw=1, label=f"target {target_top1:.2f}% (Inception's best)"
        )
    for step, color in matches:  # the paper's "Steps to match Inception" markers
        ax.plot([step], [target_top1], "o", mfc="white", mec=color, mew=1.5, ms=7, zorder=5)
    if matches:
        ax.plot([], [], "o", mfc="white", mec="k", mew=1.5, ms=7, ls="none", label="steps to match Inception")
    if any(len({r.seed for r in runs if r.experiment == v}) > 1 for v in {r.experiment for r in runs}):
        ax.fill_between([], [], [], color="0.6", alpha=0.3, linewidth=0, label=BAND_LABEL)
    ax.set_ylim(FIGURE2_BOTTOM, min(100.0, 5.0 * math.ceil(top / 5.0 + 1e-9)))
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("Training steps" + (" (log scale)" if log_x else ""))
    ax.set_ylabel("Validation accuracy @1 (%)")
    dataset = dataset_name(runs)
    default = "Figure 2: single-crop validation accuracy during training" + (f", {dataset}" * bool(dataset))
    ax.set_title(title or default, fontsize="medium")
    ax.grid(alpha=0.3, which="both" if log_x else "major")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", borderaxespad=0.0)
    figure.tight_layout()
    return figure


@dataclass(frozen=True)
class Percentiles:
    run_path: str
    probe: str
    series: dict[str, list[tuple[int, float]]]  # "p15"/"p50"/"p85" -> [(step, value)]


@dataclass(frozen=True)
class Figure1Data:
    runs: dict[str, list[RunLog]]  # WITHOUT_BN / WITH_BN -> runs (several seeds possible)
    percentiles: dict[str, Percentiles | None]  # from the lowest-seed run of each group with act/ scalars


def _group_percentiles(group: list[RunLog], probe: str | None) -> Percentiles | None:
    for run in group:  # runs are sorted by seed: the first one with act/ scalars is the one shown
        probes = act_percentiles(run.run_dir)
        if not probes:
            continue
        if probe is not None and probe not in probes:
            raise ReportError(
                f"probe {probe!r} has no act/{probe}/p15|p50|p85 scalars in run {run.path}; "
                f"its probes are: {', '.join(sorted(probes))}"
            )
        chosen = probe if probe is not None else last_hidden_probe(sorted(probes))
        return Percentiles(run.path, chosen, probes[chosen])
    return None


def figure1_data(runs: list[RunLog], probe: str | None = None) -> Figure1Data | None:
    mnist = [run for run in runs if is_mnist_run(run)]
    if not mnist:
        return None
    groups: dict[str, list[RunLog]] = {WITHOUT_BN: [], WITH_BN: []}
    for run in mnist:
        groups[WITH_BN if uses_batch_norm(run) else WITHOUT_BN].append(run)
    return Figure1Data(groups, {label: _group_percentiles(group, probe) for label, group in groups.items()})


def _plot_percentiles(ax, percentiles: Percentiles | None, title: str, color: str) -> None:
    if percentiles is None:
        ax.text(
            0.5, 0.5, "no act/<probe>/p15|p50|p85 scalars", ha="center", va="center", transform=ax.transAxes
        )
    else:
        for stat, style in zip(PERCENTILE_TAGS, (":", "-", "--"), strict=True):
            steps, values = zip(*percentiles.series[stat], strict=True)
            ax.plot(steps, values, color=color, ls=style, label=f"{stat[1:]}th percentile")
        ax.legend(loc="best", fontsize="small")
    # The paper's words (Figure 1 caption); the probe's internal name stays out of the figure.
    ax.set_title(f"{title}: input to a typical sigmoid", fontsize="medium")
    ax.set_xlabel("Training steps")
    ax.grid(alpha=0.3)


def figure1(data: Figure1Data) -> Figure:
    figure = Figure(figsize=(13.0, 4.0))
    ax_a, ax_b, ax_c = figure.subplots(1, 3)
    ax_c.sharey(ax_b)  # same scale, so (b)'s drift and (c)'s stability compare by eye as in the paper
    for label, color in ((WITHOUT_BN, "C0"), (WITH_BN, "C1")):
        if data.runs[label]:
            _plot_curve(ax_a, mean_curve(data.runs[label]), label, color)
    ax_a.set_title("(a) Test accuracy", fontsize="medium")
    ax_a.set_xlabel("Training steps")
    ax_a.set_ylabel("Test accuracy (%)")
    ax_a.grid(alpha=0.3)
    ax_a.legend(loc="lower right", fontsize="small")
    _plot_percentiles(ax_b, data.percentiles[WITHOUT_BN], "(b) " + WITHOUT_BN, "C0")
    _plot_percentiles(ax_c, data.percentiles[WITH_BN], "(c) " + WITH_BN, "C1")
    ax_b.set_ylabel("Sigmoid input ({15, 50, 85}th percentiles)")
    dataset = dataset_name([r for group in data.runs.values() for r in group])
    if dataset:
        figure.suptitle(f"Figure 1: {dataset}", fontsize="medium")
    figure.tight_layout()
    return figure
