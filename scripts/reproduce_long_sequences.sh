#!/usr/bin/env bash
# Issue 18's long-sequence quality study (configs/long_sequences.py): every arm at every seed, one run
# at a time under nice, then the gatherer (experiments/long_sequences.py: the table, the two plots and
# the three verdicts in results/long_sequences/summary/<preset>.{md,json} and *.png).
# Each run writes results/long_sequences/<name>.json, name = long_sequences[_<preset>]_<arm>_seed<S>, and
# keeps its checkpoints in workdirs/long_sequences/<name>: a run whose results file exists (and is not
# a --snapshot's partial one) is skipped, an interrupted one resumes from its checkpoint on the rerun.
#
#   usage: SEEDS="1 2 3" PRESET=cpu [EPOCHS=N] scripts/reproduce_long_sequences.sh [arm[,w<D>] ...]   (default: every arm)
#   arm,w<D> (e.g. ultra,w32): the arm at width D, named ..._<arm>_w<D>...: the scaling-efficiency points.
#   EPOCHS=N (default 8): the `e<N>` budget, runs named ..._e<N>_seed<S>, gathered into their own table
#   (summary/<preset>_e<N>). 8, not the config's DEFAULT_EPOCHS = 4: at 4 epochs every arm was still
#   improving (configs/long_sequences.py, Result). EPOCHS=4 runs the config's default budget, named
#   without the suffix (the first look, summary/<preset>).
#   PRESET=cpu (default): long_world.CPU_WORLD, sized for the 2-core CPU box;
#   PRESET=cpu_multi: long_world.CPU_MULTI_WORLD, the same size with ten dormant topics per user (the
#   planted signal in the training split: issue 18's verdict 1);
#   PRESET=world: long_world.WORLD (histories to 16k), meant for an accelerator.
# Hardware: the per-arm time on the 2-core CPU box is the config docstring's "Runtime".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"1 2 3"}
PRESET=${PRESET:-cpu}
case $PRESET in
  cpu|cpu_multi) extra=",$PRESET"; prefix="long_sequences_$PRESET" ;;
  world) extra=""; prefix="long_sequences" ;;
  *) echo "PRESET must be cpu, cpu_multi or world, got $PRESET" >&2; exit 2 ;;
esac
EPOCHS=${EPOCHS:-8}
default_epochs=$("$PY" -c "from configs import long_sequences as l; print(l.DEFAULT_EPOCHS)")
ebudget=""
if [ "$EPOCHS" != "$default_epochs" ]; then extra="$extra,e$EPOCHS"; ebudget="_e$EPOCHS"; fi
arms=("$@")
if [ ${#arms[@]} -eq 0 ]; then
  read -r -a arms <<< "$("$PY" -c "from configs import long_sequences as l; print(' '.join(l.ARMS))")"
fi
mkdir -p workdirs/long_sequences
for arm in "${arms[@]}"; do
  for s in $SEEDS; do
    name="${prefix}_${arm//,/_}${ebudget}_seed${s}"   # ultra,w32 -> ..._ultra_w32_e8_seed1, as the config names it
    out="results/long_sequences/$name.json"
    if [ -f "$out" ] && ! grep -q '"partial": true' "$out"; then echo "skip $name ($out exists)"; continue; fi
    echo "run $name ($(date -u +%H:%M:%S))"
    nice -n 10 "$PY" -m experiments.run --config="configs/long_sequences.py:${arm}${extra}" --config.seed="$s" \
      --config.name="$name" --workdir="workdirs/long_sequences/$name" >> "workdirs/long_sequences/$name.log" 2>&1 \
      || { echo "FAILED $name: see workdirs/long_sequences/$name.log" >&2; exit 1; }
  done
done
"$PY" -m experiments.long_sequences --preset="$PRESET" --count_inference --epochs="$EPOCHS"
