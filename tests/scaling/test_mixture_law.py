"""The data-mixture laws: the inner KKT solve, recovery of known parameters, the runs table, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from recjax.scaling import mixture_law as ml
from recjax.scaling import runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRUE = ml.MixtureLaw(b=np.array([0.5, 0.8, 0.3]), c=np.array([3.0, 5.0, 2.0]), A=np.array([1.0, 2.0, 1.5]),
                     a=np.array([0.3, 0.5, 0.4]), E=np.array([1.0, 0.5, 1.5]), H=5.0)


def _synthetic_runs(law, seed, noise=1e-3, mixtures_per_scale=12):
  """Losses from `law` at 4 model sizes (10–640 M: a range wide enough to identify b, c and H) × 4 token
  counts, Dirichlet mixtures, multiplicative noise."""
  rng = np.random.default_rng(seed)
  rows = [(n, d, rng.dirichlet(np.full(law.num_domains, 2.0))) for n in (10.0, 40.0, 160.0, 640.0)
          for d in (0.5, 1.0, 2.0, 4.0) for _ in range(mixtures_per_scale)]
  n_M = np.array([r[0] for r in rows])
  d_M = np.array([r[1] for r in rows])
  h_MK = np.stack([r[2] for r in rows])
  loss_MK = ml.predict_losses(law, h_MK, n_M, d_M) * (1 + noise * rng.standard_normal(h_MK.shape))
  return h_MK, loss_MK, n_M, d_M


def _brute_force_allocation(h, b, c, big_h, n):
  """x* by SLSQP on the constrained problem, from the even split."""
  k = len(h)
  budget = n + (k - 1) * big_h
  res = optimize.minimize(lambda x: np.sum(h * c * x ** (-b)), np.full(k, budget / k), method="SLSQP",
                          bounds=[(big_h, None)] * k, constraints=[{"type": "eq", "fun": lambda x: x.sum() - budget}],
                          options={"ftol": 1e-14, "maxiter": 1000})
  return res.x


@pytest.mark.parametrize("seed", range(5))
def test_capacity_allocation_is_the_constrained_minimum(seed):
  rng = np.random.default_rng(seed)
  k = 4
  h = rng.dirichlet(np.ones(k))
  b, c = rng.uniform(0.2, 2.0, k), rng.uniform(0.5, 8.0, k)
  big_h, n = rng.uniform(0.5, 5.0), rng.uniform(20.0, 500.0)
  with jax.enable_x64(True):
    x = np.asarray(ml.capacity_allocation(jnp.asarray(h), jnp.asarray(b), jnp.asarray(c), big_h, n))
  assert x.sum() == pytest.approx(n + (k - 1) * big_h, rel=1e-9)
  assert np.all(x >= big_h - 1e-12)
  ref = _brute_force_allocation(h, b, c, big_h, n)
  obj = lambda v: np.sum(h * c * v ** (-b))
  assert obj(x) <= obj(ref) * (1 + 1e-7)
  np.testing.assert_allclose(x, ref, rtol=1e-3)


def test_capacity_allocation_floors_and_zero_weights():
  with jax.enable_x64(True):
    # A domain with no weight gets the floor; a budget below K·H gives everyone H.
    x = np.asarray(ml.capacity_allocation(jnp.asarray([0.0, 0.5, 0.5]), jnp.ones(3), jnp.ones(3), 2.0, 100.0))
    assert x[0] == 2.0 and x.sum() == pytest.approx(104.0)
    x = np.asarray(ml.capacity_allocation(jnp.asarray([0.2, 0.3, 0.5]), jnp.ones(3), jnp.ones(3), 10.0, 5.0))
    np.testing.assert_array_equal(x, [10.0, 10.0, 10.0])


def test_linear_bisection_reproduces_the_authors_budget_miss():
  """The authors' linear bisection cannot resolve λ < 0.79: x then ignores the budget (and N)."""
  with jax.enable_x64(True):
    h, b, c = jnp.asarray([0.3, 0.3, 0.4]), jnp.asarray([1.0, 1.0, 1.0]), jnp.asarray([5.0, 5.0, 5.0])
    lin_small = np.asarray(ml.capacity_allocation(h, b, c, 1.0, 100.0, bisection="linear"))
    lin_large = np.asarray(ml.capacity_allocation(h, b, c, 1.0, 1000.0, bisection="linear"))
    log_small = np.asarray(ml.capacity_allocation(h, b, c, 1.0, 100.0, bisection="log"))
  assert log_small.sum() == pytest.approx(102.0, rel=1e-9)
  assert lin_small.sum() < 0.2 * 102.0
  np.testing.assert_allclose(lin_small, lin_large)   # no dependence on N
  with pytest.raises(ValueError, match="bisection"):
    ml.capacity_allocation(h, b, c, 1.0, 100.0, bisection="cubic")


def test_law_gradient_matches_finite_differences():
  h_MK, loss_MK, n_M, d_M = _synthetic_runs(TRUE, seed=0, mixtures_per_scale=2)
  theta = TRUE.theta() * 1.1
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(v) for v in (h_MK, loss_MK, n_M, d_M))
    f = lambda t: float(ml._law_value_and_grad(jnp.asarray(t), *args, h_eps=0.1, bisection="log")[0])
    _, grad = ml._law_value_and_grad(jnp.asarray(theta), *args, h_eps=0.1, bisection="log")
    for i in range(len(theta)):
      step = 1e-6 * max(1.0, abs(theta[i]))
      e = np.zeros_like(theta)
      e[i] = step
      fd = (f(theta + e) - f(theta - e)) / (2 * step)
      assert float(grad[i]) == pytest.approx(fd, rel=1e-4, abs=1e-9), f"parameter {i}"


@pytest.mark.usefixtures("xla_optimized")   # thousands of optimiser steps: faster compiled with XLA's backend passes
def test_fit_recovers_known_parameters_and_optimal_mixture():
  h_MK, loss_MK, n_M, d_M = _synthetic_runs(TRUE, seed=1)
  start = ml.MixtureLaw(*(p * f for p, f in zip((TRUE.b, TRUE.c, TRUE.A, TRUE.a, TRUE.E), (1.5, 0.6, 1.4, 0.7, 1.3))),
                        H=TRUE.H * 1.5)
  law, _ = ml.fit_mixture_law(h_MK, loss_MK, n_M, d_M, seed=0, niter=2, init=start, h_eps=0.0)
  for name in ("b", "c", "A", "a", "E"):
    np.testing.assert_allclose(getattr(law, name), getattr(TRUE, name), rtol=0.10, err_msg=name)
  assert law.H == pytest.approx(TRUE.H, rel=0.10)
  # The best mixture for a model 4x larger than any fitted, on 4x the data.
  h_fit, _ = ml.optimal_mixture(law, 2560.0, 16.0, restarts=4)
  h_true, loss_true = ml.optimal_mixture(TRUE, 2560.0, 16.0, restarts=4)
  assert np.abs(h_fit - h_true).sum() < 0.05
  # h* beats the uniform mixture under the true law.
  assert loss_true < float(np.mean(ml.predict_losses(TRUE, np.full((1, 3), 1 / 3), 2560.0, 16.0)))


def test_exponential_law_fits_its_own_form():
  rng = np.random.default_rng(3)
  k = 3
  true = ml.ExponentialLaw(c=np.array([1.0, 2.0, 0.5]), k=np.array([0.5, 1.0, 2.0]),
                           t=np.array([[-2.0, 0.3, 0.1], [0.2, -1.5, 0.0], [0.0, 0.4, -3.0]]))
  h_MK = rng.dirichlet(np.full(k, 2.0), 80)
  loss_MK = ml.predict_exponential(true, h_MK)
  law, _ = ml.fit_exponential_law(h_MK, loss_MK, seed=0, restarts=4, h_eps=0.0)
  m = ml.fit_metrics(ml.predict_exponential(law, h_MK), loss_MK, h_MK, h_eps=0.0)
  assert m["mre"] < 1e-3


def test_fit_metrics_use_active_entries_only():
  h = np.array([[0.05, 0.95], [0.5, 0.5]])
  truth = np.array([[1.0, 2.0], [1.0, np.nan]])
  pred = np.array([[100.0, 2.2], [1.1, 5.0]])
  m = ml.fit_metrics(pred, truth, h)    # entries (0,1) and (1,0): rel errors 0.1 and 0.1
  assert m["entries"] == 2 and m["mre"] == pytest.approx(0.1) and m["mae"] == pytest.approx(0.15)


def test_runs_table_roundtrip_and_errors(tmp_path):
  h_MK, loss_MK, n_M, d_M = _synthetic_runs(TRUE, seed=2, mixtures_per_scale=1)
  table = runs.RunsTable(("web", "code", "books"), h_MK, loss_MK, n_M * 1e6, d_M * 1e9, "memory")
  path = runs.write_runs_csv(str(tmp_path / "runs.csv"), table)
  back = runs.read_runs_csv(path)
  assert back.domains == table.domains and len(back) == len(table)
  np.testing.assert_allclose(back.losses_MK, loss_MK)
  np.testing.assert_allclose(back.N_M, n_M)
  np.testing.assert_allclose(back.D_M, d_M)

  lines = open(path).read().splitlines()
  bad = tmp_path / "bad.csv"
  bad.write_text("\n".join([lines[0], lines[1].replace(lines[1].split(",")[0], "oops", 1)] + lines[2:]) + "\n")
  with pytest.raises(runs.RunsTableError, match=r"row 2, column 'weight_web': not a number"):
    runs.read_runs_csv(str(bad))
  cells = lines[1].split(",")
  cells[0] = str(float(cells[0]) + 0.5)
  bad.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
  with pytest.raises(runs.RunsTableError, match=r"row 2: weights sum to"):
    runs.read_runs_csv(str(bad))
  cells = lines[1].split(",")
  cells[-1] = ""      # a loss that was not measured: NaN, left out of fits and metrics
  bad.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
  assert np.isnan(runs.read_runs_csv(str(bad)).losses_MK[0, -1])
  bad.write_text(lines[0].replace("model_size", "size") + "\n" + lines[1] + "\n")
  with pytest.raises(runs.RunsTableError, match="no 'model_size' column"):
    runs.read_runs_csv(str(bad))


def test_random_split_is_the_seeded_permutation():
  fit, held = runs.random_split(10, 0.8, seed=11514)
  idx = np.random.default_rng(11514).permutation(10)
  np.testing.assert_array_equal(fit, idx[:8])
  np.testing.assert_array_equal(held, idx[8:])


@pytest.mark.slow   # keeps the default suite under 10 minutes; the fit itself is tested by default
def test_cli_fits_a_table_and_writes_results(tmp_path):
  h_MK, loss_MK, n_M, d_M = _synthetic_runs(TRUE, seed=4, mixtures_per_scale=3)
  table = runs.RunsTable(("web", "code", "books"), h_MK, loss_MK, n_M * 1e6, d_M * 1e9, "memory")
  csv_path = runs.write_runs_csv(str(tmp_path / "runs.csv"), table)
  out = tmp_path / "res.json"
  proc = subprocess.run([sys.executable, "-m", "experiments.mixture_law", f"--runs={csv_path}", "--split=model_size",
                         "--niter=1", "--restarts=2", f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "held-out MRE" in proc.stdout and "optimal mixture" in proc.stdout
  rec = json.loads(out.read_text())
  assert rec["data"]["heldout_rows"] == 4 * 3 and rec["data"]["fitted_rows"] == 12 * 3
  assert rec["metrics"]["mixture_law"]["heldout"]["mre"] < 0.05
  assert abs(sum(rec["optimal_mixture"]["mixture_law"].values()) - 1) < 1e-6
  for field in ("command", "commit", "versions", "hardware", "seed", "wall_clock_s"):
    assert field in rec
