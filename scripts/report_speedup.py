"""Write the speed-up-against-budget report (scripts/reproduce_speedup.sh) into the sweep directory.

    python scripts/report_speedup.py sweeps/speedup-<date>                    # budgets 2k..Inception's length
    python scripts/report_speedup.py sweeps/speedup-<date> --budgets 4000 8000 16000

Reads every results.json under the directory; writes report.md, speedup.png and speedup.svg and prints the
table: BN-x5, BN-x30 and (when run) Inception-x5 against Inception, paired by seed, and BN-x5 against
Inception-x5 (BN at the same rate). The definition: scripts/analysis/speedup.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bn_inception.report.runlogs import ReportError, load_runs  # noqa: E402
from scripts.analysis.speedup import BASELINE, build_study, plot_speedup, report_markdown  # noqa: E402


def default_budgets(longest: int) -> list[int]:
    """2,000, 4,000, ... doubling up to the longest Inception run."""
    budgets, b = [], 2000
    while b <= longest:
        budgets.append(b)
        b *= 2
    return budgets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the directory reproduce_speedup.sh wrote")
    parser.add_argument("--budgets", type=int, nargs="+", default=None, help="budgets B in steps")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.sweep_dir)
        longest = max((r.evals[-1].step for r in runs if r.experiment == BASELINE and r.evals), default=0)
        if not longest:
            raise ReportError(f"no evaluated {BASELINE} run under {args.sweep_dir}; the speed-up needs one")
        if args.budgets and min(args.budgets) <= 0:
            raise ReportError("--budgets must be positive step counts")
        study = build_study(runs, sorted(args.budgets or default_budgets(longest)))
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    files = plot_speedup(study, args.sweep_dir / "speedup")
    wall = args.sweep_dir / "wall_time.txt"
    wall_time = wall.read_text().strip().replace("\n", "; ") if wall.exists() else None
    text = report_markdown(study, "speedup.png", wall_time)
    (args.sweep_dir / "report.md").write_text(text)
    print(text)
    print("wrote:", *(str(p) for p in [args.sweep_dir / "report.md", *files]), sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
