"""Figure 5: output size after every row, parameter counts (exact), the two readings of 4c/4d."""

from __future__ import annotations

import importlib.util

import pytest
import timm

import bn_inception  # noqa: F401
from bn_inception.models import figure5_rows, small_rows
from bn_inception.models.figure5 import ConvRow, InceptionRow
from tests.conftest import REPO

# The per-row summaries are the describe_models script's (Figure 5 style tables).
_spec = importlib.util.spec_from_file_location("describe_models", REPO / "scripts" / "describe_models.py")
describe_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(describe_models)
summarize, total_macs, total_params = (
    describe_models.summarize,
    describe_models.total_macs,
    describe_models.total_params,
)

# Figure 5's output column (C, H, W) at 224x224, with the slips of architecture.md corrected (3c and 4e
# output the halved grid). 4c/4d/4e differ between the two readings.
FIGURE5_OUTPUTS = {
    "conv1": (64, 112, 112),
    "pool1": (64, 56, 56),
    "conv2": (192, 56, 56),
    "pool2": (192, 28, 28),
    "3a": (256, 28, 28),
    "3b": (320, 28, 28),
    "3c": (576, 14, 14),
    "4a": (576, 14, 14),
    "4b": (576, 14, 14),
    "4c": (576, 14, 14),
    "4d": (576, 14, 14),
    "4e": (1024, 7, 7),
    "5a": (1024, 7, 7),
    "5b": (1024, 7, 7),
    "pool": (1024,),
    "fc": (1000,),
}
CAFFE_OUTPUTS = dict(FIGURE5_OUTPUTS, **{"4c": (608, 14, 14), "4d": (608, 14, 14), "4e": (1056, 7, 7)})

# Exact parameter counts (also printed by scripts/describe_models.py). BN: gamma and beta per channel,
# convolutions without bias; norm="none": convolutions with bias.
PARAMS = {
    ("bn_inception", "tf", "separable", "batch"): 11_188_288,
    ("bn_inception", "tf", "separable", "none"): 11_178_336,
    ("bn_inception", "tf", "plain", "batch"): 11_194_984,
    ("bn_inception", "caffe", "separable", "batch"): 11_278_528,
    ("bn_inception", "caffe", "plain", "batch"): 11_285_224,
    ("bn_inception", "caffe", "plain", "none"): 11_275_208,
}
SMALL_PARAMS = {
    ("bn_inception_small", "batch"): 162_298,  # default width_mult 1/8, 28x28x1, 10 classes
    ("bn_inception_small", "none"): 161_054,
    ("bn_mlp", "batch"): 100_010,  # Sec. 4.1: 784-100-100-100-10, BN's gamma and beta instead of biases
    ("bn_mlp", "none"): 99_710,
}
MACS_224 = {("tf", "separable"): 1_934_857_216, ("caffe", "plain"): 2_032_600_064}


@pytest.fixture(scope="module")
def summaries() -> dict:
    return {
        table: summarize(timm.create_model("bn_inception", table=table), (3, 224, 224))
        for table in ("tf", "caffe")
    }


@pytest.mark.parametrize("table, expected", [("tf", FIGURE5_OUTPUTS), ("caffe", CAFFE_OUTPUTS)])
def test_output_size_after_every_row_at_224(summaries: dict, table: str, expected: dict) -> None:
    rows = summaries[table]
    assert [r.name for r in rows] == list(expected)
    assert {r.name: r.output for r in rows} == expected


def test_caffe_table_has_the_literal_widths_of_the_caffe_port() -> None:
    rows = {r.name: r for r in figure5_rows("caffe") if isinstance(r, InceptionRow)}
    assert rows["4c"].proj == rows["4d"].proj == 128
    tf_rows = {r.name: r for r in figure5_rows("tf") if isinstance(r, InceptionRow)}
    assert tf_rows["4c"].proj == tf_rows["4d"].proj == 96
    # Every other number is the same in both readings.
    for name in rows:
        if name not in ("4c", "4d"):
            assert rows[name] == tf_rows[name]


@pytest.mark.parametrize("key, expected", list(PARAMS.items()))
def test_parameter_counts(key: tuple, expected: int) -> None:
    name, table, stem, norm = key
    model = timm.create_model(name, table=table, stem=stem, norm=norm)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("key, expected", list(SMALL_PARAMS.items()))
def test_small_model_and_mlp_parameter_counts(key: tuple, expected: int) -> None:
    name, norm = key
    assert sum(p.numel() for p in timm.create_model(name, norm=norm).parameters()) == expected


def test_small_model_rows_are_figure5_rows_scaled() -> None:
    full = [r for r in small_rows("caffe", 1.0) if isinstance(r, InceptionRow)]
    assert full == [r for r in figure5_rows("caffe") if isinstance(r, InceptionRow)]
    half = {r.name: r for r in small_rows("tf", 0.5) if isinstance(r, InceptionRow)}
    assert (half["3a"].n1x1, half["5b"].n3x3, half["3c"].proj) == (32, 160, 0)
    model = timm.create_model("bn_inception_small", width_mult=0.5)
    assert model.num_features == 512


def _unit_params(cin: int, cout: int, k: int, bn: bool) -> int:
    return cin * cout * k * k + (2 * cout if bn else cout)


def _row_params_from_table(row: InceptionRow, cin: int, bn: bool) -> int:
    """Independent count from the row's numbers: each conv + its BN (gamma, beta) or bias."""
    n = _unit_params(cin, row.n1x1, 1, bn) if row.n1x1 else 0
    n += _unit_params(cin, row.n3x3_reduce, 1, bn) + _unit_params(row.n3x3_reduce, row.n3x3, 3, bn)
    n += _unit_params(cin, row.dbl_reduce, 1, bn) + _unit_params(row.dbl_reduce, row.dbl_3x3, 3, bn)
    n += _unit_params(row.dbl_3x3, row.dbl_3x3, 3, bn)
    return n + (_unit_params(cin, row.proj, 1, bn) if row.proj else 0)


@pytest.mark.parametrize("table", ["tf", "caffe"])
def test_row_parameters_follow_the_table(summaries: dict, table: str) -> None:
    by_name = {r.name: r for r in summaries[table]}
    cin = 192
    for row in figure5_rows(table):
        if isinstance(row, InceptionRow):
            assert by_name[row.name].params == _row_params_from_table(row, cin, bn=True), row.name
            cin = row.out_channels(cin)
        elif isinstance(row, ConvRow) and row.stem:
            # Separable 7x7, depth multiplier 8: 3*8*49 depthwise + 24*64 pointwise = 2,712 weights
            # (GoogLeNet's "2.7K" first layer), plus BN's gamma and beta.
            assert by_name["conv1"].params == 2_712 + 2 * 64


def test_multiply_adds(summaries: dict) -> None:
    assert total_macs(summaries["tf"]) == MACS_224[("tf", "separable")]
    assert {r.name: r.macs for r in summaries["tf"]}["conv1"] == 34_019_328  # GoogLeNet's "34M"
    caffe_plain = summarize(timm.create_model("bn_inception", table="caffe", stem="plain"), (3, 224, 224))
    assert total_macs(caffe_plain) == MACS_224[("caffe", "plain")]
    assert total_params(summaries["tf"]) == PARAMS[("bn_inception", "tf", "separable", "batch")]


def test_describe_models_script_prints_the_counts(capsys: pytest.CaptureFixture) -> None:
    describe_models.main(["--model", "bn_inception"])
    out = capsys.readouterr().out
    assert "11,188,288" in out and "11,178,336" in out  # BN variants, Inception baseline
    assert "13.6M" in out
    for variant in ("inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid"):
        assert f"| {variant} |" in out
    assert "| 4e | inception (max pass through) | stride 2 | 7x7x1024 |" in out
