"""The sweep report on fabricated runs whose Table 2 and Figure 1 numbers are known in advance."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bn_inception.report.claims import write_report
from bn_inception.report.figures import WITH_BN, WITHOUT_BN, figure1_data
from bn_inception.report.runlogs import ReportError, last_hidden_probe, load_runs, uses_batch_norm
from tests.report.sweep_fixtures import write_mnist, write_run, write_sweep

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_report(sweep, out)


def _rows(out: Path) -> dict[str, dict]:
    return {row["variant"]: row for row in json.loads((out / "table2.json").read_text())["rows"]}


def _md_row(out: Path, variant: str) -> str:
    return next(line for line in (out / "table2.md").read_text().splitlines() if f"(`{variant}`)" in line)


def test_target_is_inception_best_and_rows_follow_paper_order(report):
    out, _ = report
    data = json.loads((out / "table2.json").read_text())
    assert data["target_top1"] == 60.0
    assert data["n_inception_runs"] == 1
    # The paper's five in its order, then other experiments; Figure 1's runs are not in Table 2.
    assert [row["variant"] for row in data["rows"]] == [
        "inception",
        "bn_baseline",
        "bn_x5",
        "bn_x30",
        "bn_x5_sigmoid",
        "ensemble_m1",
    ]


def test_steps_to_target_and_speedup_are_exact(report):
    rows = _rows(report[0])
    assert rows["inception"]["steps_to_target"]["mean"] == 900.0  # its own best, first seen at step 900
    assert rows["inception"]["speedup"] == 1.0
    assert rows["bn_baseline"]["steps_to_target"]["mean"] == 500.0
    assert rows["bn_baseline"]["speedup"] == pytest.approx(1.8)
    assert rows["bn_baseline"]["best_top1"]["mean"] == 63.0
    assert rows["bn_baseline"]["steps_to_best"]["mean"] == 700.0


def test_seeds_are_aggregated_as_mean_std_and_n(report):
    bn_x5 = _rows(report[0])["bn_x5"]
    assert bn_x5["n_runs"] == 3 and bn_x5["n_reached"] == 3
    assert bn_x5["steps_to_target"] == {"mean": 300.0, "std": 100.0, "min": 200.0, "max": 400.0, "n": 3}
    assert bn_x5["best_top1"] == {"mean": 71.0, "std": 1.0, "min": 70.0, "max": 72.0, "n": 3}
    assert bn_x5["speedup"] == 3.0
    assert [run["steps_to_target"] for run in bn_x5["runs"]] == [200, 300, 400]
    assert _md_row(report[0], "bn_x5") == (
        "| BN-x5 (`bn_x5`) | 3 | 300 ± 100 | 3/3 | 71.00 ± 1.00 | 3.00x | 4.50x (1 seed) | 2.1 | 73.0 "
        "| 14.8x (31.0/2.1) |  |"
    )


def test_diverged_run_shows_its_step_not_missing(report):
    out, _ = report
    bn_x30 = _rows(out)["bn_x30"]
    assert bn_x30["n_diverged"] == 1 and bn_x30["n_reached"] == 0
    assert bn_x30["runs"][0]["diverged_at_step"] == 250
    assert bn_x30["best_top1"]["mean"] == 40.0  # its best before diverging
    assert _md_row(out, "bn_x30") == (
        "| BN-x30 (`bn_x30`) | 1 | diverged at step 250 | 0/1 | 40.00 | – | < 4.50x (1 seed, 1 a bound) "
        "| 2.7 | 74.8 | 11.5x (31.0/2.7) "
        "| seed 0 diverged at step 250 |"
    )


def test_run_that_never_reaches_target_shows_never(report):
    out, _ = report
    assert _md_row(out, "bn_x5_sigmoid") == (
        "| BN-x5-Sigmoid (`bn_x5_sigmoid`) | 1 | never | 0/1 | 55.00 | – | < 0.90x (1 seed, 1 a bound) "
        "| never | 69.8 | never |  |"
    )
    assert _rows(out)["bn_x5_sigmoid"]["steps_to_target"] is None


def test_mix_of_reached_and_never_reports_k_of_n(report):
    out, _ = report
    row = _rows(out)["ensemble_m1"]
    assert row["n_reached"] == 1 and row["n_runs"] == 2
    assert row["steps_to_target"]["mean"] == 600.0 and row["speedup"] == 1.5
    assert row["best_top1"]["mean"] == 55.5
    assert _md_row(out, "ensemble_m1") == (
        "| ensemble_m1 (`ensemble_m1`) | 2 | 600 | 1/2 | 55.50 ± 7.78 | 1.50x | 1.59x (1 seed) "
        "| – | – | – |  |"
    )


def test_report_md_has_table_figures_and_computed_claims(report):
    out, outputs = report
    text = (out / "report.md").read_text()
    assert outputs.table_markdown in text.replace("## Table 2", "# Table 2")
    assert "![Figure 2](figure2.png)" in text and "![Figure 1](figure1.png)" in text
    claim = "| BN-x5 needs 14x fewer steps than Inception to reach Inception's best | 14.8x (31.0/2.1) |"
    assert f"{claim} 3.00x (900/300 steps) |" in text
    assert "| 0.56 of Inception's steps (500/900), i.e. 1.80x fewer |" in text
    assert "BN-x5 71.00 > BN-Baseline 63.00 > Inception 60.00 > BN-x5-Sigmoid 55.00 > BN-x30 40.00" in text
    assert "not computed: `bn_x30` never reached the target (0/1 runs)" in text
    assert "not computed: no `inception_sigmoid` runs in this sweep" in text
    assert "not computed: no `inception_x5` runs in this sweep" in text
    # Figure 1's claims, computed from the fabricated MNIST runs.
    assert "no-BN best 93.00%: reached at step 200 with BN vs step 800 without (4.00x fewer steps)" in text
    assert "Without BN (hidden3): p50 spans 4.500" in text and "With BN (hidden3): p50 spans 0.000" in text


def test_figures_are_written_as_png_and_svg(report):
    out, outputs = report
    for stem in ("figure1", "figure2"):
        png, svg = out / f"{stem}.png", out / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert b"<svg" in svg.read_bytes()[:2000]
    names = [path.name for path in outputs.files]
    assert names == [
        "table2.md",
        "table2.json",
        "figure2.png",
        "figure2.svg",
        "figure1.png",
        "figure1.svg",
        "report.md",
    ]


def test_figure1_splits_runs_by_norm_and_uses_last_hidden_probe(sweep):
    data = figure1_data(load_runs(sweep))
    assert [run.name for run in data.runs[WITHOUT_BN]] == ["mnist_figure1_none"]
    assert [run.name for run in data.runs[WITH_BN]] == ["mnist_figure1_batch"]
    without = data.percentiles[WITHOUT_BN]
    assert without.probe == "hidden3"
    assert without.series["p50"][:2] == [(100, pytest.approx(0.3)), (200, pytest.approx(0.8))]
    assert figure1_data(load_runs(sweep), probe="hidden1").percentiles[WITH_BN].probe == "hidden1"


def test_figure1_follows_one_typical_unit_when_the_run_logged_one(tmp_path):
    # Figure 1 (b, c) plots "a typical sigmoid": the single-unit series wins over the pooled layer
    layer = {"p15": [-1.0, -1.0], "p50": [0.0, 0.0], "p85": [1.0, 1.0]}
    unit = {"p15": [-0.5, -0.4], "p50": [0.1, 0.2], "p85": [0.6, 0.7]}
    act = {"hidden1": layer, "hidden3_last": layer, "hidden3_last/unit0": unit, "hidden1/unit0": unit}
    write_run(tmp_path, "mnist_figure1_none/seed0", "mnist_figure1", [80, 85], name="n", norm="none", act=act)
    shown = figure1_data(load_runs(tmp_path)).percentiles[WITHOUT_BN]
    assert shown.probe == "hidden3_last/unit0"
    assert [v for _, v in shown.series["p50"]] == [pytest.approx(0.1), pytest.approx(0.2)]


def test_last_hidden_probe_ranks_layers_by_their_first_number():
    assert last_hidden_probe(["3a_3x3", "5b_3x3", "4c_3x3", "4c_3x3/unit0"]) == "5b_3x3"
    assert last_hidden_probe(["hidden10", "hidden2/unit0", "hidden10/unit0"]) == "hidden10/unit0"
    assert last_hidden_probe(["relu", "hidden1"]) == "hidden1"


def test_inception_at_5x_lr_divergence_claim_counts_diverged_runs(tmp_path):
    write_run(tmp_path, "inception/seed0", "inception", [40, 50, 60])
    write_run(tmp_path, "inception_x5/seed0", "inception_x5", [30], status="diverged", diverged_at_step=150)
    write_run(tmp_path, "inception_x5/seed1", "inception_x5", [35, 45], seed=1)
    write_report(tmp_path, tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Inception (no BN) at 5x"))
    # best = the mean of the runs' bests (30 and 45)
    assert row.endswith("reached machine infinity | diverged in 1/2 runs (at step 150); best 37.50% |")


def test_unknown_probe_is_a_one_line_error(sweep, tmp_path):
    with pytest.raises(ReportError, match=r"probe 'hidden9' .* its probes are: hidden1, hidden2, hidden3$"):
        write_report(sweep, tmp_path, probe="hidden9")


def test_bn_rule_falls_back_to_the_run_name(tmp_path):
    for name in ("mnist_figure1_none", "mnist_figure1_batch", "mlp_nobn", "mlp_bn", "mystery"):
        write_run(tmp_path, name, "mnist_figure1", [90.0], name=name)
    runs = {run.name: run for run in load_runs(tmp_path)}
    assert not uses_batch_norm(runs["mnist_figure1_none"]) and not uses_batch_norm(runs["mlp_nobn"])
    assert uses_batch_norm(runs["mnist_figure1_batch"]) and uses_batch_norm(runs["mlp_bn"])
    with pytest.raises(ReportError, match="cannot tell whether mnist_figure1 run mystery uses BN"):
        uses_batch_norm(runs["mystery"])


def test_report_is_deterministic(sweep, report, tmp_path):
    first, _ = report
    write_report(sweep, tmp_path)
    for name in ("table2.md", "table2.json", "report.md", "figure1.svg", "figure2.svg"):
        assert (tmp_path / name).read_bytes() == (first / name).read_bytes(), name


def test_target_with_several_inception_seeds_is_their_mean_best(tmp_path):
    write_run(tmp_path, "inception/seed0", "inception", [40, 50, 62], seed=0)
    write_run(tmp_path, "inception/seed1", "inception", [40, 64, 64], seed=1)
    write_run(tmp_path, "bn_x5/seed0", "bn_x5", [63, 70], seed=0)
    write_report(tmp_path)
    data = json.loads((tmp_path / "table2.json").read_text())
    assert data["target_top1"] == 63.0
    inception, bn_x5 = data["rows"]
    # Seed 0's best (62) is below the mean target: it counts as not reached.
    assert [run["steps_to_target"] for run in inception["runs"]] == [None, 200]
    assert inception["n_reached"] == 1 and inception["steps_to_target"]["mean"] == 200.0
    assert bn_x5["steps_to_target"]["mean"] == 100.0 and bn_x5["speedup"] == 2.0
    assert "the mean best of 2 `inception` runs" in (tmp_path / "table2.md").read_text()


def test_without_inception_runs_the_table_says_so_and_keeps_best_accuracies(tmp_path):
    write_run(tmp_path, "bn_x5/seed0", "bn_x5", [50, 70])
    outputs = write_report(tmp_path)
    assert "**No `inception` runs in this sweep**" in outputs.table_markdown
    row = next(line for line in outputs.table_markdown.splitlines() if "(`bn_x5`)" in line)
    assert row.startswith("| BN-x5 (`bn_x5`) | 1 | no target (no inception runs) | – | 70.00 | – |")
    assert json.loads((tmp_path / "table2.json").read_text())["target_top1"] is None


def test_mnist_only_sweep_writes_figure1_and_no_figure2(tmp_path):
    write_mnist(tmp_path)
    names = [path.name for path in write_report(tmp_path, tmp_path / "out").files]
    assert "figure1.png" in names and "figure2.png" not in names


def _load_cli():
    spec = importlib.util.spec_from_file_location("report_cli", REPO / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_prints_table_and_writes_into_out(sweep, tmp_path, capsys):
    assert _load_cli().main([str(sweep), "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "| BN-x5 (`bn_x5`) | 3 | 300 ± 100 |" in printed
    assert (tmp_path / "r" / "report.md").is_file()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "sweep directory {sweep} does not exist"),
        ("", "no results.json found under {sweep}"),
        ("{not json", "malformed {file}: not valid JSON"),
        ('{"status": "completed", "evals": []}', "malformed {file}: 'experiment' must be a non-empty string"),
        ('{"experiment": "bn_x5", "status": "completed"}', "malformed {file}: missing 'evals'"),
        (
            '{"experiment": "bn_x5", "status": "completed", "evals": [{"step": 1}]}',
            "malformed {file}: evals[0] must be an object with 'step' and 'top1'",
        ),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, capsys, content, message):
    sweep = tmp_path / "sweep"
    file = sweep / "run" / "results.json"
    if content is not None:
        file.parent.mkdir(parents=True)
        if content:
            file.write_text(content)
    assert _load_cli().main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(sweep=sweep, file=file))
    assert err.count("\n") == 1


def _texts(figure) -> list[str]:
    return [t.get_text() for t in figure.findobj(match=lambda a: hasattr(a, "get_text"))]


def test_figure2_is_publication_ready(tmp_path):
    from bn_inception.report.figures import BAND_LABEL, figure2

    for seed in (0, 1):
        run = write_run(tmp_path, f"inception/seed{seed}", "inception", [50, 60, 70], seed=seed)
        (run / ".hydra").mkdir()
        (run / ".hydra/config.yaml").write_text("data:\n  name: fashion_mnist\n")
    write_run(tmp_path, "inception_sigmoid/seed0", "inception_sigmoid", [10, 10, 10])
    write_run(tmp_path, "bn_x5/seed0", "bn_x5", [60, 80, 85])  # crosses 70 halfway from step 100 to 200
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = figure2(load_runs(tmp_path), 70.0)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # lay out, so that the legend and the axes have their final positions
    (ax,) = figure.axes
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    # Paper names only, the band explained, the dataset named.
    below = "Inception, sigmoid (no BN) (below the axis: best 10.0%)"
    assert labels[:3] == ["Inception (n=2)", "BN-x5", below]
    assert BAND_LABEL in labels and "steps to match Inception" in labels
    assert ax.get_title().endswith("during training, Fashion-MNIST")
    # The paper's y-range starts at 40%; BN-x5's "steps to match Inception" marker sits on the target.
    assert ax.get_ylim() == (40.0, 90.0)  # up to the next 5% above the highest point (85%)
    markers = [line.get_xydata().tolist() for line in ax.get_lines() if line.get_marker() == "o"]
    assert [[150.0, 70.0]] in markers
    assert not any("inception_sigmoid" in text for text in _texts(figure))
    # The legend lies outside the axes: it covers no curve.
    renderer = canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_figure1_panels_share_their_y_axis_and_use_the_papers_words(sweep):
    from bn_inception.report.figures import figure1

    figure = figure1(figure1_data(load_runs(sweep)))
    ax_a, ax_b, ax_c = figure.axes
    assert ax_b.get_shared_y_axes().joined(ax_b, ax_c)
    assert ax_b.get_title() == "(b) Without BN: input to a typical sigmoid"
    assert ax_c.get_title() == "(c) With BN: input to a typical sigmoid"
    assert [t.get_text() for t in ax_b.get_legend().get_texts()] == [
        "15th percentile",
        "50th percentile",
        "85th percentile",
    ]
    assert not any("hidden3" in text for text in _texts(figure))  # no internal probe names
