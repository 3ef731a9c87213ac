#!/usr/bin/env bash
# Kunlun's whole study (issue 20), every number of the README's Kunlun sections, resumable:
#   1. the rankers on both datasets (seed 42): Kunlun, InterFormer-lite, Wukong, DCNv2
#      (configs/<model>_rank_{synthetic,ml100k}.py);
#   2. Kunlun's seeds 1 and 2 on both (the seed-noise yardstick of the ablation tables);
#   3. the ablation rows, one component removed each (configs/kunlun_rank_synthetic.py ABLATIONS), on both;
#   4. the compute-scaling grid and its fits (scripts/reproduce_kunlun_scaling.sh, configs/kunlun_scaling.py);
#   5. the benches: rank-aware decomposition (scripts/bench_kunlun.py) and the ablation rows' training-step
#      throughput side by side (scripts/bench_train.py --models kunlun_ablation,interformer_lite);
#   6. the README tables (scripts/make_readme_tables.py) and the ablation plot.
# A run whose results file exists is skipped; an interrupted one resumes from its workdir's checkpoint.
# Runs go one at a time under nice (the scaling grid: JOBS at a time). Run the benches on a quiet machine.
#
#   usage: scripts/reproduce_kunlun.sh [stage ...]   stages: rankers seeds ablation scaling bench tables
#                                                     (default: all, in that order)
# Hardware: 2-core x86 CPU: about 5 h in all (rankers 5-15 min each, the scaling grid ~1.5 h).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(rankers seeds ablation scaling bench tables)
declare -A FOLDER=([synthetic]=synthetic [ml100k]=ml-100k)

run() {   # dataset name config-file[:arg] [extra experiments.run flags...]
  local dataset=$1 name=$2 config=$3; shift 3
  local out="results/${FOLDER[$dataset]}/$name.json"
  if [ -f "$out" ]; then echo "skip $name ($out exists)"; return 0; fi
  mkdir -p workdirs
  echo "run $name ($(date -u +%H:%M:%S))"
  nice -n 10 "$PY" -m experiments.run --config="configs/$config" "$@" --workdir="workdirs/$name" > "workdirs/$name.log" 2>&1 \
    || { echo "FAILED $name: see workdirs/$name.log" >&2; return 1; }
}

for stage in "${stages[@]}"; do
  case $stage in
    rankers)
      for d in synthetic ml100k; do for m in kunlun interformer_lite wukong dcnv2; do
        run "$d" "${m}_rank_$d" "${m}_rank_$d.py"
      done; done ;;
    seeds)
      for d in synthetic ml100k; do for s in 1 2; do
        run "$d" "kunlun_rank_${d}_seed$s" "kunlun_rank_$d.py" --config.seed="$s" --config.name="kunlun_rank_${d}_seed$s"
      done; done ;;
    ablation)
      rows=$("$PY" -c "from configs import kunlun_rank_synthetic as k; print(' '.join(k.ABLATIONS))")
      for d in synthetic ml100k; do for row in $rows; do
        run "$d" "kunlun_rank_${d}_$row" "kunlun_rank_$d.py:$row"
      done; done ;;
    scaling)
      scripts/reproduce_kunlun_scaling.sh ;;
    bench)
      "$PY" scripts/bench_kunlun.py --out results/bench/kunlun_decomposition_cpu.json
      "$PY" scripts/bench_train.py --models kunlun_ablation,interformer_lite --steps 4 --rounds 4 \
          --out results/bench/kunlun_ablation_cpu.json ;;
    tables)
      "$PY" scripts/make_readme_tables.py
      "$PY" scripts/plot_kunlun_ablation.py ;;
    *) echo "unknown stage $stage; stages: rankers seeds ablation scaling bench tables" >&2; exit 2 ;;
  esac
done
