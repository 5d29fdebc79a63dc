"""Write a sweep's report: Table 2 (the paper's Figure 3 table), Figures 1 and 2, and report.md.

    python scripts/report.py sweeps/2025-01-01_00-00-00            # writes into the sweep directory
    python scripts/report.py sweeps/<sweep> --out reports/<name>   # or elsewhere
    python scripts/report.py sweeps/<sweep> --log-x --title "..."  # Figure 2's steps on a log axis, retitled

Reads every results.json under the sweep (recursively) and the runs' TensorBoard scalars; prints Table 2
and the files written. Table 2's definition: bn_inception/report/table2.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bn_inception.report.claims import write_report  # noqa: E402
from bn_inception.report.runlogs import ReportError  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="directory holding the runs (each with a results.json)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the sweep dir)")
    parser.add_argument(
        "--probe",
        default=None,
        help="Figure 1's probe, as in the act/<probe>/p50 tags (default: the last hidden layer's first "
        "unit, e.g. hidden3_last/unit0; hidden3_last for the layer pooled)",
    )
    parser.add_argument("--log-x", action="store_true", help="Figure 2's steps on a log axis")
    parser.add_argument("--title", default=None, help="Figure 2's title (default: the paper's caption)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        outputs = write_report(args.sweep_dir, args.out, args.probe, args.log_x, args.title)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(outputs.table_markdown)
    print("wrote:")
    for path in outputs.files:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
