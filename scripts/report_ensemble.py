"""Write the ensemble experiment's report (scripts/reproduce_ensemble.sh) into its output directory.

    python scripts/report_ensemble.py sweeps/ensemble-<date>     # reads <dir>/eval/*.json, writes report.md

The best member chosen on the selection half (eval/select_crops1.json), everything else on the held-out half
(eval/heldout_crops<N>.json, written with per_image=true): the paper's Figure 4 rows beside ours, every
network at every crop count, and the ensemble's gain over the best and the mean member with paired
intervals (scripts/analysis/ensemble_report.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bn_inception.report.runlogs import ReportError  # noqa: E402
from scripts.analysis.ensemble_report import write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="the directory reproduce_ensemble.sh wrote (with eval/)")
    args = parser.parse_args(argv)
    try:
        text, path = write_report(args.out_dir)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
