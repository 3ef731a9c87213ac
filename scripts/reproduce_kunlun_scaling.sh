#!/usr/bin/env bash
# Kunlun vs InterFormer-lite compute scaling (issue 20; configs/kunlun_scaling.py).
#
#   scripts/reproduce_kunlun_scaling.sh          # the grid, then the fits
#   scripts/reproduce_kunlun_scaling.sh runs     # the grid only
#   scripts/reproduce_kunlun_scaling.sh fit      # the fits of whatever runs have finished
#
# Resumable: each run has its own workdir (workdirs/kunlun_scaling/<dataset>/<model>_<size>_s<seed>,
# checkpointed every epoch) and results file (results/kunlun_scaling/runs/<dataset>/<model>_<size>_s<seed>.json);
# a run whose results file exists is skipped, an interrupted one resumes from its last checkpoint.
# The grid: SIZES x both models x DATASETS at seed 42, the costliest first (widest, InterFormer-lite
# before Kunlun, the synthetic world before ML-100K), JOBS runs at a time (each at nice 10).
# The fits: experiments/scaling_study.py per dataset -> results/kunlun_scaling/<dataset>_scaling.{csv,json,png}.
# Hardware: 2-core x86 CPU, JOBS=2: about 1.5 h for the 16 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
JOBS=${JOBS:-2}
SIZES=${SIZES:-"d64 d32 d16 d8"}   # largest first
DATASETS=${DATASETS:-"synthetic ml100k"}
SEEDS=${SEEDS:-42}
OUT=results/kunlun_scaling
STAGE=${1:-all}

run_one() {   # dataset model size seed
  local dataset=$1 model=$2 size=$3 seed=$4
  local tag="${model}_${size}_s${seed}"
  local out="$OUT/runs/$dataset/$tag.json" wd="workdirs/kunlun_scaling/$dataset/$tag"
  if [[ -f "$out" ]]; then
    echo "skip $dataset/$tag (done: $out)"
    return 0
  fi
  mkdir -p "$(dirname "$wd")" "$(dirname "$out")"
  echo "start $dataset/$tag $(date -u +%H:%M:%S)"
  if nice -n 10 "$PY" -m experiments.run --config="configs/kunlun_scaling.py:$model,$size,$dataset" \
      --config.seed="$seed" --workdir="$wd" --results="$out" > "$wd.log" 2>&1; then
    echo "done  $dataset/$tag $(date -u +%H:%M:%S)"
  else
    echo "FAILED $dataset/$tag: see $wd.log" >&2
    return 1
  fi
}
export -f run_one
export PY OUT

if [[ "$STAGE" == all || "$STAGE" == runs ]]; then
  {
    for size in $SIZES; do for dataset in $DATASETS; do for model in interformer_lite kunlun; do
      for seed in $SEEDS; do echo "$dataset $model $size $seed"; done
    done; done; done
  } | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
fi

if [[ "$STAGE" == all || "$STAGE" == fit ]]; then
  for dataset in $DATASETS; do
    nice -n 10 "$PY" -m experiments.scaling_study --runs_dir="$OUT/runs/$dataset" --runs_workdirs= \
        --out_stem="$OUT/${dataset}_scaling" --a=kunlun --b=interformer_lite
  done
fi
