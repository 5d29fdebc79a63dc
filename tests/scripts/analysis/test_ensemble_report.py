"""The ensemble experiment's report, from fabricated evaluate.py tables (known errors -> known rows)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bn_inception.evaluation.runlogs import ReportError
from scripts.analysis.ensemble_report import best_member, load_settings, write_report

REPO = Path(__file__).resolve().parents[3]


def write_table(path: Path, crops: int, images: int, errors: dict[str, float], gain: float | None) -> None:
    rows = [
        {"name": name, "top1_err": err, "top5_err": err / 10, "top1_err_ci": [err - 1, err + 1],
         "top5_err_ci": [0.0, err / 5], "checkpoints": ["x"] * (6 if name == "ensemble" else 1)}
        for name, err in errors.items()
    ]  # fmt: skip
    ci = [gain - 0.5, gain + 0.5] if gain is not None else None
    gains = [] if gain is None else [
        {"ensemble": "ensemble", "best_member": "m2/seed2", "top1_gain": gain, "top1_gain_ci": ci}
    ]  # fmt: skip
    table = {"rows": rows, "crops": crops, "data": {"images": images}, "ensemble_gains": gains,
             "command": f"python evaluate.py crops={crops}"}  # fmt: skip
    path.write_text(json.dumps(table))


@pytest.fixture
def out_dir(tmp_path):
    (tmp_path / "eval").mkdir()
    write_table(
        tmp_path / "eval/crops1.json", 1, 10000, {"m1/seed1": 9.0, "m2/seed2": 8.0, "ensemble": 7.0}, 1.0
    )
    write_table(tmp_path / "eval/crops144_first1000.json", 144, 1000,
                {"m1/seed1": 8.5, "m2/seed2": 7.5, "ensemble": 6.25}, 1.25)  # fmt: skip
    return tmp_path


def test_paper_rows_beside_ours_pick_the_best_member_and_the_144_crop_ensemble(out_dir):
    settings = load_settings(out_dir / "eval")
    assert [s.name for s in settings] == ["crops1", "crops144_first1000"]  # most images first
    assert best_member(settings) == "m2/seed2"
    text, path = write_report(out_dir)
    assert path.read_text() == text
    lines = text.splitlines()
    single = next(line for line in lines if line.startswith("| BN-Inception single crop"))
    multi = next(line for line in lines if line.startswith("| BN-Inception multicrop"))
    ensemble = next(line for line in lines if line.startswith("| BN-Inception ensemble"))
    assert "25.2 / 7.82" in single and "| 1 | 1 | 10,000 | 8.00 [7.00, 9.00] |" in single
    assert "21.99 / 5.82" in multi and "| 144 | 1 | 1,000 | 7.50 [6.50, 8.50] |" in multi
    assert "20.1 / 4.9" in ensemble and "| 144 | 6 | 1,000 | 6.25 [5.25, 7.25] |" in ensemble
    assert "| ensemble | 7.00 [6.00, 8.00] | 6.25 [5.25, 7.25] |" in text
    assert "- 144 crops, 1,000 images: +1.25 [+0.75, +1.75] points of top-1 error against m2/seed2" in text
    assert "near 0 for every network (at most 0.90% here)" in text  # the worst top-5 error, quoted
    assert "`python evaluate.py crops=144`" in text


def test_a_broken_table_and_an_empty_folder_are_one_line_errors(tmp_path):
    (tmp_path / "eval").mkdir()
    with pytest.raises(ReportError, match="no evaluate.py tables"):
        load_settings(tmp_path / "eval")
    (tmp_path / "eval/crops1.json").write_text("{")
    proc = subprocess.run([sys.executable, str(REPO / "scripts/report_ensemble.py"), str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is not an evaluate.py table" in proc.stderr
