"""The fused C++ sampled-softmax kernel equals the pure-JAX reference, values and gradients; its
thread count follows the CPUs this process may use; its build has a timeout and a complete key."""
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax import losses, native

needs_kernel = pytest.mark.skipif(not native.available(),
                                  reason=f"recjax.native kernels unavailable here: {native.why_unavailable()}")


def _inputs(t=300, v=40, d=7, n=16, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  user = jax.random.normal(ks[0], (t, d))
  table = jax.random.normal(ks[1], (v, d))
  pos = jax.random.randint(ks[2], (t,), 1, v)
  neg = jax.random.randint(ks[3], (t, n), 1, v)
  neg = neg.at[::3, 2].set(pos[::3])                     # negatives equal to the positive: removed
  weights = (jnp.arange(t) % 7 != 0).astype(jnp.float32)  # weight-0 rows, as in a packed batch
  return user, table, pos, neg, weights


def _value_and_grads(impl, user, table, pos, neg, w, temperature, normalize):
  if impl == "reference":
    f = lambda u, e: losses.sampled_softmax_loss_reference(u, e, pos, neg, w, temperature=temperature,
                                                           normalize=normalize)
    return jax.value_and_grad(f, (0, 1))(user, table)
  f = lambda u, e: losses.sampled_softmax_loss(u, e, pos, neg, w, temperature=temperature, normalize=normalize,
                                               impl=impl, chunk=64)
  return jax.jit(jax.value_and_grad(f, (0, 1)))(user, table)


@needs_kernel
@pytest.mark.parametrize("normalize,temperature", [(True, 0.05), (False, 1.0)])
def test_native_equals_reference_loss_and_gradients(normalize, temperature):
  args = _inputs()
  ref_l, ref_g = _value_and_grads("reference", *args, temperature, normalize)
  for impl in ("native", "xla"):
    l, g = _value_and_grads(impl, *args, temperature, normalize)
    np.testing.assert_allclose(l, ref_l, rtol=1e-5)
    for a, b in zip(g, ref_g):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("normalize,temperature,scale", [
    (True, 1e-3, 1.0),     # logits in ±1e3: the old kernel returned inf (reference ≈ 580)
    (True, 1e-4, 1.0),     # logit gaps ≈ 2e4
    (False, 1.0, 40.0),    # raw dot products of large vectors: gaps ≈ 4e4
])
def test_native_is_finite_and_exact_at_extreme_logit_ranges(normalize, temperature, scale):
  user, table, pos, neg, w = _inputs(seed=2)
  user, table = user * scale, table * scale
  s = (losses.l2_normalize(user) @ losses.l2_normalize(table).T if normalize else user @ table.T) / temperature
  assert float(jnp.max(s) - jnp.min(s)) > 1e3   # the range the old recovery of s0 could not survive
  ref_l, ref_g = _value_and_grads("reference", user, table, pos, neg, w, temperature, normalize)
  l, g = _value_and_grads("native", user, table, pos, neg, w, temperature, normalize)
  assert np.isfinite(float(l)) and all(bool(jnp.all(jnp.isfinite(x))) for x in g)
  np.testing.assert_allclose(l, ref_l, rtol=1e-5)
  for a, b in zip(g, ref_g):
    # Logits of magnitude |s| carry fp32 rounding ≈ |s| * 6e-8; that bounds the agreement.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@needs_kernel
@pytest.mark.parametrize("t,v", [(300, 40), (2000, 20000)])   # V * D small: per-thread dense copies;
def test_native_is_identical_for_any_thread_count(t, v):          # large: row-slice lists
  user, table, pos, neg, w = _inputs(t=t, v=v, seed=3)
  user, table = losses.l2_normalize(user), losses.l2_normalize(table)
  ids = jnp.concatenate([pos[:, None], neg], axis=1)
  ref_l, ref_g = _value_and_grads("reference", user, table, pos, neg, w, 0.05, False)
  outs = [native.sampled_softmax_with_grads(user, table, ids, w, 0.05, num_threads=n) for n in (1, 2, 3, 7)]
  total = float(jnp.sum(w))
  for l, du, de in outs:
    np.testing.assert_allclose(l / total, ref_l, rtol=1e-5)
    np.testing.assert_allclose(du / total, ref_g[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(de / total, ref_g[1], rtol=1e-4, atol=1e-6)
  if v == 20000:  # every row is summed in token order whatever the thread count: bit-identical
    for out in outs[1:]:
      for a, b in zip(out, outs[0]):
        np.testing.assert_array_equal(a, b)


@needs_kernel
def test_native_scales_with_the_cotangent():
  user, table, pos, neg, w = _inputs(seed=1)
  f = lambda u: 3.0 * losses.sampled_softmax_loss(u, table, pos, neg, w, temperature=0.1, impl="native")
  g = lambda u: 3.0 * losses.sampled_softmax_loss_reference(u, table, pos, neg, w, temperature=0.1)
  np.testing.assert_allclose(jax.grad(f)(user), jax.grad(g)(user), rtol=1e-4, atol=1e-6)


@needs_kernel
def test_native_rejects_out_of_range_ids():
  user, table, pos, neg, w = _inputs()
  bad = neg.at[5, 3].set(table.shape[0] + 2)
  with pytest.raises(Exception, match=r"item id 42 at token 5, candidate 4 is outside the table \[0, 40\)"):
    jax.block_until_ready(losses.sampled_softmax_loss(user, table, pos, bad, w, temperature=0.1, impl="native"))


@needs_kernel
def test_native_rejects_mismatched_shapes():
  user, table, pos, neg, w = _inputs()
  ids = jnp.concatenate([pos[:, None], neg], axis=1)
  with pytest.raises(ValueError, match=r"expected user \[T, D\], table \[V, D\]"):
    native.sampled_softmax_with_grads(user, table[:, :3], ids, w, 0.1)


def test_unknown_impl_is_an_error():
  user, table, pos, neg, w = _inputs()
  with pytest.raises(ValueError, match="impl must be one of"):
    losses.sampled_softmax_loss(user, table, pos, neg, w, temperature=0.1, impl="cuda")


# --- thread count ---------------------------------------------------------------------------


def _cgroup(tmp_path, files):
  for name, text in files.items():
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return str(tmp_path)


def test_usable_cpus_follows_affinity_and_cgroup_quota(tmp_path, monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 9}, raising=False)
  monkeypatch.setattr(os, "cpu_count", lambda: 64)   # the host's cores: must not matter
  assert native.usable_cpus(str(tmp_path / "none")) == 3
  assert native.usable_cpus(_cgroup(tmp_path / "v2", {"cpu.max": "150000 100000\n"})) == 2   # 1.5 CPUs
  assert native.usable_cpus(_cgroup(tmp_path / "v2max", {"cpu.max": "max 100000\n"})) == 3
  assert native.usable_cpus(_cgroup(tmp_path / "tiny", {"cpu.max": "10000 100000\n"})) == 1
  v1 = {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}
  assert native.usable_cpus(_cgroup(tmp_path / "v1", v1)) == 1
  v1_unlimited = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
  assert native.usable_cpus(_cgroup(tmp_path / "v1u", v1_unlimited)) == 3
  assert native.usable_cpus(_cgroup(tmp_path / "junk", {"cpu.max": "garbage\n"})) == 3


def test_thread_count_is_capped_by_work_and_overridable(monkeypatch):
  monkeypatch.delenv("RECJAX_NATIVE_THREADS", raising=False)
  per = native.MIN_TOKENS_PER_THREAD
  assert native.thread_count(14336, cpus=8) == 8
  assert native.thread_count(14336, cpus=2) == 2
  assert native.thread_count(3 * per + 1, cpus=8) == 3
  assert native.thread_count(per - 1, cpus=8) == 1
  assert native.thread_count(0, cpus=8) == 1
  monkeypatch.setattr(native, "usable_cpus", lambda: 5)
  assert native.thread_count(100 * per) == 5
  monkeypatch.setenv("RECJAX_NATIVE_THREADS", "3")
  assert native.thread_count(10, cpus=8) == 3     # the override is taken as given...
  assert native.thread_count(2, cpus=8) == 2      # ...up to one thread per token
  for bad in ("0", "-2", "two", "1.5"):
    monkeypatch.setenv("RECJAX_NATIVE_THREADS", bad)
    with pytest.raises(ValueError, match=r"\$RECJAX_NATIVE_THREADS must be a positive int"):
      native.thread_count(10_000)


# --- build ------------------------------------------------------------------------------------


def _fake_compiler(path, version, compile_step):
  path.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "{version}"; exit 0; fi\n'
                  f'echo run >> "{path}.log"\n{compile_step}\n')
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


_WRITE_OUTPUT = 'for a in "$@"; do out="$a"; done; : > "$out"'   # the output file is the last argument


def test_build_times_out_naming_the_command(tmp_path, monkeypatch):
  monkeypatch.setenv("RECJAX_NATIVE_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("CXX", _fake_compiler(tmp_path / "slowc++", "slow 1.0", "exec sleep 30"))
  monkeypatch.setenv("RECJAX_NATIVE_COMPILE_TIMEOUT", "0.5")
  with pytest.raises(RuntimeError, match=r"compiling sampled_softmax.cc timed out after 0.5 s .*slowc\+\+ .*-o "):
    native._build("sampled_softmax.cc")
  assert os.listdir(tmp_path / "cache") == []   # no half-written library left behind
  # available() turns the error into the fallback, with the reason.
  monkeypatch.setattr(native, "_state", {})
  assert not native.available()
  assert "timed out after 0.5 s" in native.why_unavailable()


def test_build_cache_key_has_jaxlib_and_compiler_versions(tmp_path, monkeypatch):
  monkeypatch.setenv("RECJAX_NATIVE_CACHE", str(tmp_path / "cache"))
  cxx_a = _fake_compiler(tmp_path / "a++", "fake 1.0", _WRITE_OUTPUT)
  monkeypatch.setenv("CXX", cxx_a)
  first = native._build("sampled_softmax.cc")
  assert native._build("sampled_softmax.cc") == first           # cached: compiled once
  assert (tmp_path / "a++.log").read_text().count("run") == 1
  monkeypatch.setattr(native, "_jaxlib_version", lambda: "99.0.0")
  other_jaxlib = native._build("sampled_softmax.cc")
  assert other_jaxlib != first
  (tmp_path / "a++").write_text((tmp_path / "a++").read_text().replace("fake 1.0", "fake 2.0"))
  assert native._build("sampled_softmax.cc") not in (first, other_jaxlib)
  assert (tmp_path / "a++.log").read_text().count("run") == 3


def test_bad_compile_timeout_is_an_error(monkeypatch):
  monkeypatch.setenv("RECJAX_NATIVE_COMPILE_TIMEOUT", "soon")
  with pytest.raises(ValueError, match=r"\$RECJAX_NATIVE_COMPILE_TIMEOUT must be a positive float"):
    native._run(["true"], "running true")
