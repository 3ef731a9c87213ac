"""Weak scaling of the sharded train step on host devices (1, 2, 4, 8), the two row-sharded lookups
and the two sampled softmaxes over a row-sharded table.

    python scripts/bench_scaling.py [--devices 8] [--per_device_batch 16] [--steps 10]
                                    [--parts steps,lookups] [--out results/bench/scaling_cpu.json]
    python scripts/bench_scaling.py --parts lookups --out results/bench/lookups_cpu.json

A small HSTU on synthetic sequences; the batch grows with the mesh (per-device batch fixed, mesh
`n x 1`, table row-sharded over all devices, dense parameters replicated). Every row runs the same
step (`train/mesh.py`, with the SPMD sampled softmax `loss.impl="xla"` and no attention tiling) so
the rows differ only in the mesh;
the "1 (fast paths)" row is the 1-device step with the C++ loss kernel and tiled attention.
Host devices are XLA:CPU devices splitting this machine's cores, so the numbers test the sharded
path and its overhead, not a speed-up: ideal weak scaling would keep steps/s flat, here n devices
share the same cores. It also times `layers/sharded_embedding.py`'s SPMD gather against its
all-to-all (forward + gradient) on the full mesh, in alternating rounds (`bench_lookups`), and the
same way the sampled-softmax loss over a row-sharded table: the SPMD path (`loss.impl="xla"`,
GSPMD partitions the gathers) against the shard_map loss that scores each candidate where its row
lives (`loss.impl="shard_map"`, `recjax/sharded_losses.py`) (`bench_sampled_softmax`).
The machine's load average before and after goes into the JSON: on a shared machine it says how
far the absolute times are from an idle one's (the lookups' paired ratio is the robust number).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", type=int, default=8, help="host CPU devices (XLA_FLAGS, set before JAX starts)")
  p.add_argument("--per_device_batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--lookup_repeats", type=int, default=15, help="timed rounds per lookup (after --warmup calls)")
  p.add_argument("--lookup_rows", default="65536,1048576", help="table sizes for the lookup and loss comparisons")
  p.add_argument("--loss_tokens_per_device", type=int, default=512, help="sampled softmax: supervised tokens per device")
  p.add_argument("--parts", default="steps,lookups", help="what to time: steps (weak scaling), lookups")
  p.add_argument("--out", default="results/bench/scaling_cpu.json")
  return p.parse_args()


ARGS = parse_args()
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={ARGS.devices}").strip()

from recjax import cpu_allocator  # noqa: E402
from recjax import losses  # noqa: E402

cpu_allocator.tune()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import base  # noqa: E402
from recjax.data import pipeline, splits  # noqa: E402
from recjax.layers import sharded_embedding  # noqa: E402
from recjax.models import build_model, init_params  # noqa: E402
from recjax.train import mesh as mesh_lib  # noqa: E402
from recjax.train import results  # noqa: E402
from recjax.train.state import TrainState, make_optimizer  # noqa: E402
from recjax.train.step import make_train_step  # noqa: E402

NUM_ROWS, MAX_LEN = 4096, 50   # table rows (padding row included): divisible by every mesh here


def config():
  c = base.base()
  c.data.max_len = MAX_LEN
  c.model.update(dim=64, dqk=32, dv=32, num_blocks=2, num_heads=2, attn_norm_len=MAX_LEN, dropout=0.2,
                 use_time_bias="off")
  c.loss.update(num_negatives=64, token_bucket=256, chunk=128)
  return c


def synthetic_examples(num_users: int, seed: int = 0) -> splits.TrainExamples:
  rng = np.random.default_rng(seed)
  lengths = rng.integers(MAX_LEN // 4, MAX_LEN + 1, num_users).astype(np.int32)
  seq = rng.integers(1, NUM_ROWS, (num_users, MAX_LEN + 1)).astype(np.int32)
  valid = np.arange(MAX_LEN)[None, :] < lengths[:, None]
  return splits.TrainExamples(np.arange(num_users), np.where(valid, seq[:, :-1], 0),
                              np.where(valid, seq[:, 1:], 0), lengths, None, None)


def bench_mesh(c, n: int, fast_paths: bool, ex) -> dict:
  spec = mesh_lib.mesh_spec({"shape": (n, 1)})
  batch_size = ARGS.per_device_batch * n
  mesh_lib.check_batch(spec, batch_size)
  mesh = mesh_lib.make_mesh(spec)
  model_cfg = dict(c.model.copy_and_resolve_references())
  model_cfg["use_time_bias"] = False
  loss_cfg = c.loss
  if not fast_paths:   # the mesh's fallbacks, on every row (resolve_fast_paths does this for n > 1)
    loss_cfg = c.loss.copy_and_resolve_references()
    loss_cfg.impl = "xla"
    model_cfg["attention_tiling"] = False
  model = build_model(model_cfg, NUM_ROWS)
  tx = make_optimizer(c.train)
  catalogue = np.arange(1, NUM_ROWS, dtype=np.int32)
  num = ARGS.warmup + ARGS.steps
  batches = [pipeline.make_train_batch(ex, np.arange(i * batch_size, (i + 1) * batch_size) % len(ex),
                                       batch_size, c.loss.token_bucket) for i in range(num)]
  key = jax.random.key(0, impl=c.train.prng_impl)
  params = init_params(model, key, batches[0])
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  state_sh = mesh_lib.tree_shardings(state, mesh, spec)
  batch_sh = mesh_lib.batch_shardings(batches[0], mesh)
  state = mesh_lib.place(state, state_sh)
  step = mesh_lib.make_sharded_train_step(make_train_step(model, tx, loss_cfg, catalogue, key), mesh,
                                          state_sh, batch_sh)
  t0 = time.perf_counter()
  placed = [mesh_lib.place_batch(b, batch_sh) for b in batches]
  place_s = (time.perf_counter() - t0) / num
  t0 = time.perf_counter()
  for b in placed[:ARGS.warmup]:
    state, loss = step(state, b)
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - t0
  times = []
  for b in placed[ARGS.warmup:]:
    t0 = time.perf_counter()
    state, loss = step(state, b)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  return {"devices": n, "mesh": [n, 1], "fast_paths": fast_paths, "batch_size": batch_size,
          "step_s_median": med, "step_s": spread(times), "steps_per_s": 1.0 / med, "examples_per_s": batch_size / med,
          "place_batch_s": place_s, "warmup_s": compile_s, "final_loss": float(loss)}


def spread(times: list[float]) -> dict:
  """Median and spread of timed repeats (seconds): min, quartiles, max."""
  q1, med, q3 = np.percentile(times, [25, 50, 75])
  return {"median_s": float(med), "min_s": float(min(times)), "q1_s": float(q1), "q3_s": float(q3),
          "max_s": float(max(times)), "repeats": len(times)}


def paired(times: dict, a: str, b: str) -> dict:
  """Per-round ratio times[a] / times[b]: quartiles, extremes, and which is faster (only when the
  whole interquartile range lies on one side of 1)."""
  ratios = [x / y for x, y in zip(times[a], times[b])]
  q1, med, q3 = np.percentile(ratios, [25, 50, 75])
  return {"median": float(med), "q1": float(q1), "q3": float(q3), "min": float(min(ratios)), "max": float(max(ratios)),
          "faster": a if q3 < 1 else b if q1 > 1 else "tie (interquartile ratio spans 1)"}


def alternating_rounds(fns: dict, *args) -> dict:
  """{name: [seconds per call]}: `--warmup` calls each, then `--lookup_repeats` rounds calling every
  function once, the order reversed every other round, so a slow phase of the machine hits all."""
  for f in fns.values():
    for _ in range(ARGS.warmup):
      jax.block_until_ready(f(*args))
  times = {name: [] for name in fns}
  for r in range(ARGS.lookup_repeats):
    for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
      t0 = time.perf_counter()
      jax.block_until_ready(fns[name](*args))
      times[name].append(time.perf_counter() - t0)
  return times


def bench_lookups(n: int, rows: int, dim: int = 64, ids_per_device: int = 4096) -> dict:
  """Forward + gradient of a lookup in a [rows, dim] table row-sharded over n devices, the SPMD
  gather against the all-to-all, timed in alternating rounds (`--lookup_repeats` after
  `--warmup` calls each), so that a slow phase of a shared machine hits both alike. `paired_ratio`
  is all-to-all time / SPMD time within each round."""
  mesh = mesh_lib.make_mesh(mesh_lib.mesh_spec({"shape": (n, 1)}))
  table = jax.random.normal(jax.random.key(0), (rows, dim))
  ids = jax.random.randint(jax.random.key(1), (n * ids_per_device,), 0, rows)
  w = jax.random.normal(jax.random.key(2), (n * ids_per_device, dim))
  fns = {name: jax.jit(jax.value_and_grad(lambda t, i, f=f: jnp.sum(f(t, i, mesh, ("data",)) * w)))
         for name, f in [("spmd", sharded_embedding.lookup_spmd), ("all_to_all", sharded_embedding.lookup_all_to_all)]}
  times = alternating_rounds(fns, table, ids)
  out = {"devices": n, "table": [rows, dim], "ids": n * ids_per_device}
  for name in fns:
    out[name] = {**spread(times[name]), "times_s": [round(t, 5) for t in times[name]]}
  out["paired_ratio_all_to_all_over_spmd"] = paired(times, "all_to_all", "spmd")
  out["faster"] = out["paired_ratio_all_to_all_over_spmd"]["faster"]
  return out


def bench_sampled_softmax(n: int, rows: int, dim: int = 64, negatives: int = 128) -> dict:
  """Loss + gradients (users and table) of the sampled softmax with a [rows, dim] table row-sharded
  over n devices: `loss.impl="xla"` (the SPMD path) against `"shard_map"`, in alternating rounds.
  `--loss_tokens_per_device` x n tokens (all replicated, as the packed tokens of the step are), each
  with one positive and `negatives` uniform negatives, the chunk of the trainer's default (128)."""
  mesh = mesh_lib.make_mesh(mesh_lib.mesh_spec({"shape": (n, 1)}))
  axes = sharded_embedding.row_axes(dict(mesh.shape), rows)
  table = jax.device_put(jax.random.normal(jax.random.key(0), (rows, dim)),
                         jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axes, None)))
  t = n * ARGS.loss_tokens_per_device
  user = jax.random.normal(jax.random.key(1), (t, dim))
  pos = jax.random.randint(jax.random.key(2), (t,), 1, rows)
  neg = jax.random.randint(jax.random.key(3), (t, negatives), 1, rows)
  w = jnp.ones((t,), jnp.float32)
  fns = {impl: jax.jit(jax.value_and_grad(lambda u, e, impl=impl: losses.sampled_softmax_loss(
      u, e, pos, neg, w, temperature=0.05, chunk=128, impl=impl, mesh=mesh), argnums=(0, 1)))
         for impl in ("xla", "shard_map")}
  times = alternating_rounds(fns, user, table)
  out = {"devices": n, "table": [rows, dim], "row_axes": list(axes), "tokens": t, "negatives": negatives}
  for name in fns:
    out[name] = {**spread(times[name]), "times_s": [round(x, 5) for x in times[name]]}
  out["paired_ratio_shard_map_over_xla"] = paired(times, "shard_map", "xla")
  out["faster"] = out["paired_ratio_shard_map_over_xla"]["faster"]
  return out



def _print_paired(cases, title, size_key, base, other, ratio_key, ratio_title):
  """One table of two implementations timed in alternating rounds: (key, column title) for each."""
  if not cases:
    return
  print(f"{title}, {ARGS.lookup_repeats} alternating rounds (ms: median [q1, q3] min-max)")
  print(f"{'table':>14s} {size_key:>7s} {base[1]:>30s} {other[1]:>30s} {ratio_title:>24s} faster")
  for case in cases:
    cells = [f"{case[k]['median_s']*1e3:6.1f} [{case[k]['q1_s']*1e3:.1f}, {case[k]['q3_s']*1e3:.1f}] "
             f"{case[k]['min_s']*1e3:.0f}-{case[k]['max_s']*1e3:.0f}" for k in (base[0], other[0])]
    ratio = case[ratio_key]
    print(f"{'x'.join(map(str, case['table'])):>14s} {case[size_key]:7d} {cells[0]:>30s} {cells[1]:>30s} "
          f"{ratio['median']:6.2f} [{ratio['q1']:.2f}, {ratio['q3']:.2f}]       {case['faster']}")

def main():
  parts = set(ARGS.parts.split(","))
  if not parts or parts - {"steps", "lookups"}:
    raise ValueError(f"--parts must name steps and/or lookups, got {ARGS.parts!r}")
  load_before = os.getloadavg()
  c = config()
  n_max = jax.device_count()
  counts = [n for n in (1, 2, 4, 8, 16) if n <= n_max]
  rows, lookups, softmaxes = [], [], []
  if "steps" in parts:
    ex = synthetic_examples(ARGS.per_device_batch * counts[-1] * 4)
    rows = [bench_mesh(c, 1, True, ex)] + [bench_mesh(c, n, False, ex) for n in counts]
    base_sps = rows[1]["steps_per_s"]
    for r in rows:
      r["weak_scaling_efficiency"] = r["steps_per_s"] / base_sps
  if "lookups" in parts:
    lookups = [bench_lookups(counts[-1], int(v)) for v in ARGS.lookup_rows.split(",")]
    softmaxes = [bench_sampled_softmax(counts[-1], int(v)) for v in ARGS.lookup_rows.split(",")]
  record = {
      "kind": "bench_scaling", "parts": sorted(parts), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "commit": results.git_commit(),
      "versions": results.versions(), "hardware": results.hardware(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "backend": jax.default_backend(),
      "model": {k: c.model[k] for k in ("dim", "num_blocks", "num_heads", "dqk", "dv")} | {
          "table_rows": NUM_ROWS, "max_len": MAX_LEN, "num_negatives": c.loss.num_negatives},
      "per_device_batch": ARGS.per_device_batch, "steps": ARGS.steps, "rows": rows, "lookups": lookups,
      "sampled_softmax": softmaxes, "loss_tokens_per_device": ARGS.loss_tokens_per_device,
      "lookup_repeats": ARGS.lookup_repeats, "warmup": ARGS.warmup,
      "load_average_1_5_15min": {"before": list(load_before), "after": list(os.getloadavg())},
      "note": ("host devices share this machine's CPU cores: the table measures the sharded path's "
               "overhead, not a speed-up"),
  }
  hw = record["hardware"]
  print(f"{jax.default_backend()} x {n_max} host devices; {hw.get('cpu')}; per-device batch {ARGS.per_device_batch}")
  print(f"load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}")
  if rows:
    print(f"{'devices':>14s} {'batch':>6s} {'step ms':>8s} {'[q1, q3]':>14s} {'steps/s':>8s} {'ex/s':>8s} {'efficiency':>10s}")
  for r in rows:
    label = f"{r['devices']}" + (" (fast paths)" if r["fast_paths"] else "")
    iqr = f"[{r['step_s']['q1_s']*1e3:.0f}, {r['step_s']['q3_s']*1e3:.0f}]"
    print(f"{label:>14s} {r['batch_size']:6d} {r['step_s_median']*1e3:8.1f} {iqr:>14s} {r['steps_per_s']:8.2f} "
          f"{r['examples_per_s']:8.0f} {r['weak_scaling_efficiency']:10.2f}")
  _print_paired(lookups, f"lookup forward + gradient on {counts[-1]} devices", "ids", ("spmd", "SPMD gather"),
                ("all_to_all", "all-to-all"), "paired_ratio_all_to_all_over_spmd", "a2a/SPMD per round")
  _print_paired(softmaxes, f"sampled softmax loss + gradients on {counts[-1]} devices", "tokens",
                ("xla", "SPMD (xla)"), ("shard_map", "shard_map"), "paired_ratio_shard_map_over_xla",
                "shard_map/SPMD per round")
  os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
  with open(ARGS.out, "w") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {ARGS.out}")


if __name__ == "__main__":
  main()
