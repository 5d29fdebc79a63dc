"""The sweep report: Table 2, Figures 1-2 and the paper's claims next to ours, from a sweep's run logs.

Every output is a deterministic function of the logs (results.json, TensorBoard scalars for Figure 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bn_inception.report import figures as fig
from bn_inception.report.runlogs import is_mnist_run, load_runs
from bn_inception.report.table2 import VARIANTS, build_table2, table2_markdown, table_row


@dataclass(frozen=True)
class ReportOutputs:
    table_markdown: str  # the content of table2.md
    files: tuple[Path, ...]  # every file written, in the order written


# ---- the paper's claims (Sec. 4.1, 4.2.2), computed on our runs ----------------------------------------


class NotComputed(Exception):
    """Why a claim has no number on this sweep: its row reads "not computed: <why>"."""


def _row(table: dict, variant: str) -> dict:
    if (row := table_row(table, variant)) is None:
        raise NotComputed(f"no `{variant}` runs in this sweep")
    return row


def _steps(table: dict, variant: str) -> float:
    """The variant's mean steps to target."""
    row = _row(table, variant)
    if table["target_top1"] is None:
        raise NotComputed("no `inception` runs, so no target")
    if row["steps_to_target"] is None:
        raise NotComputed(f"`{variant}` never reached the target (0/{row['n_runs']} runs)")
    return row["steps_to_target"]["mean"]


def _ratio(a: str, b: str, template: str, table: dict) -> str:
    """`template` filled with a's and b's mean steps to target and q = b / a, r = a / b."""
    steps_a, steps_b = _steps(table, a), _steps(table, b)
    return template.format(a=steps_a, b=steps_b, q=steps_b / steps_a, r=steps_a / steps_b)


def _best_5x_claim(table: dict) -> str:
    steps, x30 = _steps(table, "inception"), table_row(table, "bn_x30")
    if x30 is None or x30["steps_to_best"] is None:
        raise NotComputed("no `bn_x30` runs with an evaluation in this sweep")
    best_step, inception = x30["steps_to_best"]["mean"], table_row(table, "inception")
    return (
        f"{steps / best_step:.2f}x ({steps:.0f}/{best_step:.0f}); BN-x30 best "
        f"{x30['best_top1']['mean']:.2f}% vs Inception {inception['best_top1']['mean']:.2f}%"
    )


def _order_claim(table: dict) -> str:
    rows = [r for r in table["rows"] if r["variant"] in VARIANTS and r["best_top1"] is not None]
    if not rows:
        raise NotComputed("none of the paper's five variants has an evaluation in this sweep")
    rows.sort(key=lambda r: (-r["best_top1"]["mean"], VARIANTS.index(r["variant"])))
    return " > ".join(f"{r['network']} {r['best_top1']['mean']:.2f}" for r in rows)


def _best(row: dict) -> str | None:
    return f"best {row['best_top1']['mean']:.2f}%" if row["best_top1"] else None


def _sigmoid_never_claim(table: dict) -> str:
    row = _row(table, "bn_x5_sigmoid")
    best = _best(row) or "no evaluation"
    if table["target_top1"] is None:
        return f"no target (no `inception` runs); {best}"
    return f"reached the target in {row['n_reached']}/{row['n_runs']} runs; {best}"


def _chance_claim(table: dict) -> str:
    row = _row(table, "inception_sigmoid")
    if (best := row["best_top1"]) is None:
        return f"no evaluation ({row['n_runs']} runs)"
    return f"best {best['mean']:.2f}% over {best['n']} run(s) (chance = 100/number of classes)"


def _divergence_claim(table: dict) -> str:
    row = _row(table, "inception_x5")
    diverged = [r["diverged_at_step"] for r in row["runs"] if r["diverged_at_step"] is not None]
    at = f" (at step {', '.join(map(str, diverged))})" if diverged else ""
    best = _best(row)
    return f"diverged in {len(diverged)}/{row['n_runs']} runs{at}{'; ' + best if best else ''}"


# (the paper's claim, the paper's number for it, ours)
CLAIMS: tuple[tuple[str, str, Callable[[dict], str]], ...] = (
    ("BN-Baseline matches Inception's accuracy in under half the steps",
     "0.43 of Inception's steps (13.3/31.0), i.e. 2.3x fewer",
     partial(_ratio, "inception", "bn_baseline",
             "{q:.2f} of Inception's steps ({b:.0f}/{a:.0f}), i.e. {r:.2f}x fewer")),
    ("BN-x5 needs 14x fewer steps than Inception to reach Inception's best", "14.8x (31.0/2.1)",
     partial(_ratio, "inception", "bn_x5", "{r:.2f}x ({a:.0f}/{b:.0f} steps)")),
    ("BN-x30 is a bit slower than BN-x5 to reach Inception's best", "1.29x BN-x5's steps (2.7/2.1)",
     partial(_ratio, "bn_x5", "bn_x30", "{q:.2f}x BN-x5's steps ({b:.0f}/{a:.0f})")),
    ("BN-x30 reaches its best in 5x fewer steps than Inception needs for its best",
     "5.2x (31.0/6.0); BN-x30 best 74.8% vs Inception 72.2%", _best_5x_claim),
    ("Best accuracies, highest first",
     "BN-x30 74.8 > BN-x5 73.0 > BN-Baseline 72.7 > Inception 72.2 > BN-x5-Sigmoid 69.8", _order_claim),
    ("BN-x5-Sigmoid never reaches Inception's best but trains (69.8%)", "never; best 69.8%",
     _sigmoid_never_claim),
    ("Inception with sigmoid and no BN never rises above chance", "at most 1/1000 (0.1%) with 1000 classes",
     _chance_claim),
    ("Inception (no BN) at 5x the learning rate diverges", "its parameters reached machine infinity",
     _divergence_claim),
)  # fmt: skip


def _curves(data: fig.Figure1Data) -> tuple[fig.Curve, fig.Curve]:
    without, with_bn = fig.mean_curve(data.runs[fig.WITHOUT_BN]), fig.mean_curve(data.runs[fig.WITH_BN])
    if not without.steps or not with_bn.steps:
        raise NotComputed("needs evaluated runs both with and without BN")
    return without, with_bn


def _mnist_accuracy_claim(data: fig.Figure1Data) -> str:
    without, with_bn = _curves(data)
    return (
        f"best {max(with_bn.mean):.2f}% with BN vs {max(without.mean):.2f}% without; last evaluation "
        f"{with_bn.mean[-1]:.2f}% vs {without.mean[-1]:.2f}% (mean over {with_bn.n_runs} and "
        f"{without.n_runs} run(s))"
    )


def _mnist_faster_claim(data: fig.Figure1Data) -> str:
    without, with_bn = _curves(data)
    target = max(without.mean)
    without_step = without.steps[without.mean.index(target)]
    with_step = next((s for s, m in zip(with_bn.steps, with_bn.mean, strict=True) if m >= target), None)
    if with_step is None:
        return f"with BN never reaches the no-BN best {target:.2f}% (without BN: step {without_step})"
    text = f"no-BN best {target:.2f}%: reached at step {with_step} with BN vs step {without_step} without"
    return text + (f" ({without_step / with_step:.2f}x fewer steps)" if with_step > 0 else "")


def _drift(data: fig.Figure1Data, label: str) -> str:
    if (percentiles := data.percentiles[label]) is None:
        return f"{label}: no act/ scalars"
    p50 = [v for _, v in percentiles.series["p50"]]
    low, high = percentiles.series["p15"], percentiles.series["p85"]
    widths = [hi - lo for (_, lo), (_, hi) in zip(low, high, strict=False)]
    return (
        f"{label} ({percentiles.probe}): p50 spans {max(p50) - min(p50):.3f}, "
        f"p85-p15 ranges {min(widths):.3f}..{max(widths):.3f}"
    )


MNIST_CLAIMS: tuple[tuple[str, str, Callable[[fig.Figure1Data], str]], ...] = (
    ("With BN the MLP reaches higher test accuracy", "higher (Figure 1a, read off the plot; no number given)",
     _mnist_accuracy_claim),
    ("With BN the MLP gets to the no-BN network's best accuracy in fewer steps",
     "faster (Figure 1a; no number given)", _mnist_faster_claim),
    ("Without BN the sigmoid input's distribution drifts; with BN it stays stable",
     "drifts vs stable (Figure 1b, c; no number given)",
     lambda data: f"{_drift(data, fig.WITHOUT_BN)}; {_drift(data, fig.WITH_BN)} (over all logged steps)"),
)  # fmt: skip


def _ours(claim: Callable, argument: dict | fig.Figure1Data) -> str:
    try:
        return claim(argument)
    except NotComputed as why:
        return f"not computed: {why}"


def _claims_table(claims: tuple, argument: dict | fig.Figure1Data) -> list[str]:
    rows = [f"| {text} | {paper} | {_ours(ours, argument)} |" for text, paper, ours in claims]
    return ["| claim | paper | ours |", "|---|---|---|", *rows, ""]


# ---- assembling the report -------------------------------------------------------------------------------


def report_markdown(
    sweep_name: str, runs: list, table: dict, table_md: str, mnist: fig.Figure1Data | None
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
    if table["rows"]:
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
    mnist = fig.figure1_data(runs, probe)
    (out / "table2.md").write_text(table_md)
    table_json = json.dumps(table, indent=2, allow_nan=False, default=lambda paired: paired.to_json())
    (out / "table2.json").write_text(table_json + "\n")
    written = [out / "table2.md", out / "table2.json"]
    if table["rows"]:
        written += fig.save_figure(fig.figure2(runs, table["target_top1"], log_x, title), out / "figure2")
    if mnist is not None:
        written += fig.save_figure(fig.figure1(mnist), out / "figure1")
    (out / "report.md").write_text(report_markdown(sweep.resolve().name, runs, table, table_md, mnist))
    return ReportOutputs(table_md, (*written, out / "report.md"))
