#!/usr/bin/env bash
# The paper's ensemble (Sec. 4.2.3, Figure 4's table) in miniature: the six BN-x30-based members
# (experiment=ensemble_m1..m6) on Fashion-MNIST with bn_inception_small, each trained as long as
# reproduce_mini.sh trains BN-x30 (4,000 steps), then evaluate.py on every member and the ensemble with 1, 10
# and 144 crops, and the report (OUT_DIR/report.md): the paper's table form with its rows beside ours, and
# the ensemble's gain over its best member with a paired bootstrap interval.
#
#   bash scripts/reproduce_ensemble.sh [OUT_DIR]      # default: sweeps/ensemble-<date>
#   STEPS=8000 bash scripts/reproduce_ensemble.sh OUT # longer members (the same runs, resumed)
#   LIMIT144=10000 bash scripts/reproduce_ensemble.sh OUT   # 144 crops on every test image (~2 h on 2 cores)
#   EXTRA=... (train.py overrides), EVAL_EXTRA=... (evaluate.py overrides), LIMIT=N (1 and 10 crops on N images)
#
# Member k trains with seed k, so that members that differ only in dropout do not share an initialisation.
# Re-running with the same OUT_DIR resumes unfinished runs, skips finished ones and reuses finished
# evaluations (OUT_DIR/eval/*.json). Two lanes, one per core, one thread each; 144 crops cost 144 forward
# passes per image and member, so by default they are evaluated on the first 1,000 test images (1 and 10
# crops on all 10,000, and 1 crop on the same 1,000 for a like-for-like comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lanes.sh

OUT=${1:-sweeps/ensemble-$(date +%Y%m%d-%H%M%S)}
STEPS=${STEPS:-4000}
LIMIT144=${LIMIT144:-1000}
LIMIT=${LIMIT:-}
EXTRA=${EXTRA:-}
EVAL_EXTRA=${EVAL_EXTRA:-}
COMMON="data=fashion_mnist trainer.eval_every=250 trainer.eval_limit=5000 trainer.progress=false"
mkdir -p "$OUT/eval"
export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""

members() {  # k ... : train ensemble_m<k> with seed k, one after another
  local k
  for k in "$@"; do run "ensemble_m$k" "$STEPS" "$k"; done
}

evaluate() {  # name crops [limit]: evaluate.py on every member and the ensemble, unless already done
  local name=$1 crops=$2 limit=${3:-}
  [ -f "$OUT/eval/$name.json" ] && { echo "evaluation $name: done before"; return 0; }
  python evaluate.py "checkpoints=$OUT/runs" "crops=$crops" ${limit:+"limit=$limit"} progress=false \
    "output=$OUT/eval/$name.json" $EVAL_EXTRA || echo "evaluation $name failed (exit $?); going on"
}

start=$(date +%s)
OUT="$OUT/runs" members 1 3 5 > "$OUT/lane1.log" 2>&1 &
OUT="$OUT/runs" members 2 4 6 > "$OUT/lane2.log" 2>&1 &
wait
echo "training: $(elapsed "$start")" | tee "$OUT/wall_time.txt"

evaluate "crops144_first$LIMIT144" 144 "$LIMIT144" > "$OUT/eval/lane1.log" 2>&1 &
{
  evaluate "crops1${LIMIT:+_first$LIMIT}" 1 "$LIMIT"
  evaluate "crops10${LIMIT:+_first$LIMIT}" 10 "$LIMIT"
  evaluate "crops1_first$LIMIT144" 1 "$LIMIT144"
} > "$OUT/eval/lane2.log" 2>&1 &
wait
echo "training and evaluation: $(elapsed "$start") (STEPS=$STEPS LIMIT144=$LIMIT144, commit $(git rev-parse \
  --short HEAD 2>/dev/null || echo unknown))" | tee -a "$OUT/wall_time.txt"

python scripts/report_ensemble.py "$OUT"
