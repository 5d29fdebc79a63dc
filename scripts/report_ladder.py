"""Write the learning-rate ladder report (scripts/reproduce_lr_ladder.sh) into its output directory.

    python scripts/report_ladder.py sweeps/lr-ladder-<date>            # top-1 at 250, 500, 1,000 and the end
    python scripts/report_ladder.py sweeps/lr-ladder-<date> --steps 500 1000 2000

One row per (network, lr multiple): top-1 at the given steps (mean ± std over seeds), best top-1, how many
runs diverged or stayed at chance; then, per network, the rate with the best early accuracy and the first
rate that failed (scripts.analysis.ladder.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bn_inception.report.runlogs import ReportError, load_runs  # noqa: E402
from scripts.analysis.ladder import build_ladder, ladder_markdown, summary_lines  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="the directory reproduce_lr_ladder.sh wrote")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="steps to show top-1 at")
    parser.add_argument("--early", type=int, default=500, help="the step that 'early accuracy' means")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.out_dir)
        rungs = build_ladder(runs)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    last = max((e.step for r in runs for e in r.evals), default=0)
    steps = args.steps or sorted({s for s in (250, 500, 1000, last) if 0 < s <= last})
    parts = [
        "# Learning-rate ladders",
        "",
        ladder_markdown(rungs, steps),
        "",
        *summary_lines(rungs, args.early),
    ]
    wall = args.out_dir / "wall_time.txt"
    if wall.exists():
        parts += ["", f"Wall time: {wall.read_text().strip()}"]
    text = "\n".join(parts) + "\n"
    (args.out_dir / "report.md").write_text(text)
    print(text)
    print(f"wrote {args.out_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
