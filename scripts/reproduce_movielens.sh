#!/usr/bin/env bash
# Reproduce the HSTU paper's MovieLens rows with recjax, one run after another (each resumable:
# rerun the script and interrupted runs continue from their checkpoint; finished ones only re-evaluate),
# then regenerate the README tables. ML-1M HSTU takes ~30-40 min on a 2-core AVX-512 CPU,
# SASRec about the same, HSTU-large several hours; the ML-100K rows a few minutes each.
#   usage: scripts/reproduce_movielens.sh [config ...]   (default: all MovieLens configs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(hstu_ml100k sasrec_ml100k hstu_ml1m sasrec_ml1m hstu_ml1m_half:time
                                    hstu_ml1m_half:notime hstu_large_ml100k hstu_large_ml1m)
for c in "${configs[@]}"; do
  file=${c%%:*}; arg=${c#*:}; [ "$arg" = "$c" ] && arg=""
  name=$file; [ -n "$arg" ] && name="${file}_${arg}"
  mkdir -p workdirs/logs
  echo "== $c"
  "$PY" -m experiments.run --config="configs/${file}.py${arg:+:$arg}" --workdir="workdirs/$name" \
    2>&1 | tee -a "workdirs/logs/$name.log" | grep -E "^(step|epoch|test|results|resumed)" || exit 1
done
"$PY" scripts/make_readme_tables.py
