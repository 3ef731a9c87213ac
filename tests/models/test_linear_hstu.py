"""Linear HSTU: the chunked scan against a token-by-token loop, decode against the full pass,
padding isolation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.models.linear_hstu import LinearHSTU, init_state, linear_attention


def _loop_reference(q, k, v, valid, state, kind):
  """The definition, one token at a time in numpy: S += valid·k vᵀ (or k ⊙ v); o = q·S (or q ⊙ S)."""
  q, k, v, valid, s = map(np.asarray, (q, k, v, valid, state))
  s = s.astype(np.float64).copy()
  out = np.zeros(q.shape[:3] + (v.shape[-1],))
  for t in range(q.shape[1]):
    kt = k[:, t] * valid[:, t, None, None]
    if kind == "outer":
      s += kt[..., :, None] * v[:, t, :, None, :]
      out[:, t] = np.einsum("bhk,bhke->bhe", q[:, t], s)
    else:
      s += kt * v[:, t]
      out[:, t] = q[:, t] * s
  return out, s


@pytest.mark.parametrize("kind,chunk,L", [("outer", 4, 19), ("outer", 64, 19), ("outer", 1, 7),
                                          ("diagonal", 8, 19)])
def test_scan_equals_token_loop(kind, chunk, L):
  B, H, D = 3, 2, 5
  ks = jax.random.split(jax.random.key(L * 10 + chunk), 5)
  q, k, v = (jax.nn.silu(jax.random.normal(kk, (B, L, H, D))) for kk in ks[:3])
  valid = jax.random.bernoulli(ks[3], 0.7, (B, L))      # holes anywhere, not only right padding
  state = init_state(kind, B, H, D, D) + jax.random.normal(ks[4], init_state(kind, B, H, D, D).shape)
  out, final = jax.jit(lambda *a: linear_attention(*a, kind=kind, chunk=chunk))(q, k, v, valid, state)
  ref_out, ref_final = _loop_reference(q, k, v, valid, state, kind)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(final, ref_final, rtol=1e-5, atol=1e-5)


def test_padding_does_not_touch_real_tokens():
  B, L, H, D = 2, 13, 1, 4
  ks = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(kk, (B, L, H, D)) for kk in ks[:3])
  valid = jnp.broadcast_to(jnp.arange(L)[None, :] % 3 != 1, (B, L))   # every third token is padding
  noise = jax.random.normal(ks[3], (B, L, H, D)) * (~valid)[..., None, None] * 100.0
  state = init_state("outer", B, H, D, D)
  out_a, s_a = linear_attention(q, k, v, valid, state, chunk=4)
  out_b, s_b = linear_attention(q + noise, k + noise, v + noise, valid, state, chunk=4)
  np.testing.assert_allclose(jnp.where(valid[..., None, None], out_a, 0),
                             jnp.where(valid[..., None, None], out_b, 0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s_a, s_b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["outer", "diagonal"])
def test_decode_token_by_token_equals_full_pass(kind):
  B, L, V = 3, 11, 40
  model = LinearHSTU(num_items=V, dim=16, num_blocks=2, num_heads=2, dqk=8, dv=8, max_len=L,
                     dropout=0.0, state_kind=kind, chunk=4)
  lengths = jnp.array([11, 6, 1])
  ids = jax.random.randint(jax.random.key(1), (B, L), 1, V) * (jnp.arange(L)[None] < lengths[:, None])
  params = jax.jit(lambda k, b: model.init(k, b)["params"])(jax.random.key(2), {"ids": ids, "lengths": lengths})
  full, final_states = jax.jit(lambda p, i, n: model.apply({"params": p}, i, n, method=LinearHSTU.encode))(
      params, ids, lengths)
  states = model.apply({"params": params}, B, method=LinearHSTU.initial_states)
  step = jax.jit(lambda i, p, s: model.apply({"params": params}, i, p, s, method=LinearHSTU.decode))
  for t in range(L):
    x_t, states = step(ids[:, t], jnp.full((B,), t), states)
    real = np.asarray(t < lengths)
    np.testing.assert_allclose(np.asarray(x_t)[real], np.asarray(full[:, t])[real], rtol=1e-4, atol=1e-5,
                               err_msg=f"t={t}")
  for got, want in zip(states, final_states):   # padding steps left the states alone
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(final_states[0]).max()) > 0


def test_model_padding_ids_do_not_change_real_outputs():
  B, L, V = 2, 9, 30
  model = LinearHSTU(num_items=V, dim=8, num_blocks=1, num_heads=1, dqk=4, dv=4, max_len=L, dropout=0.0)
  lengths = jnp.array([9, 4])
  ids = jax.random.randint(jax.random.key(3), (B, L), 1, V)
  params = jax.jit(lambda k, b: model.init(k, b)["params"])(jax.random.key(4), {"ids": ids, "lengths": lengths})
  run = jax.jit(lambda p, i: model.apply({"params": p}, {"ids": i, "lengths": lengths})[0])
  out_a = run(params, ids)
  out_b = run(params, ids.at[1, 4:].set(7))                   # past the length: must be ignored
  np.testing.assert_allclose(out_a[0], out_b[0], rtol=1e-6)
  np.testing.assert_allclose(out_a[1, :4], out_b[1, :4], rtol=1e-6)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="dqk == dv"):
    init_state("diagonal", 1, 1, 4, 8)
  with pytest.raises(ValueError, match="state kind"):
    init_state("lowrank", 1, 1, 4, 4)
  with pytest.raises(ValueError, match="chunk"):
    linear_attention(*(jnp.zeros((1, 3, 1, 2)),) * 3, jnp.ones((1, 3), bool), jnp.zeros((1, 1, 2, 2)), chunk=0)


def test_registered_for_configs():
  from recjax.models import build_model   # pylint: disable=import-outside-toplevel
  model = build_model({"name": "linear_hstu", "dim": 8, "state_kind": "diagonal", "dqk": 4, "dv": 4}, 20)
  assert isinstance(model, LinearHSTU) and model.state_kind == "diagonal"
