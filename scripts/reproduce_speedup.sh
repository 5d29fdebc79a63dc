#!/usr/bin/env bash
# How the BN speed-up depends on the baseline's training length (issue 14): one long Inception run and one
# long run per BN variant per seed on Fashion-MNIST (bn_inception_small), validated every 250 steps, so that
# every budget B <= Inception's length is read from the same runs: Inception's best top-1 within its first B
# steps is the target for B, each BN variant's first step at or above it gives the speed-up at B.
# The lr schedules are the experiments' own (the paper's relations); nothing is compressed to the run length.
#
#   bash scripts/reproduce_speedup.sh [OUT_DIR]            # default: sweeps/speedup-<date>; seeds 0 1
#   SEEDS="0 1 2" bash scripts/reproduce_speedup.sh OUT    # more seeds
#   BN_STEPS=32000 bash scripts/reproduce_speedup.sh OUT   # continue the BN runs further (same runs, resumed)
#
# Re-running with the same OUT_DIR resumes unfinished runs and skips finished ones. About 2.5 core-hours
# per seed (Inception 32,000 steps, BN-Baseline 32,000, the accelerated variants 16,000), two lanes of runs,
# one per core, one thread each; then scripts/report_speedup.py writes the report into OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lanes.sh

OUT=${1:-sweeps/speedup-$(date +%Y%m%d-%H%M%S)}
SEEDS=${SEEDS:-0 1}
EXTRA=${EXTRA:-}
BASE_STEPS=${BASE_STEPS:-32000}   # Inception and BN-Baseline
BN_STEPS=${BN_STEPS:-16000}       # BN-x5, BN-x30, BN-x5-Sigmoid
COMMON="data=fashion_mnist trainer.eval_every=250 trainer.eval_limit=5000 trainer.progress=false"
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""

start=$(date +%s)
# Balanced by measured cost (reproduce_mini: BN-Baseline ~20% dearer per step than Inception).
lane "inception:$BASE_STEPS" "bn_x5:$BN_STEPS" "bn_x30:$BN_STEPS" >> "$OUT/lane1.log" 2>&1 &
lane "bn_baseline:$BASE_STEPS" "bn_x5_sigmoid:$BN_STEPS" >> "$OUT/lane2.log" 2>&1 &
wait
echo "training took $(elapsed "$start") (SEEDS=$SEEDS, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))" \
  | tee -a "$OUT/wall_time.txt"

python scripts/report_speedup.py "$OUT"
