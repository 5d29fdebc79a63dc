#!/usr/bin/env bash
# How the BN speed-up depends on the baseline's training length (issue 14): one long Inception run and one
# long run per BN variant per seed on Fashion-MNIST (bn_inception_small), validated every 250 steps, so that
# every budget B <= Inception's length is read from the same runs: Inception's best top-1 within its first B
# steps is the target for B, each BN variant's first step at or above it gives the speed-up at B.
# The lr schedules are the experiments' own (the paper's relations); nothing is compressed to the run length.
#
#   bash scripts/reproduce_speedup.sh [OUT_DIR]                 # default: sweeps/speedup-<date>; seeds 0 1
#   SEEDS="0 1 2" bash scripts/reproduce_speedup.sh OUT         # more seeds
#   BASE_STEPS=32000 BN_STEPS=16000 bash scripts/reproduce_speedup.sh OUT   # longer (same runs, resumed)
#   BN_VARIANTS="bn_baseline bn_x5 bn_x30 bn_x5_sigmoid" bash scripts/reproduce_speedup.sh OUT
#   BASELINES="inception inception_x5" bash scripts/reproduce_speedup.sh OUT   # + the same-rate control
#   EXTRA="schedule.decay_steps=165" bash scripts/reproduce_speedup.sh OUT2    # the paper's schedule shape
#
# Re-running with the same OUT_DIR resumes unfinished runs and skips finished ones; raising the step counts
# continues the same runs. JOBS runs at once (default 2, one per core, one thread each), longest first. At the
# defaults (Inception 16,000 steps, BN variants 8,000) about 20 minutes per seed per core; then
# scripts/report_speedup.py writes the report into OUT_DIR. The baselines are validated every 250 steps, the
# BN variants every BN_EVAL_EVERY (default 125): they cross the baselines' targets early, where a coarse grid
# would bound their steps loosely.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lanes.sh

OUT=${1:-sweeps/speedup-$(date +%Y%m%d-%H%M%S)}
SEEDS=${SEEDS:-0 1}
EXTRA=${EXTRA:-}
BASE_STEPS=${BASE_STEPS:-16000}   # Inception (and BN-Baseline, which is not accelerated)
BN_STEPS=${BN_STEPS:-8000}        # the accelerated BN variants
BN_VARIANTS=${BN_VARIANTS:-bn_x5 bn_x30}
BASELINES=${BASELINES:-inception}
BN_EVAL_EVERY=${BN_EVAL_EVERY:-125}
COMMON="data=fashion_mnist trainer.eval_every=250 trainer.eval_limit=5000 trainer.progress=false"
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""

start=$(date +%s)
for seed in $SEEDS; do
  for b in $BASELINES; do echo "$b $BASE_STEPS $seed"; done
  for v in $BN_VARIANTS; do
    steps=$BN_STEPS; [ "$v" = bn_baseline ] && steps=$BASE_STEPS
    echo "$v $steps $seed trainer.eval_every=$BN_EVAL_EVERY"
  done
done | queue >> "$OUT/queue.log" 2>&1
echo "training took $(elapsed "$start") (SEEDS=$SEEDS BASELINES=$BASELINES BASE_STEPS=$BASE_STEPS BN_STEPS=$BN_STEPS BN_VARIANTS=$BN_VARIANTS EXTRA=$EXTRA, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))" \
  | tee -a "$OUT/wall_time.txt"

python scripts/report_speedup.py "$OUT"
