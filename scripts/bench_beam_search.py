"""TIGER's constrained beam search on CPU: beams sharing one encoder output vs a copy per beam.

    python scripts/bench_beam_search.py [--users 32] [--beams 20] [--reps 5] [--out results/bench/beam_search_cpu.json]

A paper-size TIGER (configs/tiger_amazon_sports.py: 4 + 4 layers, dim 128, 6 heads x 64, MLP 1024,
history 20 items x 4 SID tokens + a user token = 81 memory positions), random weights, a random
catalogue of 18,357 SIDs (3 levels x 256 codes + a dedup level, as on Amazon Sports), one batch of
`--users` queries, `--beams` beams, two ways in one process, each jitted and warmed up first,
timed round-robin:
  tiled    the encoder output tiled to [B, W, S, D] as per-beam search state and every decoder
           step run on B·W copies of it (how recjax decoded before): each cross-attention layer
           projects the same memory's keys and values W times per level;
  context  the encoder output passed as the search's per-query context and the beams folded
           into cross-attention's queries (`TIGER.decode(beams=W)`): keys and values once per query.
Reported: median and min seconds per batch (encoder included), users per second, the ratio, whether
both return the same beams, and XLA's FLOP count of each compiled search.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recjax import cpu_allocator  # noqa: E402

cpu_allocator.tune()   # as experiments/run.py does, before JAX starts its threads

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from recjax.models.tiger import TIGER, BeamScorer, decode_context  # noqa: E402
from recjax.semantic_ids import beam_search  # noqa: E402
from recjax.semantic_ids.trie import build_trie  # noqa: E402
from recjax.train import results  # noqa: E402

K, LEVELS, HISTORY, CATALOGUE = 256, 4, 20, 18_357


@dataclasses.dataclass(frozen=True)
class TiledMemoryScorer:
  """The previous scorer: memory as per-beam state (tiled and reordered by the search), decoded per beam."""
  model: TIGER

  def __call__(self, params):
    def step_fn(state, tokens_BWL, level: int):
      memory_BWSD, lengths_BW = state["memory"], state["memory_lengths"]
      b, w = lengths_BW.shape
      logits_NTK = self.model.apply(
          {"params": params}, memory_BWSD.reshape((b * w,) + memory_BWSD.shape[2:]), lengths_BW.reshape(b * w),
          tokens_BWL[:, :, :level].reshape(b * w, level), method=TIGER.decode)
      return logits_NTK[:, level].reshape(b, w, -1), state
    return step_fn


def catalogue_trie(rng):
  codes = rng.integers(0, K, (CATALOGUE, LEVELS - 1))
  dedup = np.zeros((CATALOGUE, 1), np.int64)
  _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
  inverse = inverse.reshape(-1)
  for g in np.unique(inverse):                      # the dedup level numbers items within a collision group
    members = np.flatnonzero(inverse == g)
    dedup[members, 0] = np.arange(len(members))
  return build_trie(np.concatenate([codes, dedup], axis=1), K)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--users", type=int, default=32)
  ap.add_argument("--beams", type=int, default=20)
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--out", default="results/bench/beam_search_cpu.json")
  args = ap.parse_args(argv)
  rng = np.random.default_rng(0)
  model = TIGER(K, LEVELS, max_history=HISTORY, dim=128, num_heads=6, head_dim=64, ffn_dim=1024,
                num_encoder_layers=4, num_decoder_layers=4, dropout=0.0, num_user_tokens=2000)
  b = args.users
  batch = {"history_codes": jnp.asarray(rng.integers(0, K, (b, HISTORY, LEVELS)), jnp.int32),
           "history_lengths": jnp.asarray(rng.integers(1, HISTORY + 1, b), jnp.int32),
           "target_codes": jnp.zeros((b, LEVELS), jnp.int32),
           "user_ids": jnp.asarray(rng.integers(0, 10**6, b), jnp.int32)}
  params = jax.jit(lambda k, x: model.init({"params": k}, x)["params"])(jax.random.PRNGKey(0), batch)
  trie = catalogue_trie(rng)
  next_node = trie.device_arrays()

  def search(way):
    def run(params, batch, next_node):
      memory, lengths = model.apply({"params": params}, batch, method=TIGER.encode)
      if way == "tiled":
        return beam_search.model_beam_search(TiledMemoryScorer(model), params, next_node,
                                             decode_context(memory, lengths), args.beams).groups_BW
      return beam_search.model_beam_search(BeamScorer(model), params, next_node, {}, args.beams,
                                           context=decode_context(memory, lengths)).groups_BW
    return jax.jit(run)

  ways = ("tiled", "context")
  fns = {w: search(w) for w in ways}
  flops, groups = {}, {}
  for w in ways:
    compiled = fns[w].lower(params, batch, next_node).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops[w] = float(cost.get("flops", float("nan")))
    groups[w] = np.asarray(jax.block_until_ready(fns[w](params, batch, next_node)))   # warm-up
  times = {w: [] for w in ways}
  for _ in range(args.reps):
    for w in ways:
      t0 = time.perf_counter()
      jax.block_until_ready(fns[w](params, batch, next_node))
      times[w].append(time.perf_counter() - t0)
  rows = {w: {"median_s": statistics.median(times[w]), "min_s": min(times[w]),
              "users_per_s": b / statistics.median(times[w]), "xla_flops": flops[w], "samples_s": times[w]}
          for w in ways}
  speedup = rows["tiled"]["median_s"] / rows["context"]["median_s"]
  same = bool(np.array_equal(groups["tiled"], groups["context"]))
  print(f"TIGER beam search, {b} users x {args.beams} beams, catalogue {CATALOGUE} SIDs x {LEVELS} levels, "
        f"{args.reps} reps, {os.cpu_count()} CPUs")
  print(f"{'way':10s} {'median s':>10s} {'min s':>10s} {'users/s':>10s} {'XLA GFLOP':>10s}")
  for w in ways:
    r = rows[w]
    print(f"{w:10s} {r['median_s']:10.3f} {r['min_s']:10.3f} {r['users_per_s']:10.1f} {r['xla_flops'] / 1e9:10.2f}")
  print(f"context vs tiled: {speedup:.2f}x faster, {flops['tiled'] / flops['context']:.2f}x fewer XLA FLOPs; "
        f"same beams: {same}")
  payload = {"benchmark": "beam_search", "users": b, "beams": args.beams, "reps": args.reps,
             "catalogue_sids": CATALOGUE, "levels": LEVELS, "codebook_size": K, "history": HISTORY,
             "model": "TIGER paper size (4+4 layers, dim 128, 6x64 heads, MLP 1024)", "rows": rows,
             "speedup_context_over_tiled": speedup,
             "flop_ratio_tiled_over_context": flops["tiled"] / flops["context"], "same_beams": same,
             "loadavg_1m_at_end": os.getloadavg()[0],
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
             "commit": results.git_commit(), "versions": results.versions(), "hardware": results.hardware()}
  results.write_results(args.out, payload)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
