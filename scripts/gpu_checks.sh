#!/usr/bin/env bash
# The checks that need a GPU, as one short script for a borrowed accelerator (an H200 here; any CUDA
# GPU that the installed jax sees): the Pallas kernels compiled through Triton against their XLA
# references, forward and gradients (tests/pallas_kernels, the `Compiled` classes and the slow
# sweep), then the kernel benchmark (scripts/bench_kernels.py: Pallas vs the XLA path, forward and
# forward+backward, L = 200 .. 16k). The default test suite runs the same tests in interpret mode
# on CPU; only here do they compile.
#
#   usage: OUT=<folder> bash scripts/gpu_checks.sh      (writes versions.txt, pytest.log, junit
#          XML, bench_kernels.log and kernels_<device>.json into OUT; default OUT=results/bench/gpu)
#
# It runs under whatever python3 the machine has (its own jax, not requirements.txt's pins): the
# versions it ran under are the first thing it writes. Each stage has its own time limit so that
# one hang still leaves the others' output. Runtime on one H200: see results/bench/README or the
# log it writes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/bench/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export RECJAX_TEST_COMPILATION_CACHE=0 RECJAX_TEST_XLA_OPTIMIZE=1
{
  date -u +%FT%TZ; nvidia-smi -L 2>&1; git rev-parse HEAD 2>/dev/null
  "$PY" -c "import sys, jax, jaxlib; print(sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
} 2>&1 | tee "$OUT/versions.txt"

t0=$(date +%s)
# -o addopts="": the repo's addopts name xdist options that this machine's pytest may not know;
# one process is enough here (the GPU is the shared resource). Interpret-mode classes ran on CPU.
timeout "${TEST_LIMIT_S:-240}" "$PY" -m pytest -o addopts="" -p no:cacheprovider -q -m "" \
  -k "not Interpret" tests/pallas_kernels --junitxml="$OUT/kernels_pytest.xml" 2>&1 | tee "$OUT/pytest.log"
echo "pytest rc=${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/pytest.log"

t0=$(date +%s)
timeout "${BENCH_LIMIT_S:-300}" "$PY" scripts/bench_kernels.py ${BENCH_ARGS:-} \
  --out "$OUT/kernels_$("$PY" -c "import jax,re; print(re.sub(r'[^a-z0-9]+','_',jax.devices()[0].device_kind.lower()).strip('_'))").json" \
  2>&1 | tee "$OUT/bench_kernels.log"
echo "bench rc=${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/bench_kernels.log"
