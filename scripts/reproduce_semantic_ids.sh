#!/usr/bin/env bash
# Issue 17's semantic-ID study, end to end: the runs (each resumable: rerun the script and
# interrupted runs continue from their checkpoint, finished ones only re-evaluate), then the study's
# tables and plots (experiments/semantic_ids.py -> results/semantic_ids/) and the README tables.
#   usage: SEEDS="1 2 3" scripts/reproduce_semantic_ids.sh [ml1m] [sports]   (default: both parts)
# ml1m    SID vs ID item tables for HSTU on ML-1M with 10% of the items held out of training
#         (configs/sid_hstu_ml1m.py): ID, SID (content route, RQ-KMeans 3 x 256 + disambiguation),
#         SID + 190 hashed residual rows (still >= 4x smaller than the ID table), and SID from the
#         collaborative route (training co-occurrences: no codes for cold items, the ablation that
#         shows what content carries), and the hybrid route (collaborative codes for warm items, cold
#         items' content mapped into the collaborative space), alone and with 200 hashed residual rows
#         (977 rows, still >= 4x smaller). ~30 min per run on a quiet 2-core CPU,
#         1-2 h when runs share it. Then TIGER on ML-1M at `TIGER_ARG` (configs/tiger_ml1m.py; "short":
#         one epoch of the 1/8-size TIGER, 23 min on a quiet 2-core CPU), on HSTU's split and evaluation.
# sports  Amazon Sports under TIGER's protocol at seed 42: SASRec (1.8 h on a shared box), HSTU (18 min
#         on a quiet 2-core box), each then re-evaluated under ours (history items removed: --snapshot of the
#         finished run with :history_removed); TIGER at `TIGER_ARG` (default "short", the labelled
#         CPU run; "" = the paper's size, an accelerator job: ~43 days of this CPU), then re-evaluated
#         under ours too (the beam search masks the history window's items).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"1 2 3"}
TIGER_ARG=${TIGER_ARG-short}
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(ml1m sports)
mkdir -p workdirs/logs

run_seeds() {   # run_seeds NAME ARGS...: one run per seed, named NAME_seed<S>
  local name=$1; shift
  for s in $SEEDS; do
    echo "== $name seed $s"
    "$PY" -m experiments.run "$@" --config.seed="$s" --config.name="${name}_seed${s}" \
      --workdir="workdirs/${name}_seed${s}" 2>&1 | tee -a "workdirs/logs/${name}_seed${s}.log" \
      | grep -E "^(step|epoch|test|results|resumed)" || exit 1
  done
}

for part in "${parts[@]}"; do
  case $part in
    ml1m)
      run_seeds sid_hstu_ml1m_id --config=configs/sid_hstu_ml1m.py:id
      run_seeds sid_hstu_ml1m_sid --config=configs/sid_hstu_ml1m.py:sid
      run_seeds sid_hstu_ml1m_sid_res190 --config=configs/sid_hstu_ml1m.py:sid --config.model.sid_residual_size=190
      run_seeds sid_hstu_ml1m_sid_collab --config=configs/sid_hstu_ml1m.py:sid --config.sid.vectors=collab:ppmi \
        --config.sid.normalize=True
      run_seeds sid_hstu_ml1m_sid_hybrid --config=configs/sid_hstu_ml1m.py:sid \
        --config.sid.vectors=collab:ppmi+content:tfidf --config.sid.normalize=True
      run_seeds sid_hstu_ml1m_sid_hybrid_res200 --config=configs/sid_hstu_ml1m.py:sid \
        --config.sid.vectors=collab:ppmi+content:tfidf --config.sid.normalize=True --config.model.sid_residual_size=200
      tiger=tiger_ml1m${TIGER_ARG:+_$TIGER_ARG}
      "$PY" -m experiments.run --config="configs/tiger_ml1m.py${TIGER_ARG:+:$TIGER_ARG}" \
        --workdir="workdirs/$tiger" 2>&1 | tee -a "workdirs/logs/$tiger.log" | grep -E "^(epoch|test|results|resumed)" || exit 1
      ;;
    sports)
      for c in sasrec_amazon_sports hstu_amazon_sports; do
        echo "== $c"
        "$PY" -m experiments.run --config="configs/$c.py" --workdir="workdirs/$c" 2>&1 \
          | tee -a "workdirs/logs/$c.log" | grep -E "^(epoch|test|results|resumed)" || exit 1
        "$PY" -m experiments.run --config="configs/$c.py:history_removed" --workdir="workdirs/$c" --snapshot \
          --allow_config_change --overwrite_results || exit 1
      done
      tiger=tiger_amazon_sports${TIGER_ARG:+_$TIGER_ARG}
      "$PY" -m experiments.run --config="configs/tiger_amazon_sports.py${TIGER_ARG:+:$TIGER_ARG}" \
        --workdir="workdirs/$tiger" 2>&1 | tee -a "workdirs/logs/$tiger.log" | grep -E "^(epoch|test|results|resumed)" || exit 1
      "$PY" -m experiments.run --config="configs/tiger_amazon_sports.py:${TIGER_ARG:+$TIGER_ARG,}history_removed" \
        --workdir="workdirs/$tiger" --snapshot --allow_config_change --overwrite_results || exit 1
      ;;
    *) echo "unknown part $part (ml1m | sports)" >&2; exit 2 ;;
  esac
done
"$PY" -m experiments.semantic_ids
"$PY" scripts/make_readme_tables.py
