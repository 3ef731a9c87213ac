#!/usr/bin/env bash
# Reproduce the HSTU paper's MovieLens rows with recjax at several seeds, one run after another (each
# resumable: rerun the script and interrupted runs continue from their checkpoint; finished ones only
# re-evaluate), then regenerate the README tables (mean ± std over the seeds of each config).
# Each run writes results/<dataset>/<config>_seed<S>.json. ML-1M HSTU takes ~30 min per seed on a
# 2-core CPU, SASRec ~40 min, the ML-1M half runs ~15 min, ML-100K a few minutes, HSTU-large hours.
#   usage: SEEDS="1 2 3" scripts/reproduce_movielens.sh [config ...]   (default: all MovieLens configs)
# Any config works the same way: `scripts/reproduce_movielens.sh hstu_rank_synthetic dlrm_rank_synthetic
# din_rank_synthetic` gives the seeded rows of the README ranking table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"1 2 3"}
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(hstu_ml1m hstu_ml100k sasrec_ml100k sasrec_ml1m hstu_ml1m_half:time
                                    hstu_ml1m_half:notime hstu_large_ml100k hstu_large_ml1m)
for c in "${configs[@]}"; do
  file=${c%%:*}; arg=${c#*:}; [ "$arg" = "$c" ] && arg=""
  name=$file; [ -n "$arg" ] && name="${file}_${arg}"
  for s in $SEEDS; do
    mkdir -p workdirs/logs
    echo "== $c seed $s"
    "$PY" -m experiments.run --config="configs/${file}.py${arg:+:$arg}" --config.seed="$s" \
      --config.name="${name}_seed${s}" --workdir="workdirs/${name}_seed${s}" \
      2>&1 | tee -a "workdirs/logs/${name}_seed${s}.log" | grep -E "^(step|epoch|test|results|resumed)" || exit 1
  done
done
"$PY" scripts/make_readme_tables.py
