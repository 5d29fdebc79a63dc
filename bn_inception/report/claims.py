"""The sweep report: Table 2, Figures 1-2 and the paper's claims next to ours, from a sweep's run logs.

`write_report(sweep_dir)` reads every results.json under the sweep (and the runs' TensorBoard scalars for
Figure 1) and writes `table2.md`, `table2.json`, `report.md`, `figure2.png|svg` (when there are
ImageNet-variant runs) and `figure1.png|svg` (when there are `mnist_figure1` runs). Every output is a
deterministic function of the logs. Table 2's definition: `bn_inception.report.table2`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bn_inception.report import paper
from bn_inception.report.figures import (
    WITH_BN,
    WITHOUT_BN,
    Figure1Data,
    figure1_data,
    mean_curve,
    plot_figure1,
    plot_figure2,
)
from bn_inception.report.runlogs import RunLog, is_mnist_run, load_runs
from bn_inception.report.table2 import (
    Row,
    Table2,
    build_table2,
    network_name,
    table2_json,
    table2_markdown,
)


@dataclass(frozen=True)
class ReportOutputs:
    table: Table2
    table_markdown: str  # the content of table2.md
    files: tuple[Path, ...]  # every file written, in the order written


# ---- the paper's claims, computed on our runs ------------------------------------------------------------


def _steps(row: Row | None) -> float | None:
    return row.steps_to_target.mean if row is not None and row.steps_to_target is not None else None


def _missing(table: Table2, *variants: str) -> str | None:
    """Why a claim cannot be computed, or None: a variant absent, or it never reached the target."""
    for variant in variants:
        row = table.row(variant)
        if row is None:
            return f"not computed: no `{variant}` runs in this sweep"
        if table.target_top1 is None:
            return "not computed: no `inception` runs, so no target"
        if row.steps_to_target is None:
            return f"not computed: `{variant}` never reached the target (0/{row.n_runs} runs)"
    return None


def _speedup_claim(table: Table2, variant: str) -> str:
    if reason := _missing(table, "inception", variant):
        return reason
    ours, base = _steps(table.row(variant)), _steps(table.row("inception"))
    return f"{base / ours:.2f}x ({base:.0f}/{ours:.0f} steps)"


def _fraction_claim(table: Table2) -> str:
    if reason := _missing(table, "inception", "bn_baseline"):
        return reason
    ours, base = _steps(table.row("bn_baseline")), _steps(table.row("inception"))
    return f"{ours / base:.2f} of Inception's steps ({ours:.0f}/{base:.0f}), i.e. {base / ours:.2f}x fewer"


def _slower_start_claim(table: Table2) -> str:
    if reason := _missing(table, "bn_x5", "bn_x30"):
        return reason
    x30, x5 = _steps(table.row("bn_x30")), _steps(table.row("bn_x5"))
    return f"{x30 / x5:.2f}x BN-x5's steps ({x30:.0f}/{x5:.0f})"


def _best_5x_claim(table: Table2) -> str:
    if reason := _missing(table, "inception"):
        return reason
    x30, inception = table.row("bn_x30"), table.row("inception")
    if x30 is None or x30.best_step is None:
        return "not computed: no `bn_x30` runs with an evaluation in this sweep"
    base = _steps(inception)
    return (
        f"{base / x30.best_step.mean:.2f}x ({base:.0f}/{x30.best_step.mean:.0f}); BN-x30 best "
        f"{x30.best_top1.mean:.2f}% vs Inception {inception.best_top1.mean:.2f}%"
    )


def _order_claim(table: Table2) -> str:
    rows = [r for r in table.rows if r.variant in paper.VARIANTS and r.best_top1 is not None]
    if not rows:
        return "not computed: none of the paper's five variants has an evaluation in this sweep"
    rows.sort(key=lambda r: (-r.best_top1.mean, paper.VARIANTS.index(r.variant)))
    return " > ".join(f"{network_name(r.variant)} {r.best_top1.mean:.2f}" for r in rows)


def _sigmoid_never_claim(table: Table2) -> str:
    row = table.row("bn_x5_sigmoid")
    if row is None:
        return "not computed: no `bn_x5_sigmoid` runs in this sweep"
    best = f"best {row.best_top1.mean:.2f}%" if row.best_top1 else "no evaluation"
    if table.target_top1 is None:
        return f"no target (no `inception` runs); {best}"
    return f"reached the target in {row.n_reached}/{row.n_runs} runs; {best}"


def _chance_claim(table: Table2) -> str:
    row = table.row("inception_sigmoid")
    if row is None:
        return "not computed: no `inception_sigmoid` runs in this sweep"
    if row.best_top1 is None:
        return f"no evaluation ({row.n_runs} runs)"
    return f"best {row.best_top1.mean:.2f}% over {row.best_top1.n} run(s) (chance = 100/number of classes)"


def _divergence_claim(table: Table2) -> str:
    row = table.row("inception_x5")
    if row is None:
        return "not computed: no `inception_x5` runs in this sweep"
    diverged = [r.diverged_at_step for r in row.runs if r.diverged_at_step is not None]
    at = f" (at step {', '.join(map(str, diverged))})" if diverged else ""
    best = f"; best {row.best_top1.mean:.2f}%" if row.best_top1 else ""
    return f"diverged in {len(diverged)}/{row.n_runs} runs{at}{best}"


_CLAIMS = {
    "bn_baseline_half_steps": _fraction_claim,
    "bn_x5_14x": lambda table: _speedup_claim(table, "bn_x5"),
    "bn_x30_slower_start": _slower_start_claim,
    "bn_x30_best_5x": _best_5x_claim,
    "max_accuracy_order": _order_claim,
    "bn_x5_sigmoid_never": _sigmoid_never_claim,
    "inception_sigmoid_chance": _chance_claim,
    "inception_x5_diverges": _divergence_claim,
}


def _best_and_last(runs: list[RunLog]) -> tuple[float, float, int] | None:
    curve = mean_curve(runs)
    return (max(curve.mean), curve.mean[-1], curve.n_runs) if curve.steps else None


def _mnist_accuracy_claim(data: Figure1Data) -> str:
    without, with_bn = _best_and_last(data.runs[WITHOUT_BN]), _best_and_last(data.runs[WITH_BN])
    if without is None or with_bn is None:
        return "not computed: needs evaluated runs both with and without BN"
    return (
        f"best {with_bn[0]:.2f}% with BN vs {without[0]:.2f}% without; last evaluation {with_bn[1]:.2f}% vs "
        f"{without[1]:.2f}% (mean over {with_bn[2]} and {without[2]} run(s))"
    )


def _mnist_faster_claim(data: Figure1Data) -> str:
    without, with_bn = mean_curve(data.runs[WITHOUT_BN]), mean_curve(data.runs[WITH_BN])
    if not without.steps or not with_bn.steps:
        return "not computed: needs evaluated runs both with and without BN"
    target = max(without.mean)
    without_step = without.steps[without.mean.index(target)]
    with_step = next((s for s, m in zip(with_bn.steps, with_bn.mean, strict=True) if m >= target), None)
    if with_step is None:
        return f"with BN never reaches the no-BN best {target:.2f}% (without BN: step {without_step})"
    return (
        f"no-BN best {target:.2f}%: reached at step {with_step} with BN vs step {without_step} without "
        f"({without_step / with_step:.2f}x fewer steps)"
        if with_step > 0
        else f"no-BN best {target:.2f}%: reached at step 0 with BN vs step {without_step} without"
    )


def _drift(data: Figure1Data, label: str) -> str:
    percentiles = data.percentiles[label]
    if percentiles is None:
        return f"{label}: no act/ scalars"
    p50 = [v for _, v in percentiles.series["p50"]]
    widths = [
        hi - lo
        for (_, lo), (_, hi) in zip(percentiles.series["p15"], percentiles.series["p85"], strict=False)
    ]
    return (
        f"{label} ({percentiles.probe}): p50 spans {max(p50) - min(p50):.3f}, "
        f"p85-p15 ranges {min(widths):.3f}..{max(widths):.3f}"
    )


def _mnist_drift_claim(data: Figure1Data) -> str:
    return f"{_drift(data, WITHOUT_BN)}; {_drift(data, WITH_BN)} (over all logged steps)"


_MNIST_CLAIMS = {
    "mnist_higher_accuracy": _mnist_accuracy_claim,
    "mnist_faster": _mnist_faster_claim,
    "mnist_stable_inputs": _mnist_drift_claim,
}


def _claims_table(claims: tuple[paper.Claim, ...], compute: dict, argument) -> list[str]:
    lines = ["| claim | paper | ours |", "|---|---|---|"]
    lines += [f"| {claim.text} | {claim.paper} | {compute[claim.key](argument)} |" for claim in claims]
    return lines


# ---- assembling the report -------------------------------------------------------------------------------


def report_markdown(
    sweep_name: str, runs: list[RunLog], table: Table2, table_md: str, mnist: Figure1Data | None
) -> str:
    n_mnist = sum(is_mnist_run(run) for run in runs)
    lines = [
        f"# Report: sweep `{sweep_name}`",
        "",
        f"Made by `python scripts/report.py <sweep dir>` from {len(runs)} runs' results.json "
        f"({len(runs) - n_mnist} for Table 2 and Figure 2, {n_mnist} `mnist_figure1` for Figure 1).",
        "",
        "#" + table_md,  # Table 2's title one level down
    ]
    if table.rows:
        lines += ["![Figure 2](figure2.png)", "", "Figure 2 as [SVG](figure2.svg).", ""]
        lines += ["## The paper's claims (Sec. 4.2.2) next to this sweep", ""]
        lines += _claims_table(paper.CLAIMS, _CLAIMS, table) + [""]
    lines += ["## Figure 1 (Sec. 4.1, MLP with and without BN)", ""]
    if mnist is None:
        lines += ["No `mnist_figure1` runs in this sweep.", ""]
    else:
        counts = ", ".join(f"{label}: {len(group)} run(s)" for label, group in mnist.runs.items())
        lines += ["![Figure 1](figure1.png)", "", f"Figure 1 as [SVG](figure1.svg); {counts}.", ""]
        shown = [f"{label}: {p.run_path}" for label, p in mnist.percentiles.items() if p is not None]
        if shown:
            lines += [f"Panels (b, c) show the lowest-seed run with act/ scalars ({'; '.join(shown)}).", ""]
        lines += _claims_table(paper.MNIST_CLAIMS, _MNIST_CLAIMS, mnist) + [""]
    return "\n".join(lines)


def _write_text(path: Path, text: str, written: list[Path]) -> None:
    path.write_text(text)
    written.append(path)


def write_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    probe: str | None = None,
    log_x: bool = False,
    title: str | None = None,
) -> ReportOutputs:
    """Write the report files for the runs under `sweep_dir` into `out_dir` (default: `sweep_dir`).

    `probe` picks Figure 1's probe (default: the last hidden layer's single unit, `hidden3_last/unit0`);
    `log_x` draws Figure 2's steps on a log axis (runs of very different lengths); `title` replaces its
    title (a sweep that changes the paper's setting says so on the figure).
    Raises `ReportError` (one line) for a missing sweep directory, no results.json, or a malformed one.
    """
    sweep = Path(sweep_dir)
    runs = load_runs(sweep)
    out = Path(out_dir) if out_dir is not None else sweep
    out.mkdir(parents=True, exist_ok=True)
    table = build_table2(runs)
    table_md = table2_markdown(table)
    mnist = figure1_data(runs, probe)
    written: list[Path] = []
    _write_text(out / "table2.md", table_md, written)
    _write_text(
        out / "table2.json", json.dumps(table2_json(table), indent=2, allow_nan=False) + "\n", written
    )
    if table.rows:
        written += plot_figure2(runs, table.target_top1, out / "figure2", log_x=log_x, title=title)
    if mnist is not None:
        written += plot_figure1(mnist, out / "figure1")
    sweep_name = sweep.resolve().name
    _write_text(out / "report.md", report_markdown(sweep_name, runs, table, table_md, mnist), written)
    return ReportOutputs(table, table_md, tuple(written))
