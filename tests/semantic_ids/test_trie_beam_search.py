"""Prefix trie against brute-force prefix sets; constrained beam search against exhaustive search
and as a property over random tries (only catalogue SIDs, no duplicates)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.semantic_ids import beam_search, collisions
from recjax.semantic_ids.trie import build_trie


def test_trie_matches_brute_force_prefix_sets():
  rng = np.random.default_rng(0)
  k = 4
  codes = rng.integers(0, k, (30, 3))
  ids = rng.permutation(1000)[:30] + 1
  trie = build_trie(codes, k, ids)
  for l in range(3):
    parents = sorted({tuple(r[:l]) for r in codes})
    children = sorted({tuple(r[:l + 1]) for r in codes})
    assert trie.next_node[l].shape == (len(parents), k)
    for i, p in enumerate(parents):
      for c in range(k):
        want = children.index(p + (c,)) if p + (c,) in children else -1
        assert trie.next_node[l][i, c] == want
  g = collisions.collision_groups(codes)
  np.testing.assert_array_equal(trie.sids, g.sids)
  np.testing.assert_array_equal(trie.leaf_size, g.group_size)
  for leaf in range(trie.num_leaves):
    np.testing.assert_array_equal(np.sort(trie.items_of(leaf)), np.sort(ids[g.group_of_item == leaf]))
  with pytest.raises(ValueError, match="outside 0..3"):
    build_trie(codes + 1, k)


def linear_scorer(key, num_levels, k, hidden=8):
  """Stateless: logits at level l = (user + Σ_{j<l} E_j[token_j]) @ O_l; the user vector is the state."""
  e = jax.random.normal(key, (num_levels, k, hidden))
  o = jax.random.normal(jax.random.fold_in(key, 1), (num_levels, hidden, k)) * 1.5

  def step_fn(state, tokens_BWL, level):
    h = state["user"]
    for j in range(level):
      h = h + e[j][tokens_BWL[..., j]]
    return h @ o[level], state

  return step_fn


def recurrent_scorer(key, num_levels, k, hidden=8):
  """Stateful: h <- tanh(h A + E_l[previous token]); logits = h O_l. Tests state reordering."""
  a = jax.random.normal(key, (hidden, hidden)) / np.sqrt(hidden)
  e = jax.random.normal(jax.random.fold_in(key, 1), (num_levels + 1, k, hidden))
  o = jax.random.normal(jax.random.fold_in(key, 2), (num_levels, hidden, k)) * 1.5

  def step_fn(state, tokens_BWL, level):
    prev = e[level][tokens_BWL[..., level - 1]] if level else e[num_levels][jnp.zeros_like(tokens_BWL[..., 0])]
    h = jnp.tanh(state["h"] @ a + prev)
    return h @ o[level], {"h": h}

  return step_fn


@pytest.mark.parametrize("make_scorer,state_key", [(linear_scorer, "user"), (recurrent_scorer, "h")])
def test_equals_exhaustive_search_when_nothing_is_pruned(make_scorer, state_key):
  rng = np.random.default_rng(1)
  num_levels, k, b = 3, 5, 4
  codes = rng.integers(0, k, (40, num_levels))
  trie = build_trie(codes, k)
  width = max(max(t.shape[0] for t in trie.next_node), trie.num_leaves)   # widest level: no pruning
  step_fn = make_scorer(jax.random.PRNGKey(0), num_levels, k)
  state = {state_key: jax.random.normal(jax.random.PRNGKey(3), (b, 8))}
  got = beam_search.constrained_beam_search(step_fn, trie.device_arrays(), state, width)
  want = beam_search.beam_search_reference(step_fn, trie.sids, state, width)
  g = trie.num_leaves
  np.testing.assert_array_equal(got.groups_BW[:, :g], want.groups_BW)
  np.testing.assert_allclose(got.scores_BW[:, :g], want.scores_BW, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got.tokens_BWL[:, :g], want.tokens_BWL)
  assert np.all(np.asarray(got.groups_BW[:, g:]) == -1)


# Seeds 0-1 by default, all 8 with -m slow (keeps the default suite under 10 minutes).
@pytest.mark.parametrize("seed", [0, 1] + [pytest.param(s, marks=pytest.mark.slow) for s in range(2, 8)])
def test_property_only_catalogue_sids_and_no_duplicates(seed):
  rng = np.random.default_rng(100 + seed)
  num_levels, k = int(rng.integers(1, 4)), int(rng.integers(2, 7))
  n, b, width = int(rng.integers(1, 30)), int(rng.integers(1, 4)), int(rng.integers(1, 9))
  codes = rng.integers(0, k, (n, num_levels))
  item_ids = rng.permutation(10_000)[:n] + 1
  trie = build_trie(codes, k, item_ids)
  step_fn = (linear_scorer if seed % 2 else recurrent_scorer)(jax.random.PRNGKey(seed), num_levels, k)
  state = {"user" if seed % 2 else "h": jax.random.normal(jax.random.PRNGKey(seed + 7), (b, 8))}
  out = beam_search.constrained_beam_search(step_fn, trie.device_arrays(), state, width)
  groups, tokens, scores = (np.asarray(a) for a in (out.groups_BW, out.tokens_BWL, out.scores_BW))
  exhaustive = beam_search.beam_search_reference(step_fn, trie.sids, state, trie.num_leaves)
  path_score = np.full((b, trie.num_leaves), np.nan)
  np.put_along_axis(path_score, np.asarray(exhaustive.groups_BW), np.asarray(exhaustive.scores_BW), axis=1)
  catalogue = {tuple(r) for r in codes}
  for row in range(b):
    valid = groups[row] >= 0
    assert valid.sum() == min(width, trie.num_leaves)
    assert np.all(valid[:valid.sum()])                                  # live beams first
    live = groups[row][valid]
    assert len(set(live.tolist())) == len(live)                         # duplicate-free
    assert np.all(live < trie.num_leaves)
    for grp, toks in zip(live, tokens[row][valid]):
      assert tuple(toks) in catalogue and tuple(toks) == tuple(trie.sids[grp])
      assert set(trie.items_of(grp)) <= set(item_ids.tolist())
    np.testing.assert_allclose(scores[row][valid], path_score[row, live], rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores[row][valid]) <= 1e-6)
    assert np.all(np.isneginf(scores[row][~valid]))
    # The best beam can never beat the exhaustive optimum.
    assert scores[row, 0] <= np.asarray(exhaustive.scores_BW)[row, 0] + 1e-5


@pytest.mark.parametrize("make_scorer,state_key", [(linear_scorer, "user"), (recurrent_scorer, "h")])
def test_excluded_leaves_never_return_and_the_rest_equal_exhaustive_search(make_scorer, state_key):
  rng = np.random.default_rng(4)
  num_levels, k, b = 3, 4, 5
  trie = build_trie(rng.integers(0, k, (30, num_levels)), k)
  g = trie.num_leaves
  exclude = np.full((b, 6), -1, np.int32)
  for row in range(b):                     # 0..6 leaves per query, -1 padded; row 0 excludes none
    n = row + 1 if row else 0
    exclude[row, :n] = rng.choice(g, n, replace=False)
  width = max(max(t.shape[0] for t in trie.next_node), g)
  step_fn = make_scorer(jax.random.PRNGKey(5), num_levels, k)
  state = {state_key: jax.random.normal(jax.random.PRNGKey(6), (b, 8))}
  got = beam_search.constrained_beam_search(step_fn, trie.device_arrays(), state, width, exclude_leaves=exclude)
  want = beam_search.beam_search_reference(step_fn, trie.sids, state, g, exclude_leaves=exclude)
  plain = beam_search.constrained_beam_search(step_fn, trie.device_arrays(), state, width)
  for row in range(b):
    banned = set(exclude[row][exclude[row] >= 0].tolist())
    live = np.asarray(got.groups_BW[row])[np.asarray(got.groups_BW[row]) >= 0]
    assert not banned & set(live.tolist()) and len(live) == g - len(banned)
    np.testing.assert_array_equal(live, np.asarray(want.groups_BW[row])[:len(live)])
    np.testing.assert_allclose(np.asarray(got.scores_BW[row])[:len(live)], np.asarray(want.scores_BW[row])[:len(live)],
                               rtol=1e-5, atol=1e-5)
    # Removing leaves only drops them from the plain search's list; the order of the rest holds.
    kept = [x for x in np.asarray(plain.groups_BW[row]).tolist() if x >= 0 and x not in banned]
    np.testing.assert_array_equal(live, kept)


def test_rejects_logits_of_the_wrong_width():
  trie = build_trie(np.array([[0, 1], [1, 0]]), 2)

  def bad_step(state, tokens, level):
    return jnp.zeros(tokens.shape[:2] + (3,)), state

  with pytest.raises(ValueError, match="expected \\[B, W, K\\]"):
    beam_search.constrained_beam_search(bad_step, trie.device_arrays(), {"u": jnp.zeros((1, 2))}, 2)


def test_a_shared_context_gives_what_a_tiled_state_gives():
  """The per-query `context` (never tiled or reordered) scores exactly like the same vector held as
  per-beam state; without state or context there is no batch size, and that fails clearly."""
  rng = np.random.default_rng(4)
  num_levels, k, b = 3, 4, 3
  trie = build_trie(rng.integers(0, k, (25, num_levels)), k)
  in_state = linear_scorer(jax.random.PRNGKey(2), num_levels, k)

  def in_context(state, tokens_BWL, level, context):
    assert jax.tree.leaves(state) == [] and context["user"].shape == (b, 8)   # untiled: [B, ...]
    w = tokens_BWL.shape[1]
    tiled = {"user": jnp.repeat(context["user"][:, None], w, axis=1)}
    return in_state(tiled, tokens_BWL, level)[0], state

  user = {"user": jax.random.normal(jax.random.PRNGKey(5), (b, 8))}
  want = beam_search.constrained_beam_search(in_state, trie.device_arrays(), user, 4)
  got = beam_search.constrained_beam_search(in_context, trie.device_arrays(), {}, 4, context=user)
  np.testing.assert_array_equal(got.groups_BW, want.groups_BW)
  np.testing.assert_allclose(got.scores_BW, want.scores_BW, rtol=1e-6)
  ref = beam_search.beam_search_reference(in_context, trie.sids, {}, 4, context=user)
  np.testing.assert_allclose(ref.scores_BW, beam_search.beam_search_reference(in_state, trie.sids, user, 4).scores_BW,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="state or context needs"):
    beam_search.constrained_beam_search(in_context, trie.device_arrays(), {}, 2)
