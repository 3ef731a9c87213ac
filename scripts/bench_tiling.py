"""Compile and run time of the tiled causal attention path (recjax/layers/tiled_attention.py).

    python scripts/bench_tiling.py [--repeats 7] [--shapes train,eval] [--variants unrolled,rolled,dense]
                                   [--old_package DIR]

Two HSTU shapes on real ML-1M lengths (../shared/data/ml-1m; synthetic lengths of the same mean
otherwise), position bias on, no time bias (as configs/hstu_ml1m.py runs ML-1M):
  train: B = 128, L = 200, 1 head, d = 50, 2 blocks, forward + backward (train=True: dropout on)
  eval:  B = 512, L = 200, 2 heads x 25, 8 blocks (HSTU-large), forward only
  train_large: B = 128, 2 heads x 25, 8 blocks, forward + backward (8 row groups of 32)
Variants: "unrolled" (every row group its own q_tiles `lax.cond`s), "rolled" (one `lax.scan` over
groups, q_tiles conds in its body), "dense" (no tiling), "default" (CausalTiling()), and with
--old_package DIR a copy of an older `recjax` renamed `recjax_old` under DIR ("old": its default).
Compile time is lower+compile of the jitted function; calls alternate between the variants (round
robin per batch, same process, same batches). On a shared machine the process's CPU time (all
threads) is steadier than wall time; both are reported (median and 10th percentile).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recjax import cpu_allocator  # noqa: E402

cpu_allocator.tune()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from recjax.layers.tiled_attention import CausalTiling  # noqa: E402
from recjax.models.hstu import HSTU  # noqa: E402

SHAPES = {
    "train": dict(batch=128, heads=1, dqk=50, blocks=2, train=True),
    "eval": dict(batch=512, heads=2, dqk=25, blocks=8, train=False),
    "train_large": dict(batch=128, heads=2, dqk=25, blocks=8, train=True),
}
L = 200


def ml1m_lengths(split: str) -> np.ndarray:
  from configs import hstu_ml1m  # pylint: disable=import-outside-toplevel
  from recjax.data import registry, splits  # pylint: disable=import-outside-toplevel
  cfg = hstu_ml1m.get_config().data
  if not os.path.exists(cfg.data_dir):
    print("no ML-1M: synthetic lengths")
    return np.random.default_rng(0).integers(16, L + 1, 6040)
  seqs = registry.load_dataset(cfg)
  if split == "train":
    return splits.train_examples(seqs, L, "last_item").lengths
  return splits.eval_examples(seqs, L, "test", "last_item").lengths


def model_for(variant: str, shape: dict):
  kw = dict(num_items=3707, dim=50, num_blocks=shape["blocks"], num_heads=shape["heads"], dqk=shape["dqk"],
            dv=shape["dqk"], max_len=L, attn_norm_len=211, use_time_bias=False)
  if variant == "old":
    from recjax_old.models.hstu import HSTU as OldHSTU  # pylint: disable=import-outside-toplevel
    return OldHSTU(**kw, attention_tiling=True)
  tiling = {"unrolled": CausalTiling(max_unrolled_groups=10 ** 6), "rolled": CausalTiling(max_unrolled_groups=1),
            "default": CausalTiling(), "dense": False}[variant]
  return HSTU(**kw, attention_tiling=tiling)


def make_fn(model, shape):
  if shape["train"]:
    def loss(p, batch, key):
      out, _ = model.apply(p, batch, train=True, rngs={"dropout": key})
      return jnp.mean(jnp.sin(out))
    return jax.jit(jax.value_and_grad(loss))
  return jax.jit(lambda p, batch, key: model.apply(p, batch)[0][:, -1])


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--shapes", default="train,eval")
  ap.add_argument("--variants", default="unrolled,rolled,dense")
  ap.add_argument("--old_package", default="")
  args = ap.parse_args()
  if args.old_package:
    sys.path.insert(0, args.old_package)
  print(jax.devices(), flush=True)
  for shape_name in args.shapes.split(","):
    shape = SHAPES[shape_name]
    lengths = ml1m_lengths("train" if shape["train"] else "eval")
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(3):
      lens = rng.choice(lengths, shape["batch"]).astype(np.int32)
      ids = np.where(np.arange(L) < lens[:, None], rng.integers(1, 3707, (shape["batch"], L)), 0).astype(np.int32)
      batches.append({"ids": jnp.asarray(ids), "lengths": jnp.asarray(lens)})
    key = jax.random.key(1)
    params = None
    fns = {}
    for v in args.variants.split(","):
      model = model_for(v, shape)
      if params is None:
        params = jax.jit(model.init)(jax.random.key(0), batches[0])
      t = time.perf_counter()
      compiled = make_fn(model, shape).lower(params, batches[0], key).compile()
      c = time.perf_counter() - t
      jax.block_until_ready(compiled(params, batches[0], key))
      fns[v] = compiled
      print(f"{shape_name} {v}: compile {c:.1f} s", flush=True)
    wall = {v: [] for v in fns}
    cpu = {v: [] for v in fns}
    for _ in range(args.repeats):
      for b in batches:
        for v, f in fns.items():
          t, c = time.perf_counter(), time.process_time()
          jax.block_until_ready(f(params, b, key))
          wall[v].append(time.perf_counter() - t)
          cpu[v].append(time.process_time() - c)
    for v in fns:
      w, c = np.array(wall[v]) * 1e3, np.array(cpu[v]) * 1e3
      print(f"{shape_name} {v}: wall median {np.median(w):.1f} ms, p10 {np.percentile(w, 10):.1f}; "
            f"CPU time median {np.median(c):.1f} ms, p10 {np.percentile(c, 10):.1f} (n {len(w)})", flush=True)

if __name__ == "__main__":
  main()
