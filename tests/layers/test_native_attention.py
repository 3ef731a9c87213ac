"""The C++ causal-attention kernel (`layers/native_attention.py`) equals the XLA paths, values and
gradients, for any shape the kernel blocks unevenly; it is bit-identical for any thread count, refuses
bad input, and `attention(impl=...)` / HSTU pick it only where it applies."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.mask import MaskSpec
from recjax import native
from recjax.layers import native_attention
from recjax.layers.attention import attention
from recjax.layers.relative_bias import RelativeBias, time_buckets
from recjax.models.hstu import HSTU
from recjax.scaling import flops as flops_lib

needs_kernel = pytest.mark.skipif(not native.available(),
                                  reason=f"recjax.native kernels unavailable here: {native.why_unavailable()}")


def _case(b, h, l, dqk, dv, *, pos_p, num_buckets, seed=0, lengths=None):
  rng = np.random.default_rng(seed)
  f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  q, k, v = f32(b, l, h, dqk), f32(b, l, h, dqk), f32(b, l, h, dv)
  lens = jnp.asarray(rng.integers(0, l + 1, b) if lengths is None else lengths, jnp.int32)
  pos = f32(2 * pos_p - 1) if pos_p else None
  ts = f32(num_buckets) if num_buckets else None
  # Gaps from 1 s to ~30 days: many buckets in use.
  key_t = jnp.asarray(np.cumsum(rng.integers(1, 200_000, (b, l)), 1), jnp.int32)
  query_t = key_t + jnp.asarray(rng.integers(0, 50_000, (b, l)), jnp.int32)
  bias = RelativeBias(pos, ts, query_t if ts is not None else None, key_t if ts is not None else None)
  return q, k, v, lens, bias


def _run(impl, q, k, v, lens, bias, alpha, scale, tiling=False, targets=0):
  def f(q, k, v, pos, ts):
    b = RelativeBias(pos, ts, bias.query_times, bias.key_times)
    return attention(q, k, v, lengths_B=lens, mask=MaskSpec(causal=True, num_targets=targets), kind="pointwise",
                     activation="silu",
                     alpha=alpha, scale=scale, bias=b, impl=impl, tiling=tiling)
  out = jax.jit(f)(q, k, v, bias.pos_weights, bias.ts_weights)
  cot = jnp.asarray(np.random.default_rng(7).normal(size=out.shape), jnp.float32)
  argnums = tuple(i for i, x in enumerate((q, k, v, bias.pos_weights, bias.ts_weights)) if x is not None)
  grads = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * cot), argnums))(q, k, v, bias.pos_weights, bias.ts_weights)
  return out, grads


@needs_kernel
@pytest.mark.parametrize("b,h,l,dqk,dv,pos_p,num_buckets", [
    (3, 1, 17, 5, 6, 17, 0),      # L and widths not multiples of the kernel's vector
    (4, 2, 40, 8, 7, 40, 20),     # heads folded, time bias
    (2, 1, 50, 50, 50, 61, 129),  # HSTU's widths, the reference's N > L
    (3, 3, 33, 4, 4, 10, 0),      # position table shorter than L: offsets clamped
    (2, 1, 24, 9, 3, 0, 12),      # time bias only
    (2, 2, 19, 6, 6, 0, 0),       # no bias
])
def test_native_equals_dense_xla_values_and_gradients(b, h, l, dqk, dv, pos_p, num_buckets):
  q, k, v, lens, bias = _case(b, h, l, dqk, dv, pos_p=pos_p, num_buckets=num_buckets)
  ref_out, ref_grads = _run("xla", q, k, v, lens, bias, 0.7, 1.0 / (l + 5))
  out, grads = _run("native", q, k, v, lens, bias, 0.7, 1.0 / (l + 5))
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
  assert len(grads) == len(ref_grads)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(jnp.max(jnp.abs(r)))))


@needs_kernel
@pytest.mark.parametrize("targets", [1, 5, 40])
def test_native_with_targets_equals_dense_xla(targets):
  """The ranker's mask: the last T real tokens see the history and themselves (T > some lengths too)."""
  q, k, v, lens, bias = _case(4, 2, 37, 6, 5, pos_p=0, num_buckets=25, seed=5, lengths=[37, 20, 3, 0])
  ref_out, ref_grads = _run("xla", q, k, v, lens, bias, 1.0, 1 / 37, targets=targets)
  out, grads = _run("native", q, k, v, lens, bias, 1.0, 1 / 37, targets=targets)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(jnp.max(jnp.abs(r)))))


@needs_kernel
def test_native_equals_tiled_path_at_full_and_empty_rows():
  # Rows of length 0 and L next to partial ones; the tiled path (the CPU default before the kernel).
  q, k, v, lens, bias = _case(5, 1, 70, 12, 12, pos_p=81, num_buckets=30, lengths=[0, 70, 1, 69, 33])
  ref_out, ref_grads = _run("xla", q, k, v, lens, bias, 1.0, 1 / 81, tiling=True)
  out, grads = _run("native", q, k, v, lens, bias, 1.0, 1 / 81)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(out[0]))) == 0.0 and float(jnp.max(jnp.abs(out[2, 1:]))) == 0.0   # padding queries
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * max(1.0, float(jnp.max(jnp.abs(r)))))


@needs_kernel
def test_native_is_identical_for_any_thread_count():
  q, k, v, lens, bias = _case(6, 2, 45, 10, 10, pos_p=45, num_buckets=16, seed=3)
  fold = lambda x: jnp.swapaxes(x, 1, 2).reshape(-1, x.shape[1], x.shape[3])
  buckets = time_buckets(bias.key_times, bias.query_times, 16).astype(jnp.uint8)
  args = (fold(q), fold(k), fold(v), jnp.repeat(lens, 2), bias.pos_weights, bias.ts_weights, buckets)
  d_out = jnp.ones((12, 45, 10), jnp.float32)
  outs = [native.causal_attention_fwd(*args, heads=2, alpha=1.0, scale=0.1, num_threads=n) for n in (1, 3, 12)]
  grads = [native.causal_attention_bwd(*args, d_out, heads=2, alpha=1.0, scale=0.1, num_threads=n) for n in (1, 3, 12)]
  for o in outs[1:]:
    np.testing.assert_array_equal(o, outs[0])
  for g in grads[1:]:
    for a, b in zip(g, grads[0]):
      np.testing.assert_array_equal(a, b)


@needs_kernel
def test_native_rejects_out_of_table_buckets_and_bad_shapes():
  q = jnp.ones((2, 8, 4))
  lens = jnp.array([8, 3], jnp.int32)
  bad = jnp.zeros((2, 8, 8), jnp.uint8).at[1, 1, 2].set(9)   # key 1, query 2 of row 1: a real pair
  with pytest.raises(Exception, match=r"time bucket 9 at \(batch 1, query 2, key 1\)"):
    jax.block_until_ready(native.causal_attention_fwd(q, q, q, lens, None, jnp.zeros(4), bad, heads=1, alpha=1.0,
                                                      scale=1.0))
  # The same bucket at a padding pair (query 5 >= length 3) is never read: no error.
  bad_pad = jnp.zeros((2, 8, 8), jnp.uint8).at[1, 1, 5].set(9)
  jax.block_until_ready(native.causal_attention_fwd(q, q, q, lens, None, jnp.zeros(4), bad_pad, heads=1, alpha=1.0,
                                                    scale=1.0))
  with pytest.raises(ValueError, match="heads"):
    native.causal_attention_fwd(q, q, q, lens, None, None, None, heads=3, alpha=1.0, scale=1.0)
  with pytest.raises(ValueError, match="buckets"):
    native.causal_attention_fwd(q, q, q, lens, None, jnp.zeros(4), jnp.zeros((2, 8, 7), jnp.uint8), heads=1,
                                alpha=1.0, scale=1.0)


def test_attention_impl_native_refuses_what_the_kernel_does_not_compute():
  x = jnp.ones((2, 6, 1, 4))
  lens = jnp.array([6, 2])
  with pytest.raises(ValueError, match="pointwise SiLU"):
    attention(x, x, x, lengths_B=lens, mask=MaskSpec(causal=True), kind="softmax", impl="native")
  with pytest.raises(ValueError, match="causal self-attention"):
    attention(x, x, x, lengths_B=lens, mask=MaskSpec(causal=True, local_window=2), impl="native")
  with pytest.raises(ValueError, match="attention impl must be one of"):
    attention(x, x, x, lengths_B=lens, mask=MaskSpec(causal=True), impl="fast")
  with pytest.raises(ValueError, match=r"model\.attention_impl"):   # also where the kernel would not apply
    attention(x, x, x, lengths_B=lens, mask=MaskSpec(causal=True, local_window=2), impl="fast")


@needs_kernel
def test_auto_impl_uses_the_kernel_on_cpu_only_where_it_applies():
  x = jnp.ones((2, 6, 1, 4))
  lens = jnp.array([6, 2])
  hlo = lambda **kw: jax.jit(lambda a: attention(a, a, a, lengths_B=lens, **kw)).lower(x).as_text()
  assert "recjax_causal_attention_fwd" in hlo(mask=MaskSpec(causal=True), impl="auto")
  assert "recjax_causal_attention_fwd" not in hlo(mask=MaskSpec(causal=True), impl="xla")
  assert "recjax_causal_attention_fwd" not in hlo(mask=MaskSpec(causal=True, local_window=2), impl="auto")
  assert "recjax_causal_attention_fwd" not in hlo(mask=MaskSpec(causal=True), kind="softmax", impl="auto")


@needs_kernel
@pytest.mark.parametrize("token_packing", [True, False])
def test_hstu_with_the_kernel_equals_hstu_on_xla(token_packing):
  """The whole model (2 blocks, position and time bias, packed or not): outputs and parameter gradients."""
  rng = np.random.default_rng(0)
  b, l = 6, 30
  lens = rng.integers(1, l + 1, b).astype(np.int32)
  ids = np.where(np.arange(l) < lens[:, None], rng.integers(1, 50, (b, l)), 0).astype(np.int32)
  times = np.cumsum(rng.integers(1, 10_000, (b, l)), 1).astype(np.int32)
  batch = {"ids": jnp.asarray(ids), "lengths": jnp.asarray(lens), "times": jnp.asarray(times),
           "next_times": jnp.asarray(times + 500)}
  if token_packing:
    batch["token_index"] = jnp.zeros((int(lens.sum()) + 5,), jnp.int32)
  kw = dict(num_items=50, dim=16, num_blocks=2, num_heads=2, dqk=8, dv=8, max_len=l, attn_norm_len=l + 11,
            dropout=0.0, token_packing=token_packing)
  xla_model, native_model = HSTU(**kw, attention_impl="xla"), HSTU(**kw, attention_impl="native")
  params = xla_model.init(jax.random.key(0), batch)

  def loss(model):
    return lambda p: jnp.sum(jnp.sin(model.apply(p, batch)[0]) * (jnp.arange(l) < jnp.asarray(lens)[:, None])[..., None])
  ref_l, ref_g = jax.jit(jax.value_and_grad(loss(xla_model)))(params)
  got_l, got_g = jax.jit(jax.value_and_grad(loss(native_model)))(params)
  np.testing.assert_allclose(got_l, ref_l, rtol=1e-5)
  flat_ref, flat_got = jax.tree.leaves_with_path(ref_g), jax.tree.leaves(got_g)
  for (path, r), g in zip(flat_ref, flat_got):
    np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-6, err_msg=jax.tree_util.keystr(path))


def test_causal_attention_flops_counts_real_pairs():
  # Rows of 3 and 0 tokens: 6 pairs; per pair 2*(dqk + dv) forward, 2*(4 dqk + 3 dv) with the backward.
  assert flops_lib.causal_attention_flops([3, 0], heads=2, dqk=5, dv=4, backward=False) == 2 * 6 * 2 * 9
  assert flops_lib.causal_attention_flops([3, 0], heads=2, dqk=5, dv=4, backward=True) == 2 * 6 * 2 * 32
  with pytest.raises(ValueError):
    flops_lib.causal_attention_flops([3], heads=0, dqk=5, dv=4, backward=True)


def test_resolve_impl():
  assert native_attention.resolve_impl("xla") is False
  with pytest.raises(ValueError, match="impl"):
    native_attention.resolve_impl("gpu")


@needs_kernel
def test_trainer_counts_flops_on_the_xla_attention_twin():
  """The FLOP meter's step has no opaque attention custom call, and XLA's count equals the XLA model's."""
  import optax   # pylint: disable=import-outside-toplevel
  from recjax.train import loop   # pylint: disable=import-outside-toplevel
  from recjax.train.state import TrainState   # pylint: disable=import-outside-toplevel
  from recjax.train.step import make_step   # pylint: disable=import-outside-toplevel

  class Task:   # the one method flop_counting_step uses
    @staticmethod
    def loss_fn(model, mesh=None):
      return lambda p, b, key: jnp.sum(model.apply({"params": p}, b)[0] ** 2)

  b, l = 3, 12
  batch = {"ids": jnp.asarray(np.where(np.arange(l) < np.array([12, 5, 1])[:, None], 3, 0), jnp.int32),
           "lengths": jnp.array([12, 5, 1], jnp.int32)}
  kw = dict(num_items=10, dim=8, num_blocks=1, num_heads=1, dqk=4, dv=4, max_len=l, attn_norm_len=l, dropout=0.0,
            use_time_bias=False)
  model = HSTU(**kw, attention_impl="auto")
  params = model.init(jax.random.key(0), batch)["params"]
  tx = optax.adam(1e-3)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  key = jax.random.key(1)
  train_step = make_step(Task.loss_fn(model), tx, key)
  assert "recjax_causal_attention" in train_step.lower(state, batch).as_text()
  counting = loop.flop_counting_step(train_step, model, Task, None, tx, key)
  assert "recjax_causal_attention" not in counting.lower(state, batch).as_text()
  xla_step = make_step(Task.loss_fn(HSTU(**kw, attention_impl="xla")), tx, key)
  assert flops_lib.train_step_flops(counting, state, batch).total == flops_lib.train_step_flops(xla_step, state, batch).total
  assert loop.flop_counting_step(xla_step, HSTU(**kw, attention_impl="xla"), Task, None, tx, key) is xla_step
