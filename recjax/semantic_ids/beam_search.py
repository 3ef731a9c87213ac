"""Batched, jitted beam search over SID tokens, constrained by the catalogue's prefix trie, so
every returned beam is a real catalogue SID (a trie leaf) and no two beams are the same.

The scorer is generic (a TIGER decoder plugs in through `models.tiger.BeamScorer` and
`model_beam_search`):

  step_fn(state, tokens_BWL, level) -> (logits_BWK, state)
  step_fn(state, tokens_BWL, level, context) -> (logits_BWK, state)      (when a context is given)

`tokens_BWL` holds each beam's prefix (entries at levels >= `level` are 0); `state` is any pytree
whose leaves have leading axes [B, W] (e.g. a KV cache); the search reorders it along W when beams
are re-ranked. `context` is an optional pytree with leaves [B, ...] that every beam of a query
shares (e.g. an encoder's output): it is passed through as it is, never tiled to [B, W, ...] or
reordered, so a scorer can do its per-query work once instead of once per beam. A path's score is Σ_l log_softmax(logits_l)[code_l], the model's log-probability of
the SID; codes with no catalogue item below are masked to -inf before the top-W selection.

`exclude_leaves` [B, X] (optional; -1 pads) names trie leaves a query must not get back, e.g. the
items of its history window (our default retrieval protocol): at the last level their codes are
masked like codes with no catalogue item, so the W beams are the best W of the remaining leaves.

At level 0 only beam 0 is live (the others start at -inf), so the W beams never duplicate a
prefix; when fewer than W catalogue paths exist, the surplus beams come back with group -1.
`beam_search_reference` scores every catalogue SID exhaustively; with W >= the widest trie level
nothing is pruned and the two agree exactly (the tests check it).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

StepFn = Callable[[Any, jax.Array, int], tuple[jax.Array, Any]]


@dataclasses.dataclass(frozen=True)
class Beams:
  groups_BW: jax.Array     # int32 [B, W] trie leaf (collision group) per beam, -1 = no path; best first
  tokens_BWL: jax.Array    # int32 [B, W, L] the decoded SIDs
  scores_BW: jax.Array     # float32 [B, W] log-probabilities (-inf for empty beams)


jax.tree_util.register_dataclass(Beams, data_fields=["groups_BW", "tokens_BWL", "scores_BW"], meta_fields=[])


def _tile_beams(state, w: int):
  return jax.tree.map(lambda a: jnp.repeat(jnp.asarray(a)[:, None], w, axis=1), state)


def _gather_beams(state, parent_BW):
  return jax.tree.map(lambda a: jax.vmap(lambda a_b, p_b: a_b[p_b])(a, parent_BW), state)


def _batch_size(state, context, who: str) -> int:
  leaves = jax.tree.leaves(context) + jax.tree.leaves(state)
  if not leaves:
    raise ValueError(f"{who}: state or context needs at least one [B, ...] array to fix B")
  return leaves[0].shape[0]


def _step(step_fn, state, tokens, level, context):
  return step_fn(state, tokens, level) if context is None else step_fn(state, tokens, level, context)


def _check_logits(logits, b, w, k, level):
  if logits.shape != (b, w, k):
    raise ValueError(f"step_fn at level {level} returned logits {logits.shape}, expected [B, W, K] = {(b, w, k)}")


def _excluded(child_BWK, exclude_BX):
  """bool [B, W, K]: the child is a leaf the query excludes (padding -1 never matches a leaf)."""
  return jnp.any((child_BWK[..., None] == exclude_BX[:, None, None, :]) & (exclude_BX[:, None, None, :] >= 0), -1)


@functools.partial(jax.jit, static_argnames=("step_fn", "beam_size"))
def constrained_beam_search(step_fn: StepFn, next_node: tuple[jax.Array, ...], state, beam_size: int,
                            context=None, exclude_leaves=None) -> Beams:
  """Top-`beam_size` catalogue SIDs per query.

  Args:
    step_fn: the scorer (module docstring); must be hashable (a function, not a fresh lambda per
      call, or jit recompiles).
    next_node: `SIDTrie.device_arrays()`, L tables int32 [nodes_l, K].
    state: pytree with leaves [B, ...] (one per query); tiled to [B, W, ...] here.
    beam_size: W.
    context: None, or a pytree with leaves [B, ...] passed to every step as it is (module docstring).
    exclude_leaves: None, or int32 [B, X] leaves never returned to that query (-1 = padding).
  """
  b = _batch_size(state, context, "constrained_beam_search")
  w, num_levels, k = beam_size, len(next_node), next_node[0].shape[1]
  state = _tile_beams(state, w)
  tokens = jnp.zeros((b, w, num_levels), jnp.int32)
  node = jnp.zeros((b, w), jnp.int32)
  score = jnp.tile(jnp.where(jnp.arange(w) == 0, 0.0, -jnp.inf)[None], (b, 1))
  for level in range(num_levels):
    logits, state = _step(step_fn, state, tokens, level, context)
    _check_logits(logits, b, w, k, level)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    child = next_node[level][node]                                    # [B, W, K]
    ok = (child >= 0) & jnp.isfinite(score)[..., None]
    if exclude_leaves is not None and level == num_levels - 1:   # the last level's children are leaves
      ok = ok & ~_excluded(child, jnp.asarray(exclude_leaves, jnp.int32))
    cand = jnp.where(ok, score[..., None] + logp, -jnp.inf).reshape(b, w * k)
    score, flat = jax.lax.top_k(cand, w)
    parent, code = flat // k, (flat % k).astype(jnp.int32)
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, level].set(code)
    node = jnp.take_along_axis(child.reshape(b, w * k), flat, axis=1)
    state = _gather_beams(state, parent)
  live = jnp.isfinite(score)
  return Beams(jnp.where(live, node, -1), jnp.where(live[..., None], tokens, 0), score)


@functools.partial(jax.jit, static_argnames=("make_step_fn", "beam_size"))
def model_beam_search(make_step_fn: Callable[[Any], StepFn], params, next_node: tuple[jax.Array, ...], state,
                      beam_size: int, context=None, exclude_leaves=None) -> Beams:
  """`constrained_beam_search` for a scorer with weights: `make_step_fn(params)` builds the step_fn
  inside this trace, so the weights are an argument, not constants baked into the program, and a
  search after every training step reuses one compilation. `make_step_fn` must hash by value
  (e.g. `models.tiger.BeamScorer(model)`, a frozen dataclass holding the flax module).
  """
  # The unjitted body: this is already one trace, and each fresh step_fn closure would otherwise
  # add an entry (holding the traced weights) to the inner jit's cache.
  return constrained_beam_search.__wrapped__(make_step_fn(params), next_node, state, beam_size, context,
                                            exclude_leaves)


def beam_search_reference(step_fn: StepFn, sids_GL, state, top: int, context=None, exclude_leaves=None) -> Beams:
  """Exhaustive search: score every catalogue SID (all G leaves as beams), keep the best `top`;
  excluded leaves score -inf and come back, if at all, as group -1 at the end.

  Same scoring as `constrained_beam_search`; G x the work, so for tests and small catalogues.
  """
  sids = jnp.asarray(np.asarray(sids_GL), jnp.int32)
  g, num_levels = sids.shape
  b = _batch_size(state, context, "beam_search_reference")
  state = _tile_beams(state, g)
  paths = jnp.broadcast_to(sids[None], (b, g, num_levels))
  total = jnp.zeros((b, g), jnp.float32)
  for level in range(num_levels):
    prefix = jnp.where(jnp.arange(num_levels) < level, paths, 0)
    logits, state = _step(step_fn, state, prefix, level, context)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    total = total + jnp.take_along_axis(logp, paths[:, :, level:level + 1], axis=2)[..., 0]
  if exclude_leaves is not None:
    total = jnp.where(_excluded(jnp.arange(g)[None, None, :], jnp.asarray(exclude_leaves, jnp.int32))[:, 0],
                      -jnp.inf, total)
  top = min(top, g)
  scores, idx = jax.lax.top_k(total, top)
  live = jnp.isfinite(scores)
  return Beams(jnp.where(live, idx, -1).astype(jnp.int32),
               jnp.where(live[..., None], jnp.take_along_axis(paths, idx[..., None], axis=1), 0), scores)
