# Shared by the reproduction scripts (sourced, not run): one training run, and a "lane" of runs on one core.
# Each run has an explicit directory, so re-running a script resumes unfinished runs and skips finished
# ones (resume=auto); a failed run is reported and the lane goes on.
#
#   OUT     the script's output directory (runs land in $OUT/<experiment>/seed<k>)
#   COMMON  overrides every run of the script gets (evaluation cadence, dataset)
#   EXTRA   the user's own overrides, last so they win

run() {  # experiment steps seed [more overrides...]
  local exp=$1 steps=$2 seed=$3
  shift 3
  python train.py "experiment=$exp" "trainer.max_steps=$steps" "seed=$seed" $COMMON "$@" \
    "hydra.run.dir=$OUT/$exp/seed$seed" $EXTRA || echo "run $exp seed $seed failed (exit $?); going on"
}

lane() {  # experiment:steps ... ; every seed of $SEEDS, one run after another on one core
  local seed spec
  for seed in $SEEDS; do
    for spec in "$@"; do run "${spec%:*}" "${spec#*:}" "$seed"; done
  done
}

queue() {  # run one "experiment steps seed [overrides...]" line of stdin per run, JOBS (default 2) at once
  export -f run
  export OUT COMMON EXTRA
  xargs -P "${JOBS:-2}" -L 1 bash -c 'run "$@"' _
}

elapsed() {  # seconds since $1, as "M min S s"
  local s=$(( $(date +%s) - $1 ))
  echo "$(( s / 60 )) min $(( s % 60 )) s"
}
