"""Scaling-law fits recover known parameters, their bootstrap intervals cover them, and the
efficiency of one synthetic family over another is recovered."""
import math

import numpy as np
import pytest

from recjax.scaling import fits

COMPUTE = np.geomspace(1e8, 1e11, 12)


def _log_linear_runs(q0, eta, c0, noise, seed, compute=COMPUTE):
  rng = np.random.default_rng(seed)
  return compute, q0 - eta * np.log10(compute / c0) + noise * rng.standard_normal(len(compute))


def test_log_linear_recovers_parameters_with_covering_intervals():
  c, q = _log_linear_runs(0.80, 0.02, 1e9, 0.001, seed=0)
  fit = fits.fit_log_linear(c, q, c0=1e9, num_bootstrap=300, seed=0)
  assert fit.law.eta == pytest.approx(0.02, abs=0.002) and fit.law.q0 == pytest.approx(0.80, abs=0.002)
  assert fit.params["eta"].covers(0.02) and fit.params["q0"].covers(0.80)
  # The interval reflects the noise: about ±2 standard errors of the slope, not zero, not huge.
  se = 0.001 / math.sqrt(np.sum((np.log10(c) - np.log10(c).mean()) ** 2))
  width = fit.params["eta"].hi - fit.params["eta"].lo
  assert 1.5 * se < width < 8 * se
  assert fit.rmse == pytest.approx(0.001, rel=0.6)
  # Closed form: OLS slope of q on log10 C.
  slope = np.polyfit(np.log10(c), q, 1)[0]
  assert fit.law.eta == pytest.approx(-slope, rel=1e-9)
  assert fit.law.compute_for(fit.law.predict(3e9)) == pytest.approx(3e9, rel=1e-9)


def test_power_law_recovers_parameters_with_covering_intervals():
  rng = np.random.default_rng(1)
  c = np.geomspace(1e8, 1e12, 16)
  a, b, floor = 0.5 * 1e8 ** 0.3, 0.3, 0.5
  loss = a * c ** -b + floor + 0.002 * rng.standard_normal(len(c))
  fit = fits.fit_power_law(c, loss, num_bootstrap=300, seed=0)
  assert fit.law.b == pytest.approx(b, rel=0.1) and fit.law.c == pytest.approx(floor, abs=0.02)
  assert fit.params["b"].covers(b) and fit.params["c"].covers(floor) and fit.params["a"].covers(a)
  assert fit.rmse < 0.004
  # Noise-free data: the fit is exact (variable projection finds the global optimum in b).
  exact = fits.fit_power_law(c, a * c ** -b + floor, num_bootstrap=10).law
  assert (exact.a, exact.b, exact.c) == pytest.approx((a, b, floor), rel=1e-5)
  assert exact.compute_for(exact.predict(5e9)) == pytest.approx(5e9, rel=1e-6)
  assert np.isnan(exact.compute_for(floor - 0.1))   # below the floor: never reached


def test_efficiency_of_two_families_is_recovered():
  """A's slope is 2× B's, same quality at c0: B needs (C/c0)^(2−1) times A's compute to match A at C."""
  c0, at = 1e9, 1e11
  ca, qa = _log_linear_runs(0.80, 0.04, c0, 0.001, seed=2)
  cb, qb = _log_linear_runs(0.80, 0.02, c0, 0.001, seed=3)
  eff = fits.scaling_efficiency(ca, qa, cb, qb, at_compute=at, num_bootstrap=300, seed=0, c0=c0)
  assert eff.slope_ratio.value == pytest.approx(2.0, rel=0.1) and eff.slope_ratio.covers(2.0)
  truth = (at / c0) ** (0.04 / 0.02 - 1)   # = 100
  assert eff.iso_compute_ratio.value == pytest.approx(truth, rel=0.3) and eff.iso_compute_ratio.covers(truth)
  # Reversed roles: B over A is the reciprocal slope ratio, and B is less efficient (< 1).
  rev = fits.scaling_efficiency(cb, qb, ca, qa, at_compute=at, num_bootstrap=50, seed=0, c0=c0)
  assert rev.slope_ratio.value == pytest.approx(1 / eff.slope_ratio.value, rel=1e-9)
  assert rev.iso_compute_ratio.value < 1


def test_power_law_efficiency_is_the_exponent_ratio():
  c = np.geomspace(1e8, 1e12, 10)
  la, lb = 2.0 * c ** -0.2 + 0.1, 2.0 * c ** -0.1 + 0.1
  eff = fits.scaling_efficiency(c, la, c, lb, at_compute=1e10, law="power_law", num_bootstrap=20)
  assert eff.slope_ratio.value == pytest.approx(2.0, rel=1e-4)
  assert eff.iso_compute_ratio.value == pytest.approx(1e10, rel=1e-3)   # (C^-0.2 = C_B^-0.1) -> C_B = C²


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="run 2 has compute=0.0"):
    fits.fit_log_linear([1e8, 1e9, 0.0], [1, 2, 3])
  with pytest.raises(ValueError, match="run 1 has quality=nan"):
    fits.fit_log_linear([1e8, 1e9, 1e10], [1, float("nan"), 3])
  with pytest.raises(ValueError, match="≥ 4 distinct compute values"):
    fits.fit_power_law([1e8, 1e9, 1e10, 1e10], [3, 2, 1, 1])
  with pytest.raises(ValueError, match="same length"):
    fits.fit_log_linear([1e8, 1e9], [1, 2, 3])
  with pytest.raises(ValueError, match="law must be one of"):
    fits.fit_law("exponential", [1e8, 1e9], [1, 2])


def test_plot_writes_png(tmp_path):
  ca, qa = _log_linear_runs(0.80, 0.04, 1e9, 0.002, seed=4)
  cb, qb = _log_linear_runs(0.80, 0.02, 1e9, 0.002, seed=5)
  path = tmp_path / "scaling.png"
  out = fits.plot_scaling(path, {"A": (ca, qa), "B": (cb, qb)}, num_bootstrap=50, ylabel="NE")
  assert set(out) == {"A", "B"}
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_read_compute_runs_and_script(tmp_path, capsys):
  from scripts import plot_scaling   # pylint: disable=import-outside-toplevel
  ca, qa = _log_linear_runs(0.80, 0.04, 1e9, 0.001, seed=6)
  cb, qb = _log_linear_runs(0.80, 0.02, 1e9, 0.001, seed=7)
  path = tmp_path / "runs.csv"
  rows = ([f"A,{float(c)!r},{float(q)!r},x" for c, q in zip(ca, qa)]
          + [f"B,{float(c)!r},{float(q)!r},y" for c, q in zip(cb, qb)])
  path.write_text("family,compute,quality,note\n" + "\n".join(rows) + "\n")
  runs = fits.read_compute_runs(str(path))
  assert list(runs) == ["A", "B"] and np.array_equal(runs["A"][0], ca) and np.array_equal(runs["B"][1], qb)
  png = tmp_path / "out.png"
  assert plot_scaling.main([str(path), "--out", str(png), "--baseline", "B", "--num_bootstrap", "50"]) == 0
  printed = capsys.readouterr().out
  assert "A over B: slope ratio 2." in printed and png.exists()
  bad = tmp_path / "bad.csv"
  bad.write_text("family,compute,quality\nA,1e9,0.8\nA,-5,0.7\n")
  with pytest.raises(ValueError, match=r"bad.csv:3: column 'compute': -5.0 is not > 0"):
    fits.read_compute_runs(str(bad))
  bad.write_text("family,compute,quality\nA,1e9,oops\n")
  with pytest.raises(ValueError, match=r"bad.csv:2: column 'quality': not a number: 'oops'"):
    fits.read_compute_runs(str(bad))
  bad.write_text("family,flops,quality\nA,1e9,0.8\n")
  with pytest.raises(ValueError, match=r"missing column\(s\) \['compute'\]"):
    fits.read_compute_runs(str(bad))


def test_replicate_efficiency_recovers_slope_ratio_and_its_noise():
  """Replicates = the true qualities of two log-linear families (η_A = 2·η_B) plus per-draw noise:
  the point ratio is exact, the interval covers it with a width set by the noise, and fit_point
  agrees with the bootstrapped fit's point estimate."""
  ca, qa = _log_linear_runs(0.10, -0.03, 1e10, 0.0, seed=0, compute=np.geomspace(1e9, 1e11, 4))
  cb, qb = _log_linear_runs(0.08, -0.015, 1e10, 0.0, seed=0, compute=np.geomspace(5e8, 5e10, 4))
  rng = np.random.default_rng(1)
  ra, rb = qa + 0.002 * rng.standard_normal((200, 4)), qb + 0.002 * rng.standard_normal((200, 4))
  eff = fits.replicate_efficiency(ca, qa, ra, cb, qb, rb, at_compute=1e10)
  assert eff.slope_ratio.value == pytest.approx(2.0, rel=1e-9) and eff.slope_ratio.covers(2.0)
  assert 0.1 < eff.slope_ratio.hi - eff.slope_ratio.lo < 2.0
  assert eff.slope_a.value == pytest.approx(-0.03, rel=1e-9) and eff.replicates == 200
  # A at 1e10 reaches 0.10; B reaches it at 1e10 · 10^((0.10 - 0.08) / 0.015).
  assert eff.iso_compute_ratio.value == pytest.approx(10 ** (0.02 / 0.015), rel=1e-6)
  assert fits.fit_point("log_linear", ca, qa).eta == pytest.approx(
      fits.fit_log_linear(ca, qa, num_bootstrap=10).law.eta, rel=1e-12)
  with pytest.raises(ValueError, match="same S"):
    fits.replicate_efficiency(ca, qa, ra, cb, qb, rb[:10], at_compute=1e10)
  with pytest.raises(ValueError, match="runs"):
    fits.replicate_efficiency(ca, qa, ra[:, :3], cb, qb, rb, at_compute=1e10)
