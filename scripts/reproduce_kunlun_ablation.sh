#!/usr/bin/env bash
# Kunlun's ablation on the default synthetic world (issue 20): the full model
# (results/synthetic/kunlun_rank_synthetic.json) against one component removed at a time, seed 42,
# the same data, protocol and 8 epochs. Each row is a config argument of
# configs/kunlun_rank_synthetic.py (ABLATIONS: no_window, no_hsp, no_moe, no_event_personalisation,
# no_compskip, no_gdpa, no_sumkron) and writes results/synthetic/kunlun_rank_synthetic_<row>.json; then
# scripts/make_readme_tables.py builds the README table, scripts/plot_kunlun_ablation.py the PNG.
# Runs go one at a time under nice (the box is shared). Resumable: a row whose results file exists
# is skipped. A run starts only from a tree whose source folders are committed (the results file
# records the commit), so it waits while they are not.
#
#   usage: scripts/reproduce_kunlun_ablation.sh [row ...]      (default: every row, full model first)
# Hardware: 2-core x86 CPU; ~8 min per row on idle cores, 2-3x that on the shared box.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(full no_window no_hsp no_moe no_event_personalisation no_compskip no_gdpa no_sumkron)
for row in "${rows[@]}"; do
  if [ "$row" = full ]; then name=kunlun_rank_synthetic; arg=""; else name=kunlun_rank_synthetic_$row; arg=":$row"; fi
  if [ -f "results/synthetic/$name.json" ]; then echo "skip $name (results exist)"; continue; fi
  while [ -n "$(git status --porcelain --untracked-files=all -- recjax configs experiments pallas_kernels scripts)" ]; do
    echo "waiting: uncommitted source changes (the results file records the commit)"; sleep 60
  done
  echo "run $name ($(date -u +%H:%M:%S))"
  nice -n 10 "$PY" -m experiments.run --config="configs/kunlun_rank_synthetic.py$arg" --workdir="workdirs/$name"
done
"$PY" scripts/make_readme_tables.py   # the kunlun_ablation section (and the others)
"$PY" scripts/plot_kunlun_ablation.py
