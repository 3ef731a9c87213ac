#!/usr/bin/env bash
# One-time set-up on a fresh machine with Python 3.11: a virtual environment in .venv holding the
# pinned stack (requirements.txt; CPU jax, no TensorFlow) and recjax itself in editable mode.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# (pip prints a harmless "Location ... is ignored" line per package on machines with a local index)
quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; return "${PIPESTATUS[0]}"; }
quiet .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
quiet .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv/bin/python -c "import jax, flax, optax, orbax.checkpoint, grain, recjax; print('recjax set up: jax', jax.__version__, 'on', jax.default_backend())"
