"""Data-mixing scaling laws: the capacity-competition law and the exponential baseline.

Capacity-competition + noise-reduction law (Dai & Zheng, ICML 2026, arXiv 2606.08167; papers.md §5,
read off the authors' code). For K domains, a mixture h on the simplex, model size N (millions of
parameters) and data D (billions of tokens), the held-out loss of domain i is

    L_i(h, N, D) = c_i · x_i*(h, N)^(−b_i)  +  A_i · (D · h_i)^(−a_i)  +  E_i
                   └ capacity: the model's ┘    └ noise: domain i's   ┘    └ irreducible ┘
                     share x_i of its size        share D·h_i of data

    x*(h, N) = argmin_x Σ_i h_i c_i x_i^(−b_i)   s.t.  Σ_i x_i = N + (K − 1)·H,  x_i ≥ H

5K + 1 parameters θ = (b, c, A, a, E | H). The inner problem is convex; its KKT point is
x_i(λ) = max(H, (h_i b_i c_i / λ)^(1 / (b_i + 1))) with λ set so the budget is met. Σ_i x_i(λ) falls
monotonically in λ, so λ is found by bisection, here in log λ (100 halvings of [1e−30, 1e30] in
log space leave no visible error; the authors' code bisects λ linearly over the same interval,
which cannot resolve λ below ≈ 0.8 and then returns an x that misses the budget and ignores N:
see `capacity_allocation`, whose bisection="linear" reproduces it). The bisection is a `lax.scan`, so JAX
differentiates the whole law; the root's dependence on θ is added by implicit differentiation, so
the fit gets exact gradients (checked against finite differences in the tests).

Exponential Data Mixing Law (Ye et al. 2024), the baseline: L_i(h) = c_i + k_i · exp(Σ_j t_ij h_j),
K² + 2K parameters, no (N, D) dependence (fit it at one scale).

Fitting follows the authors' protocol: mean squared error over the "active" entries (domains with
h_i ≥ 0.1), L-BFGS-B with exact gradients wrapped in SciPy's basin hopping, initial values drawn as
theirs. Metrics (MRE, MAE, RMSE) use the same active entries. All arithmetic is float64
(`jax.enable_x64` inside each public function; the caller's setting is left alone).
"""
from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

H_EPS = 0.1          # a domain counts in the fit and the metrics only where its weight is ≥ this
H_FLOOR = 1e-4       # weights are floored here in the noise term (D·h_i → 0 would be singular)
BISECT_ITERS = 100
PARAM_FLOOR = 1e-5   # every parameter is positive (L-BFGS-B bounds)


@dataclasses.dataclass(frozen=True)
class MixtureLaw:
  """Fitted parameters of the capacity-competition law, each [K] except the scalar H."""
  b: np.ndarray
  c: np.ndarray
  A: np.ndarray
  a: np.ndarray
  E: np.ndarray
  H: float
  bisection: str = "log"    # how x* is solved; "linear" only to reproduce the authors' code

  @property
  def num_domains(self) -> int:
    return len(self.b)

  def theta(self) -> np.ndarray:
    return np.concatenate([self.b, self.c, self.A, self.a, self.E, [self.H]]).astype(np.float64)

  @classmethod
  def from_theta(cls, theta, bisection: str = "log") -> "MixtureLaw":
    theta = np.asarray(theta, np.float64)
    k = (len(theta) - 1) // 5
    if len(theta) != 5 * k + 1:
      raise ValueError(f"theta has {len(theta)} entries; the law has 5K + 1")
    return cls(*(theta[i * k:(i + 1) * k] for i in range(5)), float(theta[5 * k]), bisection)

  def as_dict(self, domains=None) -> dict:
    names = list(domains) if domains is not None else [str(i) for i in range(self.num_domains)]
    return {"H": self.H, **{n: {"b": float(self.b[i]), "c": float(self.c[i]), "A": float(self.A[i]),
                                "a": float(self.a[i]), "E": float(self.E[i])} for i, n in enumerate(names)}}


@dataclasses.dataclass(frozen=True)
class ExponentialLaw:
  """Ye et al.'s exponential law: c [K], k [K], t [K, K]."""
  c: np.ndarray
  k: np.ndarray
  t: np.ndarray

  def theta(self) -> np.ndarray:
    return np.concatenate([self.c, self.k, self.t.reshape(-1)]).astype(np.float64)

  @classmethod
  def from_theta(cls, theta, num_domains: int) -> "ExponentialLaw":
    k = num_domains
    theta = np.asarray(theta, np.float64)
    return cls(theta[:k], theta[k:2 * k], theta[2 * k:].reshape(k, k))


# ---------------------------------------------------------------- the law in JAX


def _split_theta(theta, k):
  return tuple(theta[i * k:(i + 1) * k] for i in range(5)) + (theta[5 * k],)


def capacity_allocation(h_K, b_K, c_K, H, N, bisection: str = "log", iters: int = BISECT_ITERS):
  """x*(h, N) [K]: the inner problem's KKT point.

  bisection="log" (the law as written): λ bisected in log space over [1e−30, 1e30]; Σ x = budget to
  float64 precision. bisection="linear" repeats the authors' released code (`fitting_7domains.py`:
  100 linear halvings of [1e−30, 1e30]), kept only to reproduce their numbers: it cannot resolve
  λ < 1e30 / 2^100 ≈ 0.79 and then returns λ ≈ 0.39, so Σ x misses the budget and x no longer
  depends on N (on their SlimPajama fit: Σ x ≈ 30 for a budget of 148).
  Domains with h_i = 0 get the floor H; when K·H ≥ the budget, every domain gets H.
  """
  if bisection not in ("log", "linear"):
    raise ValueError(f"bisection must be 'log' or 'linear', got {bisection!r}")
  k = h_K.shape[-1]
  budget = N + (k - 1) * H
  num_K = h_K * b_K * c_K
  safe_num_K = jnp.where(num_K > 0, num_K, 1.0)

  def x_of_log_lam(log_lam):
    free_K = jnp.exp((jnp.log(safe_num_K) - log_lam) / (b_K + 1.0))
    return jnp.maximum(H, jnp.where(num_K > 0, free_K, 0.0))

  def x_of_lam(lam):   # the authors' arithmetic, operation for operation (bisection="linear")
    return jnp.maximum(H, jnp.where(num_K > 0, (safe_num_K / lam) ** (1.0 / (b_K + 1.0)), 0.0))

  x_of = x_of_log_lam if bisection == "log" else x_of_lam

  def halve(carry, _):
    lo, hi = carry
    mid = 0.5 * (lo + hi)
    over = jnp.sum(x_of(mid)) > budget     # too much capacity handed out: raise λ
    return (jnp.where(over, mid, lo), jnp.where(over, hi, mid)), None

  big = jnp.asarray(1e30, h_K.dtype)
  start = (-jnp.log(big), jnp.log(big)) if bisection == "log" else (1.0 / big, big)
  (lo, hi), _ = jax.lax.scan(halve, start, None, length=iters)
  if bisection == "linear":
    x_K = x_of_lam(0.5 * (lo + hi))
    return jnp.where(k * H >= budget, jnp.full_like(x_K, H), x_K)
  log_lam = 0.5 * (lo + hi)
  if bisection == "log":
    # Bisection has no derivative in θ; the implicit function theorem gives it. One Newton step from
    # the (stopped) root leaves the value unchanged and carries dlogλ/dθ = −(∂g/∂θ) / (∂g/∂logλ),
    # g = Σ x − budget. The authors' code omits this term, so its "exact" gradients are not.
    root = jax.lax.stop_gradient(log_lam)
    gap = lambda l: jnp.sum(x_of_log_lam(l)) - budget
    slope = jax.lax.stop_gradient(jax.grad(gap)(root))
    log_lam = root - jnp.where(slope != 0, gap(root) / jnp.where(slope != 0, slope, 1.0), 0.0)
  x_K = x_of_log_lam(log_lam)
  return jnp.where(k * H >= budget, jnp.full_like(x_K, H), x_K)


def predict_losses_jax(theta, h_MK, N_M, D_M, bisection: str = "log"):
  """Per-domain losses [M, K] for mixtures h [M, K] at model sizes N [M] (M params), data D [M] (B tokens)."""
  k = h_MK.shape[-1]
  b, c, A, a, E, H = _split_theta(theta, k)
  alloc = functools.partial(capacity_allocation, bisection=bisection)
  x_MK = jax.vmap(alloc, in_axes=(0, None, None, None, 0))(h_MK, b, c, H, N_M)
  noise_MK = A * (D_M[:, None] * jnp.maximum(h_MK, H_FLOOR)) ** (-a)
  return c * x_MK ** (-b) + noise_MK + E


def predict_exponential_jax(theta, h_MK):
  k = h_MK.shape[-1]
  c, kk, t = theta[:k], theta[k:2 * k], theta[2 * k:].reshape(k, k)
  return c + kk * jnp.exp(h_MK @ t.T)


def _masked_mse(pred_MK, L_MK, h_MK, h_eps):
  """Mean squared error over active entries (h_i ≥ h_eps and a measured loss; NaN = not measured)."""
  active = (h_MK >= h_eps) & jnp.isfinite(L_MK)
  err = jnp.where(active, pred_MK - jnp.where(active, L_MK, 0.0), 0.0)
  return jnp.sum(err ** 2) / jnp.maximum(jnp.sum(active), 1)


@functools.partial(jax.jit, static_argnames=("h_eps", "bisection"))
def _law_value_and_grad(theta, h_MK, L_MK, N_M, D_M, h_eps, bisection):
  loss = lambda t: _masked_mse(predict_losses_jax(t, h_MK, N_M, D_M, bisection), L_MK, h_MK, h_eps)
  return jax.value_and_grad(loss)(theta)


@functools.partial(jax.jit, static_argnames=("h_eps",))
def _exp_value_and_grad(theta, h_MK, L_MK, h_eps):
  return jax.value_and_grad(lambda t: _masked_mse(predict_exponential_jax(t, h_MK), L_MK, h_MK, h_eps))(theta)


# ---------------------------------------------------------------- numpy-facing API


def _as_rows(h_MK, N_M, D_M):
  h_MK = np.atleast_2d(np.asarray(h_MK, np.float64))
  m = h_MK.shape[0]
  N_M = np.broadcast_to(np.asarray(N_M, np.float64), (m,))
  D_M = np.broadcast_to(np.asarray(D_M, np.float64), (m,))
  return h_MK, N_M, D_M


def predict_losses(law: MixtureLaw, h_MK, N_M, D_M) -> np.ndarray:
  """L_i(h, N, D) [M, K] (N in millions of parameters, D in billions of tokens; scalars broadcast)."""
  h_MK, N_M, D_M = _as_rows(h_MK, N_M, D_M)
  with jax.enable_x64(True):
    return np.asarray(predict_losses_jax(jnp.asarray(law.theta()), jnp.asarray(h_MK), jnp.asarray(N_M),
                                         jnp.asarray(D_M), law.bisection))


def predict_exponential(law: ExponentialLaw, h_MK) -> np.ndarray:
  with jax.enable_x64(True):
    return np.asarray(predict_exponential_jax(jnp.asarray(law.theta()), jnp.asarray(np.atleast_2d(h_MK),
                                                                                   jnp.float64)))


def fit_metrics(pred_MK, L_MK, h_MK, h_eps: float = H_EPS) -> dict:
  """MRE, MAE, RMSE over the active entries (h_i ≥ h_eps), as the authors report them."""
  pred_MK, L_MK, h_MK = (np.asarray(x, np.float64) for x in (pred_MK, L_MK, h_MK))
  active = (h_MK >= h_eps) & np.isfinite(L_MK) & (np.abs(L_MK) > 1e-12)
  if not active.any():
    raise ValueError(f"no active entries (every weight < {h_eps})")
  err = (pred_MK - L_MK)[active]
  return {"mre": float(np.mean(np.abs(err) / np.abs(L_MK[active]))), "mae": float(np.mean(np.abs(err))),
          "rmse": float(np.sqrt(np.mean(err ** 2))), "entries": int(active.sum())}


def initial_law(num_domains: int, n_scale: float, seed: int) -> MixtureLaw:
  """The authors' starting point: b, a ~ U(0.1, 0.6), c, A ~ U(1, 8), E ~ U(0.1, 1), H = N / (10 K)."""
  rng = np.random.default_rng(seed)
  k = num_domains
  b, c, A, a, E = (rng.uniform(0.10, 0.60, k), rng.uniform(1.0, 8.0, k), rng.uniform(1.0, 8.0, k),
                   rng.uniform(0.10, 0.60, k), rng.uniform(0.10, 1.00, k))
  return MixtureLaw(b, c, A, a, E, n_scale / (10.0 * k))


def fit_mixture_law(h_MK, L_MK, N_M, D_M, *, seed: int = 0, niter: int = 10, stepsize: float = 0.25,
                    temperature: float = 1.0, maxiter: int = 1000, h_eps: float = H_EPS,
                    init: MixtureLaw | None = None, bisection: str = "log") -> tuple[MixtureLaw, dict]:
  """Fits θ by basin hopping around L-BFGS-B (exact JAX gradients). Returns (law, info)."""
  h_MK, N_M, D_M = _as_rows(h_MK, N_M, D_M)
  L_MK = np.asarray(L_MK, np.float64)
  if L_MK.shape != h_MK.shape:
    raise ValueError(f"losses {L_MK.shape} and mixtures {h_MK.shape} differ in shape")
  k = h_MK.shape[1]
  init = init or initial_law(k, float(np.median(N_M)), seed)
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(x) for x in (h_MK, L_MK, N_M, D_M))

    def objective(theta):
      v, g = _law_value_and_grad(jnp.asarray(theta), *args, h_eps=h_eps, bisection=bisection)
      return float(v), np.asarray(g, np.float64)

    kwargs = {"method": "L-BFGS-B", "jac": True, "bounds": [(PARAM_FLOOR, None)] * (5 * k + 1),
              "options": {"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9}}
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")   # overflow in far-off basin-hopping proposals is expected
      res = optimize.basinhopping(objective, init.theta(), minimizer_kwargs=kwargs, niter=niter,
                                  stepsize=stepsize, T=temperature, niter_success=60, seed=seed)
  law = MixtureLaw.from_theta(res.x, bisection)
  return law, {"train_mse": float(res.fun), "basin_hopping_iters": int(res.nit)}


def fit_exponential_law(h_MK, L_MK, *, seed: int = 0, restarts: int = 10, h_eps: float = H_EPS,
                        maxiter: int = 5000) -> tuple[ExponentialLaw, dict]:
  """Fits Ye et al.'s law by L-BFGS-B from `restarts` random starts (c ≥ 0, k ≥ 0, t free)."""
  h_MK = np.atleast_2d(np.asarray(h_MK, np.float64))
  L_MK = np.asarray(L_MK, np.float64)
  k = h_MK.shape[1]
  rng = np.random.default_rng(seed)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # all-NaN columns fall back below
    floor = np.nanmin(np.where(h_MK >= h_eps, L_MK, np.nan), axis=0)
    floor = np.where(np.isfinite(floor), floor, np.nanmin(L_MK, axis=0))
  floor = np.where(np.isfinite(floor), floor, 1.0)
  bounds = [(0.0, None)] * (2 * k) + [(None, None)] * (k * k)
  best = None
  with jax.enable_x64(True):
    args = (jnp.asarray(h_MK), jnp.asarray(L_MK))

    def objective(theta):
      v, g = _exp_value_and_grad(jnp.asarray(theta), *args, h_eps=h_eps)
      return float(v), np.asarray(g, np.float64)

    for r in range(restarts):
      c0 = floor * rng.uniform(0.3, 0.9, k)
      k0 = np.maximum(floor - c0, 1e-3) * np.exp(rng.uniform(-0.5, 0.5, k))
      t0 = rng.normal(0.0, 1.0 if r else 0.0, (k, k))
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = optimize.minimize(objective, np.concatenate([c0, k0, t0.reshape(-1)]), jac=True,
                                method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-10})
      if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
        best = res
  return ExponentialLaw.from_theta(best.x, k), {"train_mse": float(best.fun), "restarts": restarts}


def _search_simplex(avg_loss_value_and_grad, k: int, *, restarts: int, seed: int, h_min: float):
  """argmin of a mean loss over h = h_min + (1 − K h_min)·softmax(z): L-BFGS on z from random starts."""
  rng = np.random.default_rng(seed)
  best_val, best_h = np.inf, None
  to_h = lambda z: h_min + (1.0 - k * h_min) * jax.nn.softmax(z)
  val_grad = jax.jit(jax.value_and_grad(lambda z: avg_loss_value_and_grad(to_h(z))))
  for _ in range(restarts):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      res = optimize.minimize(lambda z: tuple(np.asarray(v, np.float64) for v in val_grad(jnp.asarray(z))),
                              rng.standard_normal(k), jac=True, method="L-BFGS-B",
                              options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    if res.fun < best_val:
      best_val, best_h = float(res.fun), np.asarray(to_h(jnp.asarray(res.x)))
  return best_h, best_val


def optimal_mixture(law: MixtureLaw, N: float, D: float, *, restarts: int = 20, seed: int = 0,
                    h_min: float = 1e-4) -> tuple[np.ndarray, float]:
  """h* = argmin_h (1/K) Σ_i L_i(h, N, D) on the simplex (each weight ≥ h_min); returns (h*, mean loss)."""
  k = law.num_domains
  with jax.enable_x64(True):
    theta = jnp.asarray(law.theta())
    mean_loss = lambda h: jnp.mean(predict_losses_jax(theta, h[None], jnp.asarray([N], jnp.float64),
                                                      jnp.asarray([D], jnp.float64), law.bisection))
    return _search_simplex(mean_loss, k, restarts=restarts, seed=seed, h_min=h_min)


def optimal_mixture_exponential(law: ExponentialLaw, *, restarts: int = 20, seed: int = 0,
                                h_min: float = 1e-4) -> tuple[np.ndarray, float]:
  k = len(law.c)
  with jax.enable_x64(True):
    theta = jnp.asarray(law.theta())
    return _search_simplex(lambda h: jnp.mean(predict_exponential_jax(theta, h[None])), k, restarts=restarts,
                           seed=seed, h_min=h_min)
