"""Token packing: the layout against a brute-force listing, pack/unpack and their gradients against
plain indexing (whose gradient is XLA's scatter-add), the overflow error, and dropout masks that
agree with the padded layout's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.layers import packing
from recjax.layers.dropout import hash_dropout

L = 7


def _brute_force_layout(lengths, l, capacity):
  """Slots listed by a Python loop over rows and positions."""
  slots = [b * l + i for b, n in enumerate(lengths) for i in range(n)]
  token_slot = np.full(capacity, len(lengths) * l, np.int32)
  token_slot[:len(slots)] = slots
  slot_token = np.full((len(lengths), l), capacity, np.int32)
  for t, s in enumerate(slots):
    slot_token[s // l, s % l] = t
  return token_slot, slot_token


@pytest.mark.parametrize("lengths, capacity", [
    ([3, 0, 7, 1, 0, 5], 16),     # zero-length rows (also the first), full row, bucket padding
    ([3, 0, 7, 1, 0, 5], 32),     # more bucket padding than tokens
    ([0, 7, 7, 2], 16),           # capacity == number of tokens
    ([0, 0, 0], 4),               # no tokens at all
])
def test_layout_matches_brute_force(lengths, capacity):
  layout = jax.jit(packing.token_layout, static_argnums=(1, 2))(jnp.asarray(lengths, jnp.int32), L, capacity)
  token_slot, slot_token = _brute_force_layout(lengths, L, capacity)
  np.testing.assert_array_equal(layout.token_slot_T, token_slot)
  np.testing.assert_array_equal(layout.slot_token_BL, slot_token)


def _case(lengths=(3, 0, 7, 1, 0, 5), capacity=20, f=4, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(len(lengths), L, f)), jnp.float32)
  return x, jnp.asarray(lengths, jnp.int32), packing.token_layout(jnp.asarray(lengths, jnp.int32), L, capacity)


def test_pack_and_unpack_against_indexing():
  x, lengths, layout = _case()
  n = int(lengths.sum())
  packed = packing.pack(x, layout)
  np.testing.assert_array_equal(packed[:n], packing.pack_reference(x, lengths))
  np.testing.assert_array_equal(packed[n:], 0.0)                  # empty tokens are zeros
  valid = (np.arange(L)[None] < np.asarray(lengths)[:, None])[..., None]
  np.testing.assert_array_equal(packing.unpack(packed, layout), np.where(valid, x, 0.0))


def test_gradients_equal_plain_indexing():
  """The gather-only VJPs equal autodiff of plain indexing (a scatter-add) for random cotangents."""
  x, lengths, layout = _case(f=3, seed=1)
  b = x.shape[0]
  valid_N = np.asarray(layout.slot_token_BL).reshape(-1) < layout.capacity
  token_valid_T = np.asarray(layout.token_slot_T) < b * L

  def naive_pack(x_BLF):
    idx = jnp.minimum(layout.token_slot_T, b * L - 1)
    return x_BLF.reshape(b * L, -1)[idx] * token_valid_T[:, None]

  def naive_unpack(x_TF):
    idx = jnp.minimum(layout.slot_token_BL.reshape(-1), layout.capacity - 1)
    return (x_TF[idx] * valid_N[:, None]).reshape(b, L, -1)

  rng = np.random.default_rng(2)
  g_T = jnp.asarray(rng.normal(size=(layout.capacity, 3)), jnp.float32)
  g_BL = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  (dx_fast,) = jax.vjp(lambda v: packing.pack(v, layout), x)[1](g_T)
  (dx_naive,) = jax.vjp(naive_pack, x)[1](g_T)
  np.testing.assert_array_equal(dx_fast, dx_naive)
  y = packing.pack(x, layout)
  (dy_fast,) = jax.vjp(lambda v: packing.unpack(v, layout), y)[1](g_BL)
  (dy_naive,) = jax.vjp(naive_unpack, y)[1](g_BL)
  np.testing.assert_array_equal(dy_fast, dy_naive)
  assert np.any(np.asarray(dy_fast) != 0) and np.any(np.asarray(dx_fast) != 0)


def test_overflow_raises_when_run():
  f = jax.jit(lambda lengths: packing.token_layout(lengths, L, 8).token_slot_T)
  f(jnp.asarray([3, 5], jnp.int32)).block_until_ready()          # exactly full: fine
  with pytest.raises(Exception, match="9 real tokens .* capacity is 8"):
    f(jnp.asarray([4, 5], jnp.int32)).block_until_ready()


def test_shape_errors():
  x, _, layout = _case()
  with pytest.raises(ValueError, match="does not match the layout's grid"):
    packing.pack(x[:, :5], layout)
  with pytest.raises(ValueError, match="does not match the layout's 20 tokens"):
    packing.unpack(jnp.zeros((19, 4)), layout)
  with pytest.raises(ValueError, match="capacity >= 1"):
    packing.token_layout(jnp.asarray([1]), L, 0)


def test_dropout_mask_agrees_with_padded_layout():
  """Packed dropout with the layout's element counters keeps exactly the padded mask's real entries."""
  x, lengths, layout = _case(f=6, seed=3)
  rng = jax.random.key(9)
  padded = hash_dropout(x, 0.4, rng)
  packed = hash_dropout(packing.pack(x, layout), 0.4, rng, layout.token_slot_T)
  n = int(lengths.sum())
  np.testing.assert_array_equal(packed[:n], packing.pack_reference(padded, lengths))
  # the mask is not trivial: some real entries dropped, most kept
  frac = float(jnp.mean(packed[:n] == 0))
  assert 0.2 < frac < 0.6
