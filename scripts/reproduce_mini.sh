#!/usr/bin/env bash
# The paper's Sec. 4.2.2 experiment (Figure 2 / Table 2) in miniature: all five variants, plus the text's two
# non-BN controls (Inception with sigmoid, Inception at 5x the learning rate), on Fashion-MNIST with the
# small BN-Inception (bn_inception_small), then the report.
# Fits in 30 minutes on 2 CPU cores: two lanes of runs, one per core, one thread each (measured faster than
# one run on two threads: benchmarks/model_step_time.py).
#
#   bash scripts/reproduce_mini.sh [OUT_DIR]          # default: sweeps/mini-<date>
#   SEEDS="0 1 2" bash scripts/reproduce_mini.sh      # more seeds (about 21 minutes per seed)
#   EXTRA="data.root=/path/to/fashion-mnist" bash scripts/reproduce_mini.sh
#
# Re-running with the same OUT_DIR resumes unfinished runs and skips finished ones (resume=auto).
# Inception and BN-Baseline get twice the steps of the accelerated variants: the claim is about how soon
# each reaches Inception's best accuracy, so Inception must train long enough to have a best worth reaching.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-sweeps/mini-$(date +%Y%m%d-%H%M%S)}
SEEDS=${SEEDS:-0}
EXTRA=${EXTRA:-}
BASE_STEPS=${BASE_STEPS:-8000}    # Inception and BN-Baseline
FAST_STEPS=${FAST_STEPS:-4000}    # BN-x5, BN-x30, BN-x5-Sigmoid
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""

# Validation every 250 steps on the first 5,000 test images: fine enough to time "steps to reach", cheap
# enough to fit the budget (about 3.5 s per evaluation).
run() {  # experiment steps seed
  python train.py "experiment=$1" "trainer.max_steps=$2" "seed=$3" data=fashion_mnist \
    trainer.eval_every=250 trainer.eval_limit=5000 trainer.progress=false \
    "hydra.run.dir=$OUT/$1/seed$3" $EXTRA || echo "run $1 seed $3 failed (exit $?); going on"
}

lane() {  # one core: runs one after another
  for seed in $SEEDS; do
    for spec in "$@"; do run "${spec%:*}" "${spec#*:}" "$seed"; done
  done
}

start=$(date +%s)
# Balanced by measured cost (a BN step costs ~25% more than a step without BN): 19-21 minutes each.
lane "inception:$BASE_STEPS" "bn_x30:$FAST_STEPS" "bn_x5_sigmoid:$FAST_STEPS" > "$OUT/lane1.log" 2>&1 &
lane "bn_baseline:$BASE_STEPS" "bn_x5:$FAST_STEPS" "inception_sigmoid:$((FAST_STEPS / 2))" \
  "inception_x5:$((FAST_STEPS / 2))" > "$OUT/lane2.log" 2>&1 &
wait
echo "training took $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s" | tee "$OUT/wall_time.txt"

python scripts/report.py "$OUT"
