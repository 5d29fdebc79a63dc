#!/usr/bin/env bash
# The paper's ensemble (Sec. 4.2.3, Figure 4's table) in miniature, chosen on one half of the test images and
# reported on the other: the six BN-x30-based members (experiment=ensemble_m1..m6) on Fashion-MNIST with
# bn_inception_small, each trained as long as reproduce_mini.sh trains BN-x30 (4,000 steps), then evaluate.py:
#   - the selection half (test images SELECT, default 0:5000): training-time validation chose each member's
#     best.pt there (trainer.eval_limit=5000), and 1 crop there picks the "best member";
#   - the held-out half (HELDOUT, default 5000:10000): every member and the ensemble with 1, 10 and 144
#     crops, with per-image results, for the report's paired intervals.
# Then the report (OUT_DIR/report.md, scripts/report_ensemble.py): the paper's rows beside ours, and the
# ensemble's gain over the best and over the mean member, held out, with paired bootstrap intervals.
#
#   bash scripts/reproduce_ensemble.sh [OUT_DIR]      # default: sweeps/ensemble-<date>
#   STEPS=8000 bash scripts/reproduce_ensemble.sh OUT # longer members (the same runs, resumed)
#   EVAL_ONLY=1 bash scripts/reproduce_ensemble.sh OUT   # members already trained in OUT/runs: evaluate only
#   EXTRA=... (train.py overrides), EVAL_EXTRA=... (evaluate.py overrides), SELECT=A:B, HELDOUT=A:B
#
# Member k trains with seed k, so that members that differ only in dropout do not share an initialisation.
# Re-running with the same OUT_DIR resumes unfinished runs, skips finished ones and reuses finished
# evaluations (OUT_DIR/eval/*.json). Two lanes, one per core, one thread each. 144 crops of a 28 px square
# are 48 distinct crops, each 3 times: evaluate.py evaluates each once (the same average).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lanes.sh

OUT=${1:-sweeps/ensemble-$(date +%Y%m%d-%H%M%S)}
STEPS=${STEPS:-4000}
SELECT=${SELECT:-0:5000}
HELDOUT=${HELDOUT:-5000:10000}
EXTRA=${EXTRA:-}
EVAL_EXTRA=${EVAL_EXTRA:-}
COMMON="data=fashion_mnist trainer.eval_every=250 trainer.eval_limit=5000 trainer.progress=false"
mkdir -p "$OUT/eval"
export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""

members() {  # k ... : train ensemble_m<k> with seed k, one after another
  local k
  for k in "$@"; do run "ensemble_m$k" "$STEPS" "$k"; done
}

evaluate() {  # name crops images: evaluate.py on every member and the ensemble, unless already done
  local name=$1 crops=$2 images=$3
  [ -f "$OUT/eval/$name.json" ] && { echo "evaluation $name: done before"; return 0; }
  python evaluate.py "checkpoints=$OUT/runs" "crops=$crops" "images=$images" per_image=true progress=false \
    "output=$OUT/eval/$name.json" $EVAL_EXTRA || echo "evaluation $name failed (exit $?); going on"
}

start=$(date +%s)
if [ -z "${EVAL_ONLY:-}" ]; then
  OUT="$OUT/runs" members 1 3 5 > "$OUT/lane1.log" 2>&1 &
  OUT="$OUT/runs" members 2 4 6 > "$OUT/lane2.log" 2>&1 &
  wait
  echo "training: $(elapsed "$start")" | tee "$OUT/wall_time.txt"
fi

start=$(date +%s)
evaluate heldout_crops144 144 "$HELDOUT" > "$OUT/eval/lane1.log" 2>&1 &
{
  evaluate select_crops1 1 "$SELECT"
  evaluate heldout_crops1 1 "$HELDOUT"
  evaluate heldout_crops10 10 "$HELDOUT"
} > "$OUT/eval/lane2.log" 2>&1 &
wait
echo "evaluation: $(elapsed "$start") (STEPS=$STEPS SELECT=$SELECT HELDOUT=$HELDOUT, commit $(git rev-parse \
  --short HEAD 2>/dev/null || echo unknown))" | tee -a "$OUT/eval/wall_time.txt"

python scripts/report_ensemble.py "$OUT"
