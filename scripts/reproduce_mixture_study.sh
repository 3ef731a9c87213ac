#!/usr/bin/env bash
# The data-mixture study on the synthetic world's tabs (issue 19, "Studies -> Mixture"):
#   1. small runs: 8 mixtures x 2 scales (SASRec width 8 / 2,000 training targets, width 16 / 4,000),
#      each `python -m experiments.run --config=configs/mixture_synthetic.py` with its mixture;
#   2. their runs table -> both laws fitted on it (experiments.mixture_law), the mixture law's optimal
#      mixture for the larger scale (width 64 / 16,000 targets: ~5.6x the parameters, 4x the data);
#   3. the larger model at four mixtures: predicted, uniform, natural, the small grid's best, each at
#      the training seeds $BIG_SEEDS (42 = the config's seed, the first runs' unsuffixed names), one
#      run at a time;
#   4. report: all_runs.csv, comparison.json (mean ± std over seeds, the paired differences and the
#      done-when verdict of recjax/scaling/seeds.py, both laws' MRE on the larger model's runs),
#      predicted_vs_measured.png, big_model_mixtures.png.
# Fits: basin hopping 3 iterations, 8 restarts of the simplex search (the machine is shared).
# Resumable: a run whose results file exists is skipped, so rerun after an interruption.
#
#   usage: scripts/reproduce_mixture_study.sh [--quick]     (--quick: tiny plumbing check into /tmp)
# Hardware: 2-core x86 CPU shared with other jobs: about 3-6 min per small run (2 at a time),
# 2-10 min per larger run (12 of them), about 15 min for the fit (at ~10% of a core); about 2 hours in all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=.
if [ "${1:-}" = "--quick" ]; then
  out=${OUT:-/tmp/recjax_mixture_study_quick}; work=${WORK:-/tmp/recjax_mixture_study_quick_work}
  extra=(--quick); niter=1; restarts=2; BIG_SEEDS=${BIG_SEEDS:-42}
else
  out=results/mixture_study; work=workdirs/mixture_study; extra=(); niter=3; restarts=8; BIG_SEEDS=${BIG_SEEDS:-42,1,2,3,4,5,6,7,8,9}
fi
study() { "$PY" -m experiments.mixture_study --out="$out" --workdirs="$work" "${extra[@]}" "$@"; }
start=$(date +%s)
study --phase=small
study --phase=table
target=$("$PY" - "$out" "${extra[@]}" <<'PYEOF'
import sys
from experiments import mixture_study as ms
quick = "--quick" in sys.argv
print(*(ms.QUICK_BIG if quick else ms.BIG))
PYEOF
)
set -- $target
# The larger scale's (parameters, tokens) come from a probe of the model at that width: the fit
# needs them before the larger runs exist. Parameters: SASRec's count at that width (the same
# formula the loop reports as num_params); tokens: targets x epochs.
read -r params tokens < <("$PY" - "$1" "$2" "${extra[@]}" <<'PYEOF'
import sys
import jax, numpy as np
from configs import mixture_synthetic
from recjax.models import build_model
dim, targets = int(sys.argv[1]), int(sys.argv[2])
c = mixture_synthetic.get_config("quick" if "--quick" in sys.argv else None)
c.model.dim = dim
m = dict(c.model.copy_and_resolve_references())
model = build_model(m, c.data.world.num_items + 1)
batch = {"ids": np.ones((1, c.data.max_len), np.int32), "lengths": np.ones((1,), np.int32)}
shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, batch))
print(sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])), targets * c.train.num_epochs)
PYEOF
)
echo "larger scale: width $1, $params parameters, $tokens training tokens"
[ -f "$out/fit_small.json" ] || "$PY" -m experiments.mixture_law --runs="$out/small_runs.csv" --split=random \
  --train_frac=1.0 --seed=0 --niter=$niter --restarts=$restarts --target_model_size="$params" \
  --target_n_tokens="$tokens" --out="$out/fit_small.json" --name=mixture_study_fit_small
study --phase=big --seeds="$BIG_SEEDS" --jobs=1
study --phase=report
echo "study wall-clock this invocation: $(( $(date +%s) - start )) s"
