"""XLA's cost analysis against the analytic matmul counts of HSTU and SASRec, loops and custom calls."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from recjax import losses, native
from recjax.models import init_params
from recjax.models.hstu import HSTU
from recjax.models.sasrec import SASRec
from recjax.scaling import flops
from recjax.train.state import TrainState
from recjax.train.step import make_train_step

B, L, V, D, NEG = 2, 32, 300, 256, 16
# Wide enough that matmuls are ≈ 98% of XLA's count; the rest is elementwise work (norms, SiLU, bias),
# ≈ 7k FLOPs per token per HSTU block at D = 128, which grows like D while the matmuls grow like D².
MODELS = {
    # The analytic counts assume the padded grid: dense attention, token packing off.
    "hstu": (lambda: HSTU(num_items=V, dim=D, num_blocks=2, num_heads=2, dqk=128, dv=128, max_len=L,
                          attn_norm_len=L, dropout=0.0, attention_tiling=False, token_packing=False,
                          attention_impl="xla"),   # XLA's dense attention: what the analytic count counts
             flops.analytic_hstu_flops),
    "sasrec": (lambda: SASRec(num_items=V, dim=D, num_blocks=2, num_heads=2, ffn_dim=D, max_len=L, dropout=0.0,
                              attention_tiling=False), flops.analytic_sasrec_flops),
}


def _batch():
  rng = np.random.default_rng(0)
  ids = rng.integers(1, V, (B, L)).astype(np.int32)
  times = np.cumsum(rng.integers(1, 1000, (B, L)), axis=1).astype(np.int32)
  return {"ids": jnp.asarray(ids), "lengths": jnp.full((B,), L, jnp.int32), "times": jnp.asarray(times),
          "next_times": jnp.asarray(times + 7), "labels": jnp.asarray(rng.integers(1, V, (B, L)).astype(np.int32)),
          "token_index": jnp.arange(B * L, dtype=jnp.int32), "token_weight": jnp.ones((B * L,), jnp.float32)}


def test_xla_cost_counts_a_matmul_exactly():
  cost = flops.xla_cost(lambda a, b: a @ b, jnp.ones((64, 32)), jnp.ones((32, 16)))
  assert cost.flops == 2 * 64 * 32 * 16
  assert cost.loops == () and cost.custom_calls == () and cost.exact


def test_loops_are_reported_because_xla_counts_their_body_once():
  def f(x_SMK, w_KN):
    return jax.lax.scan(lambda c, x: (c + x @ w_KN, None), jnp.zeros((8, 16)), x_SMK)[0]
  cost = flops.xla_cost(f, jnp.ones((5, 8, 32)), jnp.ones((32, 16)))
  (loop,) = cost.loops
  one_body = 2 * 8 * 32 * 16
  assert loop.trip_count == 5 and loop.body_matmul_flops == one_body
  assert one_body <= cost.flops < 2 * one_body   # XLA's blind spot...
  assert cost.loop_matmul_flops == 4 * one_body and cost.exact   # ...filled from the HLO
  assert 5 * one_body <= cost.total < 5 * one_body * 1.1   # + the adds, still counted once


def test_nested_loops_multiply():
  def f(x_SMK, w_KN, w_NN):
    def outer(c, x_MK):
      # The inner body depends on its carry, so XLA cannot hoist the matmul out of the loop.
      inner = jax.lax.scan(lambda c2, _: (c2 @ w_NN, None), x_MK @ w_KN, None, length=3)[0]
      return c + inner, None
    return jax.lax.scan(outer, jnp.zeros((8, 16)), x_SMK)[0]
  cost = flops.xla_cost(f, jnp.ones((4, 8, 32)), jnp.ones((32, 16)), jnp.ones((16, 16)))
  assert sorted(lp.trip_count for lp in cost.loops) == [3, 4]
  truth = 4 * (2 * 8 * 32 * 16 + 3 * 2 * 8 * 16 * 16)
  assert cost.flops < 0.5 * truth and cost.total == pytest.approx(truth, rel=0.05)


def test_chunked_loss_loop_matmuls_are_filled_in():
  """The XLA sampled softmax scans T/chunk chunks forward and backward; XLA counts one chunk of
  each. The HLO adds the other chunks' dots (logits forward, user gradient backward) exactly. The
  table gradient is an elementwise scatter, not a dot, so 3/4 of it stays uncounted: ≈ 3/4 of a
  third of the loss, which the 0.7 bound below leaves room for and no more."""
  t, k, v = 64, 1025, 300
  args = (jnp.ones((t, D)), jnp.ones((v, D)))
  fixed = (jnp.ones((t,), jnp.int32), jnp.ones((t, k - 1), jnp.int32), jnp.ones((t,)))

  def cost(chunk):
    loss = lambda u, tab: losses.sampled_softmax_loss(u, tab, *fixed, temperature=0.05, chunk=chunk, impl="xla")
    return flops.xla_cost(jax.value_and_grad(loss, argnums=(0, 1)), *args)
  chunked, whole = cost(16), cost(t)
  logits = flops.sampled_softmax_flops(t, k - 1, D, backward=False)
  assert [lp.trip_count for lp in chunked.loops if lp.has_matmul] == [4, 4]
  assert chunked.loop_matmul_flops == 3 / 4 * 2 * logits and whole.loop_matmul_flops == 0
  assert chunked.flops < 0.3 * whole.flops and 0.7 * whole.total < chunked.total < whole.total


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cost_analysis_matches_analytic_counts(name):
  """Forward: XLA ≈ analytic matmuls. Forward + backward of model and sampled softmax (XLA impl,
  one chunk so no loop): XLA ≈ 3 × (model forward + loss logits). XLA also counts elementwise ops, so
  it must sit at or above the matmul count, by under 5%."""
  make, analytic = MODELS[name]
  model, batch = make(), _batch()
  params = init_params(model, jax.random.key(0), batch)
  neg_TN = jax.random.randint(jax.random.key(1), (B * L, NEG), 1, V)

  def loss(p, b):
    out_BLD, table_VD = model.apply({"params": p}, b)
    return losses.sampled_softmax_loss(out_BLD.reshape(-1, D), table_VD, b["labels"].reshape(-1), neg_TN,
                                       b["token_weight"], temperature=0.05, chunk=B * L, impl="xla")

  count = analytic(model, batch)
  fwd = flops.forward_flops(lambda p, b: model.apply({"params": p}, b)[0], params, batch)
  assert fwd.xla.exact and fwd.examples == B
  print(f"{name}: XLA / analytic forward {fwd.total / count.forward:.4f}")
  assert 1.0 <= fwd.total / count.forward < 1.05, (fwd.total, count.terms)

  train = flops.train_step_flops(jax.value_and_grad(loss), params, batch)
  expected = count.forward_backward + flops.sampled_softmax_flops(B * L, NEG, D, backward=True)
  assert train.xla.exact
  print(f"{name}: XLA / analytic forward+backward {train.total / expected:.4f}")
  assert 1.0 <= train.total / expected < 1.05, (train.total, expected)
  assert train.per_example == pytest.approx(train.total / B)


def test_analytic_counts_by_hand():
  """HSTU D=4, H=1, dqk=dv=2, L=3, B=1, one block: uvqk 2·3·4·8, qk/av 2·9·2, out 2·3·2·4."""
  cfg = {"name": "hstu", "dim": 4, "num_blocks": 1, "num_heads": 1, "dqk": 2, "dv": 2}
  count = flops.analytic_model_flops(cfg, (1, 3))
  assert count.terms == {"uvqk": 192, "qk": 36, "av": 36, "out": 48}
  causal = flops.analytic_model_flops(cfg, (1, 3), attention="causal")
  assert causal.terms["qk"] == 2 * 6 * 2 and causal.terms["uvqk"] == 192
  sas = flops.analytic_model_flops({"name": "sasrec", "dim": 4, "num_blocks": 2, "num_heads": 2, "ffn_dim": 8},
                                   {"ids": np.zeros((1, 3))})
  assert sas.terms == {"qkv": 2 * 288, "qk": 2 * 72, "av": 2 * 72, "attn_out": 2 * 96, "ffn": 2 * 384}
  assert sas.forward_backward == 3 * sas.forward
  with pytest.raises(ValueError, match="no analytic FLOPs count for model 'gru'"):
    flops.analytic_model_flops({"name": "gru"}, (1, 3))
  with pytest.raises(ValueError, match="attention must be one of"):
    flops.analytic_hstu_flops(cfg, (1, 3), attention="tiled")
  with pytest.raises(ValueError, match=r"expected batch ids \[B, L\]"):
    flops.analytic_hstu_flops(cfg, (3,))


def test_embedding_traffic():
  t = flops.embedding_traffic(2, 5, 8, num_tokens=6, num_negatives=3, itemsize=2)
  assert t.rows == 2 * 5 + 6 * 4 and t.bytes == t.rows * 8 * 2 and t.train_bytes() == 2 * t.bytes


@pytest.mark.skipif(not native.available(), reason="recjax.native kernel unavailable")
def test_train_step_with_native_kernel_adds_the_analytic_loss():
  """The trainer's step with the C++ loss: XLA names the custom call and misses its work; adding
  the analytic count brings it back to the all-XLA step's count. 1024 negatives make the loss ≈ 23%
  of the step, so leaving it out cannot pass."""
  neg = 1024
  model, batch = MODELS["sasrec"][0](), _batch()
  params = init_params(model, jax.random.key(0), batch)
  tx = optax.adam(1e-3)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  catalogue = np.arange(1, V)
  steps = {}
  for impl in ("xla", "native"):
    cfg = ml_collections.ConfigDict({"kind": "sampled_softmax", "num_negatives": neg, "temperature": 0.05,
                                     "chunk": B * L, "impl": impl})
    steps[impl] = (make_train_step(model, tx, cfg, catalogue, jax.random.key(2)), cfg)
  all_xla = flops.train_step_flops(steps["xla"][0], state, batch)
  # Loops: threefry's 5-round key split, no matmul in it.
  assert all_xla.xla.exact and all(not lp.has_matmul for lp in all_xla.xla.loops)
  assert flops.native_loss_extra(steps["xla"][1], D) is None

  # What the trainer would call: the extra term found from the loss config, cached per batch shape.
  counter = flops.FlopsByShape(steps["native"][0], extra=flops.native_loss_extra(steps["native"][1], D))
  counted = counter(state, batch)
  assert counter(state, batch) is counted
  assert flops.NATIVE_SAMPLED_SOFTMAX_TARGET in counted.xla.custom_calls and not counted.xla.exact
  xla_view = flops.StepFlops(counted.xla, counted.examples)
  assert xla_view.total < 0.85 * all_xla.total
  fixed = xla_view.plus("native_sampled_softmax", flops.sampled_softmax_flops(B * L, neg, D, backward=True))
  assert counted.total == fixed.total == pytest.approx(all_xla.total, rel=0.03)
  assert fixed.summary()["extra_flops"] == {"native_sampled_softmax": 3 * 2.0 * B * L * (neg + 1) * D}
  with pytest.raises(ValueError, match="already has an extra term"):
    fixed.plus("native_sampled_softmax", 1.0)
