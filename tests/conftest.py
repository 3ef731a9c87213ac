"""Shared fixtures: small synthetic sequence files (never MovieLens) and the shared-data locator."""
import os
import shutil
import tempfile

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


# `-n auto` (pyproject addopts) asks this hook for the number of pytest-xdist workers. Most of the
# suite's time is single-threaded XLA compilation, so one worker per usable core (the CPU affinity
# mask, which taskset and containers set; not the host's core count) pays. Past 4 it does not:
# with --dist loadfile the longest test files (end-to-end runs, the 8-device mesh subprocess) bound
# the wall time, and each worker holds its own JAX runtime (~1 GB), so a 16-core laptop would only
# spend memory. PYTEST_XDIST_AUTO_NUM_WORKERS, or an explicit `-n N`, overrides it.
MAX_AUTO_WORKERS = 4


# One persistent XLA compilation cache for the whole test session: the xdist workers and every
# subprocess a test starts (end-to-end runs, the 8-device mesh workers, the notebook kernel) inherit
# it through the environment, so a program compiled once (the same tiny model trained by the
# reference run, the killed run and its resumed run) is not compiled again in the next process.
# JAX keys each entry by the program, compile options, device set and versions, so a hit is the
# executable a fresh compile would give; only compiles over JAX's 1 s threshold are stored.
# It lives in a fresh temporary folder removed at the end, so nothing carries over between sessions.
# RECJAX_TEST_COMPILATION_CACHE=0, or a JAX_COMPILATION_CACHE_DIR already set, leaves it alone.
_OWN_COMPILATION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and os.environ.get("RECJAX_TEST_COMPILATION_CACHE", "1") != "0":
  _OWN_COMPILATION_CACHE = tempfile.mkdtemp(prefix="recjax_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_COMPILATION_CACHE


# Most of the suite's time is XLA compiling small programs that then run for milliseconds, so the
# session compiles with XLA's backend optimisation mostly off (`jax_disable_most_optimizations`:
# LLVM optimisation level 0, no expensive LLVM passes; the HLO passes, fusion included, still run, so
# compiled memory and FLOP counts are XLA's usual ones). Measured: ~26% less wall time on two
# compile-heavy test files (interleaved A/B, 2-core box); the whole suite passes either way. Tests
# that run many real steps are slower uncompiled-for-speed and opt back in with the `xla_optimized`
# fixture. Set through the environment so the subprocesses the tests start (end-to-end runs, mesh
# workers, notebooks) inherit it. RECJAX_TEST_XLA_OPTIMIZE=1, or the variable already set, leaves it alone.
if "JAX_DISABLE_MOST_OPTIMIZATIONS" not in os.environ and os.environ.get("RECJAX_TEST_XLA_OPTIMIZE", "0") != "1":
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"


@pytest.fixture
def xla_optimized():
  """Compile this test's programs with XLA's full optimisation pipeline, as production runs do."""
  import jax
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  env_before = os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS")
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "false"   # for the subprocesses the test starts
  yield
  jax.config.update("jax_disable_most_optimizations", before)
  if env_before is None:
    os.environ.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
  else:
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = env_before


def pytest_unconfigure(config):
  if _OWN_COMPILATION_CACHE:   # set only by the process that made it (workers inherit the variable)
    shutil.rmtree(_OWN_COMPILATION_CACHE, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
  if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
    return None   # xdist's own hook reads it
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  return max(1, min(usable, MAX_AUTO_WORKERS))


# With --dist loadfile a worker takes whole files, in collection order. The longest files go first
# (longest-processing-time-first), so that none of them is left running alone on one worker while
# the others idle at the end. Only the wall time depends on this order; a file not listed keeps its
# place after these. Ranked from the 25 slowest of a serial clean-clone run (760 s, 2026-12-02);
# re-rank from `-n 0 --durations=0` when the suite changes shape.
SCHEDULE_FIRST = (
    "tests/train/test_train.py",
    "tests/test_notebooks.py",
    "tests/test_notebooks_studies.py",
    "tests/train/test_mesh.py",
    "tests/test_attention_xla.py",
    "tests/models/test_reference_parity.py",
    "tests/train/test_config_checks.py",
    "tests/train/test_eval_step.py",
    "tests/models/test_models.py",
    "tests/tasks/test_tasks.py",
    "tests/models/test_token_packing.py",
    "tests/scaling/test_mixture_law.py",
    "tests/models/test_rankers.py",
    "tests/tasks/test_long_sequences_arms.py",
    "tests/test_bench_long_sequences.py",
)


def pytest_collection_modifyitems(config, items):
  rank = {path: i for i, path in enumerate(SCHEDULE_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))   # stable: files stay whole


def shared_data(name: str) -> str:
  """Path of ../shared/data/<name>, or skip the test with a clear message."""
  path = os.path.join(SHARED_DATA, name)
  if not os.path.isdir(path):
    pytest.skip(f"real data folder {path} not found (it lives beside the checkout as ../shared/data; "
                "the test needs it and is skipped elsewhere)")
  return path


def write_cyclic_sequences(path, num_users=120, num_items=30, min_len=5, max_len=40, seed=0):
  """`user item item ...` lines where each user walks a cycle with a user-specific step: learnable."""
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for u in range(1, num_users + 1):
      n = int(rng.integers(min_len, max_len + 1))
      start, stride = int(rng.integers(0, num_items)), int(rng.integers(1, 4))
      items = [(start + stride * i) % num_items + 1 for i in range(n)]
      f.write(f"{u} " + " ".join(map(str, items)) + "\n")
  return str(path)


@pytest.fixture
def cyclic_text(tmp_path):
  return write_cyclic_sequences(tmp_path / "seqs.txt")
