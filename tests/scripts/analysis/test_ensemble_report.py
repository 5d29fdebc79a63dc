"""The ensemble experiment's report, from fabricated evaluate.py tables with per-image results: the best
member is chosen on the selection half, the gains are measured on the held-out half with known answers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bn_inception.report.runlogs import ReportError
from scripts.analysis.ensemble_report import load_study, write_report

REPO = Path(__file__).resolve().parents[3]
MEMBERS = ("m1/seed1", "m2/seed2")


def write_table(path: Path, crops: int, image_range: tuple[int, int], hits: dict[str, str]) -> None:
    """An evaluate.py JSON whose rows' errors follow from `hits` (per image, "1": right)."""
    (a, b), rows = image_range, []
    for name, h in hits.items():
        err = 100.0 * h.count("0") / len(h)
        members = 2 if name == "ensemble" else 1
        rows.append({"name": name, "top1_err": err, "top5_err": err / 10, "top1_err_ci": [err - 1, err + 1],
                     "top5_err_ci": [0.0, err / 5], "checkpoints": ["x"] * members})  # fmt: skip
    table = {"rows": rows, "crops": crops, "image_range": list(image_range), "data": {"images": len(h)},
             "distinct_crops": [48] if crops == 144 else [crops], "seconds": 12.0,
             "per_image": {"labels": [0] * len(h), "top1": hits, "top5": hits},
             "command": f"python evaluate.py crops={crops} images={a}:{b}"}  # fmt: skip
    path.write_text(json.dumps(table))


@pytest.fixture
def out_dir(tmp_path):
    (tmp_path / "eval").mkdir()
    # Selection half: m2 errs less (1 of 4 against 2 of 4), so m2 is the best member, fixed.
    write_table(tmp_path / "eval/select_crops1.json", 1, (0, 4),
                {"m1/seed1": "0011", "m2/seed2": "0111", "ensemble": "0111"})  # fmt: skip
    # Held out (8 images), 1 crop: m2 errs on 4, m1 on 2, the ensemble on 2. Against the chosen m2 the
    # ensemble gains 2/8 = 25 points; against the mean member (3 of 8 wrong on average), 1/8 = 12.5.
    write_table(tmp_path / "eval/heldout_crops1.json", 1, (4, 12),
                {"m1/seed1": "11111100", "m2/seed2": "00001111", "ensemble": "10111101"})  # fmt: skip
    write_table(tmp_path / "eval/heldout_crops144.json", 144, (4, 12),
                {"m1/seed1": "11111110", "m2/seed2": "10011111", "ensemble": "11111111"})  # fmt: skip
    return tmp_path


def test_the_best_member_is_chosen_on_the_selection_half_and_gains_are_held_out(out_dir):
    study = load_study(out_dir / "eval")
    assert study.best == "m2/seed2"  # on the held-out half m1 would look better: the choice is not redone
    text, path = write_report(out_dir)
    assert path.read_text() == text
    assert "| 1 | 25.00 | 50.00 | +25.00 [" in text  # ensemble, best member (m2), its gain
    assert "| 37.50 | +12.50 [" in text  # the mean member, the gain over it
    assert "| 144 | 0.00 | 25.00 | +25.00 [" in text
    assert "- m2/seed2: 144 crops against 1: +25.00 [" in text
    assert "- ensemble: 144 crops against 1: +25.00 [" in text
    single = next(line for line in text.splitlines() if line.startswith("| BN-Inception single crop"))
    assert "25.2 / 7.82" in single and "| 1 | 1 | 8 | 50.00 [49.00, 51.00] |" in single
    assert "| m2/seed2 (best member, chosen on the selection half) | 25.00 [24.00, 26.00] |" in text
    assert "144 crops: 48 distinct per image" in text
    assert "`python evaluate.py crops=144 images=4:12` (12 s)" in text


def test_an_interval_excludes_zero_only_when_the_images_say_so(out_dir):
    # 8 images where the ensemble is right exactly where the best member is: a gain of 0, interval [0, 0].
    write_table(out_dir / "eval/heldout_crops1.json", 1, (4, 12),
                {"m1/seed1": "11111100", "m2/seed2": "00001111", "ensemble": "00001111"})  # fmt: skip
    text, _ = write_report(out_dir)
    assert "| 1 | 50.00 | 50.00 | +0.00 [+0.00, +0.00] |" in text


def test_missing_halves_and_missing_per_image_results_are_one_line_errors(out_dir, tmp_path):
    table = json.loads((out_dir / "eval/heldout_crops144.json").read_text())
    del table["per_image"]
    (out_dir / "eval/heldout_crops144.json").write_text(json.dumps(table))
    with pytest.raises(ReportError, match="heldout_crops144.json has no per-image results; re-run it with"):
        load_study(out_dir / "eval")
    (out_dir / "eval/select_crops1.json").unlink()
    proc = subprocess.run([sys.executable, str(REPO / "scripts/report_ensemble.py"), str(out_dir)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "needs select_crops1.json and heldout_crops<N>.json" in proc.stderr
