"""Causal attention on the XLA path that skips the tiles a causal, right-padded batch never sees.

A dense causal attention over a padded batch computes every (query, key) pair of every row: at the
ML-1M configuration (128 rows of width 200, 54% of positions real) fewer than a quarter of those
pairs are visible. This path sorts the rows by length (longest first), cuts them into groups of
`rows` sequences and the queries into `q_tiles` tiles, and for query tile i of a group computes
only keys [0, end of tile i) (the causal prefix) and only if the group's longest row reaches tile
i (`lax.cond`, which XLA:CPU executes as a real branch). At the ML-1M shape, groups of 32 and
4 tiles compute ≈ 39% of the dense pairs, and the gradients go through the same branches.

Up to `max_unrolled_groups` groups are unrolled; past that, one `lax.scan` over groups holds the
q_tiles branches, so the program stays the same size at any batch (numbers in `CausalTiling`).
`resolve_tiling("auto")`, the models' default, turns the path on for the CPU backend only.

    out[n, i] = sum_{j <= i, j < len_n} w(n, i, j) v[n, j],  w as in `attention` (pointwise or
    softmax; the softmax of a causal row only involves keys of its own prefix, so it is exact
    inside a tile row).

The result equals the dense path's exactly up to float summation order, including attention-weight
dropout: the mask element of (row n, query i, key j) is the same counter hash of the 64-bit index
(n * Lq + i) * Lk + j in both paths (tests/test_attention_xla.py).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from recjax import counter_rng
from recjax.layers.relative_bias import RelativeBias, position_bias, time_buckets


@dataclasses.dataclass(frozen=True)
class CausalTiling:
  """How the tiled path cuts a batch: `rows` sequences per group, `q_tiles` query tiles per row.

  The defaults were the fastest of (rows, q_tiles) in {(16, 4), (32, 4), (64, 4), (32, 5), (32, 8),
  (16, 8)} for HSTU's attention forward + backward at the ML-1M shape (128 x 200, real lengths) on a
  2-core Zen 3: 61 ms against 68-88 ms for the others and 104 ms dense.

  Each (group, tile) is one `lax.cond` branch. Up to `max_unrolled_groups` groups are unrolled
  (q_tiles branches each); more groups run as one rolled loop whose body holds q_tiles branches, so
  the compiled program stays the same size at any batch (eval batch 512 with 2 heads: 32 groups).
  Measured by scripts/bench_tiling.py (CPU time, shared 2-core box): the loop costs ≈ 4% at the
  ML-1M training shape (4 groups: 273 -> 285 ms), nothing measurable at 8 (HSTU-large training:
  1274 vs 1270 ms, compile 73 -> 26 s) or 32 (HSTU-large eval at batch 512: 1539 vs 1525 ms,
  compile 96 -> 7 s). Hence 4: ML-1M training keeps the unrolled form, larger batches roll.
  """
  rows: int = 32
  q_tiles: int = 4
  max_unrolled_groups: int = 4

  def __post_init__(self):
    if self.rows < 1 or self.q_tiles < 1 or self.max_unrolled_groups < 1:
      raise ValueError(f"CausalTiling needs rows, q_tiles and max_unrolled_groups >= 1, got {self}")


TILING_SETTINGS = ("auto", "on", "off", True, False)


_ON_WORDS = frozenset({"on", "true", "1", "yes"})
_OFF_WORDS = frozenset({"off", "false", "0", "no"})


def resolve_tiling(setting) -> CausalTiling | None:
  """A model's `attention_tiling` ("auto" | "on" | "off" | True | False, or a CausalTiling / None) -> tiling or None.

  "auto" tiles on the CPU backend only. The tiles exist because XLA:CPU executes `lax.cond` as a
  real branch and runs one core's worth of work at a time; on an accelerator the dense scores are
  cheap, each branch is a kernel launch and a host sync, and the global sort by length would pull a
  data-parallel batch onto one device.
  """
  if setting is None or isinstance(setting, CausalTiling):
    return setting
  if isinstance(setting, str):
    # Configs hold a string ("auto" is the default), so a command-line override arrives as text:
    # --config.model.attention_tiling=off (or on / true / false).
    word = setting.strip().lower()
    if word == "auto":
      return CausalTiling() if jax.default_backend() == "cpu" else None
    if word in _ON_WORDS | _OFF_WORDS:
      setting = word in _ON_WORDS
  if isinstance(setting, bool):
    return CausalTiling() if setting else None
  raise ValueError(f"attention_tiling must be one of {TILING_SETTINGS}, got {setting!r}")


@jax.custom_vjp
def _permute_rows(x, perm, inv_perm):
  """x[perm] whose gradient is a gather by the inverse permutation (not XLA:CPU's scatter-add)."""
  return x[perm]


def _permute_fwd(x, perm, inv_perm):
  return x[perm], (perm, inv_perm)


def _permute_bwd(res, g):
  perm, inv_perm = res
  return g[inv_perm], None, None


_permute_rows.defvjp(_permute_fwd, _permute_bwd)


def tiles_run(lengths_N: jax.Array, length: int, tiling: CausalTiling) -> jax.Array:
  """[G, q_tiles] bool: which (row group, query tile) the tiled path computes for these lengths.

  Rows are sorted longest first and cut into groups of `tiling.rows`; tile i of a group runs iff
  the group's longest row reaches it (some query of the tile is a real token). Every other tile is
  all padding or causally hidden, and its output and gradients are zero.
  """
  r, t, _, n_pad = _layout(lengths_N.shape[0], length, tiling)
  _, lens = _sort_lengths(lengths_N, n_pad)
  return _runs(lens, r, t, tiling.q_tiles)


def _layout(n: int, l: int, tiling: CausalTiling) -> tuple[int, int, int, int]:
  """(rows per group r, queries per tile t, padded width, padded row count)."""
  t = -(-l // tiling.q_tiles)
  r = min(tiling.rows, n)
  return r, t, t * tiling.q_tiles, -(-n // r) * r


def _sort_lengths(lengths_N, n_pad):
  """(the stable longest-first permutation [N], sorted lengths padded with zeros [n_pad])."""
  lengths_N = lengths_N.astype(jnp.int32)
  perm = jnp.argsort(-lengths_N, stable=True)
  return perm, jnp.pad(lengths_N[perm], (0, n_pad - lengths_N.shape[0]))


def _runs(lens, r, t, m):
  # Rows are sorted, so a group's first row is its longest: no row reaches tile i otherwise.
  return lens.reshape(-1, r)[:, :1] > (jnp.arange(m, dtype=jnp.int32) * t)[None, :]


def causal_tiled_attention(q_NLD: jax.Array, k_NLD: jax.Array, v_NLD: jax.Array, lengths_N: jax.Array, *,
                           kind: str, act, alpha: float, scale: float, bias: RelativeBias | None,
                           batch_of_row: jax.Array, dropout_rate: float = 0.0,
                           dropout_seed: jax.Array | None = None,
                           tiling: CausalTiling = CausalTiling()) -> jax.Array:
  """Causal self-attention over head-folded rows -> [N, L, Dv].

  Args:
    q_NLD, k_NLD, v_NLD: [N, L, D] rows (batch and heads folded together), right-padded.
    lengths_N: [N] valid tokens per row.
    kind: "pointwise" or "softmax"; act: the pointwise activation.
    alpha, scale: as in `attention`.
    bias: relative bias shared by the heads of a batch element, or None.
    batch_of_row: [N] int, the batch element of each row (selects its timestamps).
    dropout_rate, dropout_seed: attention-weight dropout with a counter-hash mask, or 0 / None.
    tiling: group and tile sizes.
  """
  n, l, _ = q_NLD.shape
  if n * l >= 2 ** 32:
    raise ValueError(f"causal_tiled_attention: {n} rows x {l} queries must stay below 2^32 (dropout rows)")
  r, t, lp, n_pad = _layout(n, l, tiling)
  perm, lens = _sort_lengths(lengths_N, n_pad)
  inv_perm = jnp.argsort(perm)

  def sort_pad(x):   # rows in length order, padded to whole groups and whole tiles
    x = _permute_rows(x, perm, inv_perm)
    return jnp.pad(x, ((0, n_pad - n), (0, lp - l)) + ((0, 0),) * (x.ndim - 2))

  orig_row = jnp.pad(perm.astype(jnp.uint32), (0, n_pad - n))
  pos_LL = ts_w = qtimes = ktimes = None
  if bias is not None and bias.pos_weights is not None:
    pos_LL = position_bias(bias.pos_weights, lp, lp)
  if bias is not None and bias.ts_weights is not None:
    ts_w = bias.ts_weights
    b_sorted = batch_of_row[perm]
    qtimes = jnp.pad(bias.query_times[b_sorted], ((0, n_pad - n), (0, lp - l)))
    ktimes = jnp.pad(bias.key_times[b_sorted], ((0, n_pad - n), (0, lp - l)))
  if dropout_rate <= 0.0:
    dropout_seed = None
  groups = n_pad // r
  static = _Static(kind, act, float(alpha), float(scale), float(dropout_rate), r, t, tiling.q_tiles, l,
                   groups if groups <= tiling.max_unrolled_groups else 1)
  group_aux = (lens, qtimes, ktimes, orig_row, _runs(lens, r, t, tiling.q_tiles), jnp.arange(groups))
  out = _tiled_core(static, sort_pad(q_NLD), sort_pad(k_NLD), sort_pad(v_NLD), pos_LL, ts_w,
                    (jax.tree.map(lambda x: x.reshape((groups, r) + x.shape[1:]), group_aux[:4])
                     + group_aux[4:], dropout_seed))
  return _permute_rows(out[:n, :l], inv_perm, perm)


@dataclasses.dataclass(frozen=True)
class _Static:
  kind: str
  act: object
  alpha: float
  scale: float
  dropout_rate: float
  rows: int        # r: rows per group
  tile: int        # t: queries per tile
  q_tiles: int     # m
  length: int      # l: the unpadded width (fixes the dropout element index)
  unroll: int      # groups per rolled-loop iteration (all of them, or 1)


# Test-only: when set, every tile that runs calls it as hook(pass, group, tile), pass "fwd" or "bwd".
_tile_hook = None


def _tile_weights(st: _Static, q0: int, kend: int, q_t, k_t, pos_t, ts_w, len_t, qt_t, kt_t, orig_t, seed):
  """Scores of one tile -> (s [r, t, kend] pre-activation, visible mask, dropout keep-scale or None)."""
  s = jnp.einsum("nqd,nkd->nqk", q_t, k_t, preferred_element_type=jnp.float32) * st.alpha
  if pos_t is not None:
    s = s + pos_t[None]
  buckets = None
  if ts_w is not None:
    buckets = time_buckets(qt_t, kt_t, ts_w.shape[0])
    s = s + ts_w[buckets]
  qi = q0 + jnp.arange(st.tile, dtype=jnp.int32)[None, :, None]
  kj = jnp.arange(kend, dtype=jnp.int32)[None, None, :]
  ln = len_t[:, None, None]
  visible = (kj <= qi) & (qi < ln) & (kj < ln)
  keep_scale = None
  if seed is not None:
    # The dense path's element (row * L + i) * L + j (64-bit), so both paths drop the same pairs.
    row = orig_t[:, None, None] * jnp.uint32(st.length) + qi.astype(jnp.uint32)
    keep = counter_rng.keep_at_rows(seed, row, st.length, kj, st.dropout_rate)
    keep_scale = jnp.where(keep, 1.0 / (1.0 - st.dropout_rate), 0.0)
  return s, visible, buckets, keep_scale


def masked_softmax(s, visible):
  """softmax over the last axis of the visible entries; masked entries and fully masked rows are 0."""
  s = jnp.where(visible, s, -jnp.inf)
  m = jnp.max(s, axis=-1, keepdims=True)
  e = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))   # fully masked rows give 0, not NaN
  return e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), 1e-30)


def _tile_operands(st: _Static, i: int, group, pos_LL, ts_w, seed):
  """Operands of query tile i of one group: queries [q0, q0 + t), keys [0, q0 + t) (the causal prefix)."""
  q, k, v, lens, qtimes, ktimes, orig_row = group
  q0, kend = i * st.tile, (i + 1) * st.tile
  return (q[:, q0:kend], k[:, :kend], v[:, :kend],
          None if pos_LL is None else pos_LL[q0:kend, :kend], ts_w, lens,
          None if qtimes is None else qtimes[:, q0:kend],
          None if ktimes is None else ktimes[:, :kend], orig_row, seed)


def _groups_scan(st: _Static, body, carry, q, k, v, aux, *more):
  """lax.scan of body(carry, i_group, group, *more_g) over the row groups (unrolled up to st.unroll)."""
  (lens, qtimes, ktimes, orig_row, runs, group_ids), _ = aux
  split = lambda x: None if x is None else x.reshape((-1, st.rows) + x.shape[1:])

  def step(c, xs):
    (q_g, k_g, v_g, lens_g, qt_g, kt_g, orig_g, runs_g, g), more_g = xs
    return body(c, g, runs_g, (q_g, k_g, v_g, lens_g, qt_g, kt_g, orig_g), *more_g)

  xs = ((split(q), split(k), split(v), lens, qtimes, ktimes, orig_row, runs, group_ids), tuple(map(split, more)))
  return jax.lax.scan(step, carry, xs, unroll=st.unroll)


def _forward(st: _Static, q, k, v, pos_LL, ts_w, aux):
  seed = aux[1]
  dv = v.shape[-1]

  def group_body(carry, g, runs_g, group):
    tiles = []
    for i in range(st.q_tiles):
      q0, kend = i * st.tile, (i + 1) * st.tile

      def compute(q_t, k_t, v_t, pos_t, ts_w_, len_t, qt_t, kt_t, orig_t, seed, q0=q0, kend=kend, i=i):
        if _tile_hook is not None:
          jax.debug.callback(_tile_hook, "fwd", g, i)
        s, visible, _, keep = _tile_weights(st, q0, kend, q_t, k_t, pos_t, ts_w_, len_t, qt_t, kt_t, orig_t, seed)
        if st.kind == "pointwise":
          w = jnp.where(visible, st.act(s) * st.scale, 0.0)
        else:
          w = masked_softmax(s, visible) * st.scale
        if keep is not None:
          w = w * keep
        return jnp.einsum("nqk,nkd->nqd", w.astype(v_t.dtype), v_t)

      skip = lambda *_: jnp.zeros((st.rows, st.tile, dv), v.dtype)
      tiles.append(jax.lax.cond(runs_g[i], compute, skip, *_tile_operands(st, i, group, pos_LL, ts_w, seed)))
    return carry, jnp.concatenate(tiles, axis=1)

  _, out = _groups_scan(st, group_body, None, q, k, v, aux)
  return out.reshape((-1,) + out.shape[2:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tiled_core(st, q, k, v, pos_LL, ts_w, aux):
  return _forward(st, q, k, v, pos_LL, ts_w, aux)


def _tiled_core_fwd(st, q, k, v, pos_LL, ts_w, aux):
  # Nothing of size [r, t, kend] is kept: the backward recomputes each tile's scores (one matmul).
  return _forward(st, q, k, v, pos_LL, ts_w, aux), (q, k, v, pos_LL, ts_w, aux)


def _tiled_core_bwd(st, res, d_out):
  q, k, v, pos_LL, ts_w, aux = res
  seed = aux[1]

  def group_body(carry, g, runs_g, group, do_g):
    d_pos, d_ts = carry
    q_g, k_g, v_g = group[:3]
    dq_tiles = []
    dk_g, dv_g = jnp.zeros_like(k_g), jnp.zeros_like(v_g)
    for i in range(st.q_tiles):
      q0, kend = i * st.tile, (i + 1) * st.tile

      def backward(q_t, k_t, v_t, pos_t, ts_w_, len_t, qt_t, kt_t, orig_t, seed, do_t, q0=q0, kend=kend, i=i):
        if _tile_hook is not None:
          jax.debug.callback(_tile_hook, "bwd", g, i)
        s, visible, buckets, keep = _tile_weights(st, q0, kend, q_t, k_t, pos_t, ts_w_, len_t, qt_t, kt_t,
                                                  orig_t, seed)
        if st.kind == "pointwise":
          a, act_vjp = jax.vjp(st.act, s)
          w = jnp.where(visible, a * st.scale, 0.0)
        else:
          p = masked_softmax(s, visible)
          w = p * st.scale
        if keep is not None:
          w = w * keep
        dw = jnp.einsum("nqd,nkd->nqk", do_t, v_t)               # [r, t, kend]
        dv_t = jnp.einsum("nqk,nqd->nkd", w, do_t)
        if keep is not None:
          dw = dw * keep
        if st.kind == "pointwise":
          ds = jnp.where(visible, act_vjp(dw * st.scale)[0], 0.0)
        else:
          dp = dw * st.scale
          ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))
        dq_t = jnp.einsum("nqk,nkd->nqd", ds, k_t) * st.alpha
        dk_t = jnp.einsum("nqk,nqd->nkd", ds, q_t) * st.alpha
        # Bias gradients: sum over rows as a [1, r] x [r, t*kend] matmul (XLA:CPU's reduce over the
        # leading axis is far slower), and the time buckets' as a scatter-add of the scores' gradient.
        dpos_t = None if pos_t is None else (
            jnp.ones((1, ds.shape[0]), ds.dtype) @ ds.reshape(ds.shape[0], -1)).reshape(ds.shape[1:])
        dts_t = None if ts_w_ is None else jnp.zeros_like(ts_w_).at[buckets.reshape(-1)].add(ds.reshape(-1))
        return dq_t, dk_t, dv_t, dpos_t, dts_t

      def skip(q_t, k_t, v_t, pos_t, ts_w_, *_):
        return (jnp.zeros_like(q_t), jnp.zeros_like(k_t), jnp.zeros_like(v_t),
                None if pos_t is None else jnp.zeros_like(pos_t), None if ts_w_ is None else jnp.zeros_like(ts_w_))

      operands = _tile_operands(st, i, group, pos_LL, ts_w, seed) + (do_g[:, q0:kend],)
      dq_t, dk_t, dv_t, dpos_t, dts_t = jax.lax.cond(runs_g[i], backward, skip, *operands)
      dq_tiles.append(dq_t)
      dk_g = dk_g.at[:, :kend].add(dk_t)
      dv_g = dv_g.at[:, :kend].add(dv_t)
      if d_pos is not None:
        d_pos = d_pos.at[q0:kend, :kend].add(dpos_t)
      if d_ts is not None:
        d_ts = d_ts + dts_t
    return (d_pos, d_ts), (jnp.concatenate(dq_tiles, axis=1), dk_g, dv_g)

  init = (None if pos_LL is None else jnp.zeros_like(pos_LL), None if ts_w is None else jnp.zeros_like(ts_w))
  (d_pos, d_ts), grads = _groups_scan(st, group_body, init, q, k, v, aux, d_out)
  dq, dk, dv = (x.reshape((-1,) + x.shape[2:]) for x in grads)
  d_aux = jax.tree.map(lambda _: None, aux)
  return dq, dk, dv, d_pos, d_ts, d_aux


_tiled_core.defvjp(_tiled_core_fwd, _tiled_core_bwd)
