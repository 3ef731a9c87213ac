#!/usr/bin/env bash
# The ML-1M compute-scaling study of HSTU and SASRec (issue 19; configs/scaling_ml1m.py).
#
#   scripts/reproduce_scaling.sh          # the grid, then the fits
#   scripts/reproduce_scaling.sh runs     # the grid only
#   scripts/reproduce_scaling.sh fit      # the fits of whatever runs have finished
#
# Resumable: each run has its own workdir (workdirs/scaling_ml1m/<model>_<size>_s<seed>, checkpointed
# every epoch) and results file (results/scaling/runs/<model>_<size>_s<seed>.json); a run whose
# results file exists is skipped, an interrupted one resumes from its last checkpoint.
# The grid: SIZES for both models at seed 42, largest first (the longest runs start first, so JOBS
# workers finish together), then EXTRA_SEEDS at the smallest size (the seed noise the bootstrap
# over runs does not see). JOBS runs at a time (each at nice 10).
# The fits: experiments/scaling_study.py -> results/scaling/ml1m_scaling.{csv,json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
JOBS=${JOBS:-4}
SIZES=${SIZES:-"d64 d32 d16 d16x1 d8x1"}   # largest first
EXTRA_SEEDS=${EXTRA_SEEDS-"1 2"}   # EXTRA_SEEDS= (empty): none
RUNS=${RUNS:-results/scaling/runs}
STAGE=${1:-all}

run_one() {   # model size seed
  local model=$1 size=$2 seed=$3
  local tag="${model}_${size}_s${seed}"
  local out="$RUNS/$tag.json"
  if [[ -f "$out" ]]; then
    echo "skip $tag (done: $out)"
    return 0
  fi
  mkdir -p workdirs/scaling_ml1m "$RUNS"
  echo "start $tag $(date -u +%H:%M:%S)"
  if nice -n 10 "$PY" -m experiments.run --config="configs/scaling_ml1m.py:$model,$size" --config.seed="$seed" \
      --workdir="workdirs/scaling_ml1m/$tag" --results="$out" > "workdirs/scaling_ml1m/$tag.log" 2>&1; then
    echo "done  $tag $(date -u +%H:%M:%S)"
  else
    echo "FAILED $tag: see workdirs/scaling_ml1m/$tag.log" >&2
    return 1
  fi
}
export -f run_one
export PY RUNS

if [[ "$STAGE" == all || "$STAGE" == runs ]]; then
  smallest=${SIZES##* }
  {
    for size in $SIZES; do for model in hstu sasrec; do echo "$model $size 42"; done; done
    for seed in $EXTRA_SEEDS; do for model in hstu sasrec; do echo "$model $smallest $seed"; done; done
  } | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
fi

if [[ "$STAGE" == all || "$STAGE" == fit ]]; then
  nice -n 10 "$PY" -m experiments.scaling_study --runs_dir="$RUNS" --out=results/scaling/ml1m_scaling
fi
