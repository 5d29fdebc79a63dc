"""The sweep report: Table 2, Figures 1-2 and the paper's claims next to ours, from a sweep's run logs.

Every output is a deterministic function of the logs (results.json, TensorBoard scalars for Figure 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bn_inception.report.figures import (
    WITH_BN,
    WITHOUT_BN,
    Curve,
    Figure1Data,
    figure1,
    figure1_data,
    figure2,
    mean_curve,
    save_figure,
)
from bn_inception.report.runlogs import is_mnist_run, load_runs
from bn_inception.report.table2 import (
    VARIANTS,
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


# ---- the paper's claims (Sec. 4.1, 4.2.2), computed on our runs ----------------------------------------


def _steps(table: Table2, *variants: str) -> list[float] | str:
    """Each variant's mean steps to target, or why not."""
    out = []
    for variant in variants:
        row = table.row(variant)
        if row is None:
            return f"not computed: no `{variant}` runs in this sweep"
        if table.target_top1 is None:
            return "not computed: no `inception` runs, so no target"
        if row.steps_to_target is None:
            return f"not computed: `{variant}` never reached the target (0/{row.n_runs} runs)"
        out.append(row.steps_to_target.mean)
    return out


def _ratio_claim(a: str, b: str, text: Callable[[float, float], str]) -> Callable[[Table2], str]:
    def claim(table: Table2) -> str:
        steps = _steps(table, a, b)
        return steps if isinstance(steps, str) else text(*steps)

    return claim


def _best_5x_claim(table: Table2) -> str:
    if isinstance(steps := _steps(table, "inception"), str):
        return steps
    x30, inception = table.row("bn_x30"), table.row("inception")
    if x30 is None or x30.best_step is None:
        return "not computed: no `bn_x30` runs with an evaluation in this sweep"
    return (
        f"{steps[0] / x30.best_step.mean:.2f}x ({steps[0]:.0f}/{x30.best_step.mean:.0f}); BN-x30 best "
        f"{x30.best_top1.mean:.2f}% vs Inception {inception.best_top1.mean:.2f}%"
    )


def _order_claim(table: Table2) -> str:
    rows = [r for r in table.rows if r.variant in VARIANTS and r.best_top1 is not None]
    if not rows:
        return "not computed: none of the paper's five variants has an evaluation in this sweep"
    rows.sort(key=lambda r: (-r.best_top1.mean, VARIANTS.index(r.variant)))
    return " > ".join(f"{network_name(r.variant)} {r.best_top1.mean:.2f}" for r in rows)


def _about(variant: str, text: Callable[[Row, Table2], str]) -> Callable[[Table2], str]:
    def claim(table: Table2) -> str:
        row = table.row(variant)
        return f"not computed: no `{variant}` runs in this sweep" if row is None else text(row, table)

    return claim


def _sigmoid_never_claim(row: Row, table: Table2) -> str:
    best = f"best {row.best_top1.mean:.2f}%" if row.best_top1 else "no evaluation"
    if table.target_top1 is None:
        return f"no target (no `inception` runs); {best}"
    return f"reached the target in {row.n_reached}/{row.n_runs} runs; {best}"


def _chance_claim(row: Row, table: Table2) -> str:
    if row.best_top1 is None:
        return f"no evaluation ({row.n_runs} runs)"
    return f"best {row.best_top1.mean:.2f}% over {row.best_top1.n} run(s) (chance = 100/number of classes)"


def _divergence_claim(row: Row, table: Table2) -> str:
    diverged = [r.diverged_at_step for r in row.runs if r.diverged_at_step is not None]
    at = f" (at step {', '.join(map(str, diverged))})" if diverged else ""
    best = f"; best {row.best_top1.mean:.2f}%" if row.best_top1 else ""
    return f"diverged in {len(diverged)}/{row.n_runs} runs{at}{best}"


# (the paper's claim, the paper's number for it, ours)
CLAIMS: tuple[tuple[str, str, Callable[[Table2], str]], ...] = (
    ("BN-Baseline matches Inception's accuracy in under half the steps",
     "0.43 of Inception's steps (13.3/31.0), i.e. 2.3x fewer",
     _ratio_claim("inception", "bn_baseline",
                  lambda base, ours: f"{ours / base:.2f} of Inception's steps ({ours:.0f}/{base:.0f}), i.e. "
                                     f"{base / ours:.2f}x fewer")),
    ("BN-x5 needs 14x fewer steps than Inception to reach Inception's best", "14.8x (31.0/2.1)",
     _ratio_claim("inception", "bn_x5",
                  lambda base, ours: f"{base / ours:.2f}x ({base:.0f}/{ours:.0f} steps)")),
    ("BN-x30 is a bit slower than BN-x5 to reach Inception's best", "1.29x BN-x5's steps (2.7/2.1)",
     _ratio_claim("bn_x5", "bn_x30",
                  lambda x5, x30: f"{x30 / x5:.2f}x BN-x5's steps ({x30:.0f}/{x5:.0f})")),
    ("BN-x30 reaches its best in 5x fewer steps than Inception needs for its best",
     "5.2x (31.0/6.0); BN-x30 best 74.8% vs Inception 72.2%", _best_5x_claim),
    ("Best accuracies, highest first",
     "BN-x30 74.8 > BN-x5 73.0 > BN-Baseline 72.7 > Inception 72.2 > BN-x5-Sigmoid 69.8", _order_claim),
    ("BN-x5-Sigmoid never reaches Inception's best but trains (69.8%)", "never; best 69.8%",
     _about("bn_x5_sigmoid", _sigmoid_never_claim)),
    ("Inception with sigmoid and no BN never rises above chance", "at most 1/1000 (0.1%) with 1000 classes",
     _about("inception_sigmoid", _chance_claim)),
    ("Inception (no BN) at 5x the learning rate diverges", "its parameters reached machine infinity",
     _about("inception_x5", _divergence_claim)),
)  # fmt: skip


def _mnist_claim(text: Callable[[Curve, Curve], str]) -> Callable[[Figure1Data], str]:
    def claim(data: Figure1Data) -> str:
        without, with_bn = mean_curve(data.runs[WITHOUT_BN]), mean_curve(data.runs[WITH_BN])
        if not without.steps or not with_bn.steps:
            return "not computed: needs evaluated runs both with and without BN"
        return text(without, with_bn)

    return claim


def _mnist_accuracy_claim(without: Curve, with_bn: Curve) -> str:
    return (
        f"best {max(with_bn.mean):.2f}% with BN vs {max(without.mean):.2f}% without; last evaluation "
        f"{with_bn.mean[-1]:.2f}% vs {without.mean[-1]:.2f}% (mean over {with_bn.n_runs} and "
        f"{without.n_runs} run(s))"
    )


def _mnist_faster_claim(without: Curve, with_bn: Curve) -> str:
    target = max(without.mean)
    without_step = without.steps[without.mean.index(target)]
    with_step = next((s for s, m in zip(with_bn.steps, with_bn.mean, strict=True) if m >= target), None)
    if with_step is None:
        return f"with BN never reaches the no-BN best {target:.2f}% (without BN: step {without_step})"
    text = f"no-BN best {target:.2f}%: reached at step {with_step} with BN vs step {without_step} without"
    return text + (f" ({without_step / with_step:.2f}x fewer steps)" if with_step > 0 else "")


def _drift(data: Figure1Data, label: str) -> str:
    if (percentiles := data.percentiles[label]) is None:
        return f"{label}: no act/ scalars"
    p50 = [v for _, v in percentiles.series["p50"]]
    low, high = percentiles.series["p15"], percentiles.series["p85"]
    widths = [hi - lo for (_, lo), (_, hi) in zip(low, high, strict=False)]
    return (
        f"{label} ({percentiles.probe}): p50 spans {max(p50) - min(p50):.3f}, "
        f"p85-p15 ranges {min(widths):.3f}..{max(widths):.3f}"
    )


MNIST_CLAIMS: tuple[tuple[str, str, Callable[[Figure1Data], str]], ...] = (
    ("With BN the MLP reaches higher test accuracy", "higher (Figure 1a, read off the plot; no number given)",
     _mnist_claim(_mnist_accuracy_claim)),
    ("With BN the MLP gets to the no-BN network's best accuracy in fewer steps",
     "faster (Figure 1a; no number given)", _mnist_claim(_mnist_faster_claim)),
    ("Without BN the sigmoid input's distribution drifts; with BN it stays stable",
     "drifts vs stable (Figure 1b, c; no number given)",
     lambda data: f"{_drift(data, WITHOUT_BN)}; {_drift(data, WITH_BN)} (over all logged steps)"),
)  # fmt: skip


def _claims_table(claims: tuple, argument: Table2 | Figure1Data) -> list[str]:
    rows = [f"| {text} | {paper} | {ours(argument)} |" for text, paper, ours in claims]
    return ["| claim | paper | ours |", "|---|---|---|", *rows, ""]


# ---- assembling the report -------------------------------------------------------------------------------


def report_markdown(
    sweep_name: str, runs: list, table: Table2, table_md: str, mnist: Figure1Data | None
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
        lines += ["## The paper's claims (Sec. 4.2.2) next to this sweep", "", *_claims_table(CLAIMS, table)]
    lines += ["## Figure 1 (Sec. 4.1, MLP with and without BN)", ""]
    if mnist is None:
        return "\n".join([*lines, "No `mnist_figure1` runs in this sweep.", ""])
    counts = ", ".join(f"{label}: {len(group)} run(s)" for label, group in mnist.runs.items())
    lines += ["![Figure 1](figure1.png)", "", f"Figure 1 as [SVG](figure1.svg); {counts}.", ""]
    if shown := [f"{label}: {p.run_path}" for label, p in mnist.percentiles.items() if p is not None]:
        lines += [f"Panels (b, c) show the lowest-seed run with act/ scalars ({'; '.join(shown)}).", ""]
    return "\n".join(lines + _claims_table(MNIST_CLAIMS, mnist))


def write_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    probe: str | None = None,
    log_x: bool = False,
    title: str | None = None,
) -> ReportOutputs:
    """table2.md|json, report.md, figure2 (ImageNet variants) and figure1 (`mnist_figure1` runs), png and
    svg, into `out_dir` (default: `sweep_dir`); `probe`: Figure 1's (default: the last hidden layer's unit);
    `log_x`, `title`: Figure 2's. Bad input raises a one-line `ReportError`."""
    sweep = Path(sweep_dir)
    runs = load_runs(sweep)
    out = Path(out_dir) if out_dir is not None else sweep
    out.mkdir(parents=True, exist_ok=True)
    table = build_table2(runs)
    table_md = table2_markdown(table)
    mnist = figure1_data(runs, probe)
    (out / "table2.md").write_text(table_md)
    (out / "table2.json").write_text(json.dumps(table2_json(table), indent=2, allow_nan=False) + "\n")
    written = [out / "table2.md", out / "table2.json"]
    if table.rows:
        written += save_figure(figure2(runs, table.target_top1, log_x, title), out / "figure2")
    if mnist is not None:
        written += save_figure(figure1(mnist), out / "figure1")
    (out / "report.md").write_text(report_markdown(sweep.resolve().name, runs, table, table_md, mnist))
    return ReportOutputs(table, table_md, (*written, out / "report.md"))
