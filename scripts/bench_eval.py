"""Evaluation benchmark: time and memory of one full-catalogue evaluation batch against catalogue size.

    python scripts/bench_eval.py [--sizes 10000,1000000,10000000] [--batch 512] [--dim 50]
                                 [--window 200] [--item_chunk 65536] [--out results/bench/eval_cpu.json]

Each size runs in its own process (so peak RSS is per size). It builds a random item table
[V + 1, D], random L2-normalised user outputs, random [B, window] history ids and targets, and runs
the real `tasks.retrieval.make_eval_step` (history filter on) with a stand-in model whose `apply`
returns those outputs and that table. Reported per size:
  time        the first call (compile + run) and the median / min of `--reps` warm calls;
  memory      (a) RSS above idle: the highest resident set sampled every ms during the warm calls,
                  minus the RSS just before them (table and inputs already allocated); the same
                  for the first call (which includes compilation);
              (b) XLA's compiled memory analysis of the ranking program (`catalogue_ranks` with
                  cosine scores, i.e. the eval step minus the stand-in model): temporaries, and
                  arguments (the table) + temporaries;
              (c) the process's peak RSS (everything, table included);
  dense       what the old dense path (`catalogue_ranks_reference`: [B, C] scores, [B, V] history
              mask) would need: XLA's memory analysis of that program, compiled, never run, and
              the size of its two largest buffers (B * C * 4 + B * V bytes).
glibc malloc is left untuned here (unlike the training entry points): freed scratch then goes back
to the OS, so each warm call's own peak shows in the RSS samples instead of being hidden in a heap
kept at its high-water mark.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 2 ** 20


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * PAGE


class RssSampler:
  """Highest RSS seen by a background thread polling /proc/self/statm every `period` seconds."""

  def __init__(self, period=0.001):
    self.period, self.peak, self._stop = period, rss_bytes(), threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, rss_bytes())
      time.sleep(self.period)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss_bytes())


class TableModel:
  """Stand-in for a model: `apply` returns the outputs [B, L, D] and item table [V, D] it is given."""

  def apply(self, variables, batch, train=False):
    del batch, train
    return variables["params"]["out"], variables["params"]["table"]


def random_table(rows: int, dim: int, seed: int, chunk: int = 65536):
  """N(0, 1) table [rows, dim] written block by block into one buffer (no second full-size copy:
  at 10M rows the table alone is 1.9 GB). `dynamic_update_slice` clamps the last block to fit."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  chunk = min(chunk, rows)

  @jax.jit
  def make(key):
    def body(i, t):
      block = jax.random.normal(jax.random.fold_in(key, i), (chunk, dim), jnp.float32)
      return jax.lax.dynamic_update_slice(t, block, (i * chunk, 0))
    return jax.lax.fori_loop(0, -(-rows // chunk), body, jnp.zeros((rows, dim), jnp.float32))

  return make(jax.random.key(seed))


def measure(size: int, batch: int, dim: int, window: int, item_chunk: int, reps: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from recjax.losses import l2_normalize  # pylint: disable=import-outside-toplevel
  from recjax.metrics.retrieval import (catalogue_chunks, catalogue_ranks,  # pylint: disable=import-outside-toplevel
                                        catalogue_ranks_reference)
  from recjax.tasks.retrieval import make_eval_step  # pylint: disable=import-outside-toplevel

  rss_start = rss_bytes()
  rows = size + 1   # row 0 = padding
  table = random_table(rows, dim, seed=0)
  rng = np.random.default_rng(0)
  out = jnp.asarray(rng.normal(size=(batch, window, dim)).astype(np.float32))
  ids = rng.integers(1, rows, (batch, window)).astype(np.int32)
  b = {"ids": jnp.asarray(ids), "lengths": jnp.full((batch,), window, jnp.int32),
       "targets": jnp.asarray(rng.integers(1, rows, batch).astype(np.int32))}
  params = {"out": out, "table": table}
  catalogue = np.arange(1, rows)
  step = make_eval_step(TableModel(), catalogue, rows, exclude_history=True, item_chunk=item_chunk)
  jax.block_until_ready(params)

  rss_before_first = rss_bytes()
  with RssSampler() as first_sampler:
    t = time.perf_counter()
    jax.block_until_ready(step(params, b))
    first_s = time.perf_counter() - t
  rss_idle = rss_bytes()
  times = []
  with RssSampler() as sampler:
    for _ in range(reps):
      t = time.perf_counter()
      jax.block_until_ready(step(params, b))
      times.append(time.perf_counter() - t)

  # XLA's view, from shapes only (nothing is allocated): the streamed program and the old dense one.
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)
  ids_nk, valid_nk = catalogue_chunks(catalogue, rows, item_chunk)
  streamed = jax.jit(functools.partial(catalogue_ranks, item_transform=l2_normalize)).lower(
      f32(batch, dim), f32(rows, dim), ids_nk, valid_nk, i32(batch), i32(batch, window)).compile()
  dense = jax.jit(functools.partial(catalogue_ranks_reference, item_transform=l2_normalize)).lower(
      f32(batch, dim), f32(rows, dim), i32(size), i32(batch), i32(batch, window)).compile()
  ms, md = streamed.memory_analysis(), dense.memory_analysis()
  return {
      "catalogue": size, "table_rows": rows, "batch": batch, "dim": dim, "window": window,
      "item_chunk": item_chunk, "table_mb": rows * dim * 4 / MB,
      "first_call_s": first_s, "time_s_median": statistics.median(times), "time_s_min": min(times),
      "time_s_all": [round(x, 4) for x in times],
      "rss_above_idle_mb": (sampler.peak - rss_idle) / MB,
      "first_call_rss_above_idle_mb": (first_sampler.peak - rss_before_first) / MB,
      "rss_idle_mb": rss_idle / MB, "rss_at_start_mb": rss_start / MB,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "xla_temp_mb": ms.temp_size_in_bytes / MB,
      "xla_args_plus_temp_mb": (ms.argument_size_in_bytes + ms.temp_size_in_bytes) / MB,
      "dense_xla_temp_mb": md.temp_size_in_bytes / MB,
      "dense_largest_buffers_mb": (batch * size * 4 + batch * rows) / MB,
  }


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--sizes", default="10000,1000000,10000000")
  ap.add_argument("--batch", type=int, default=512)
  ap.add_argument("--dim", type=int, default=50)
  ap.add_argument("--window", type=int, default=200)
  ap.add_argument("--item_chunk", type=int, default=4096)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--out", default="results/bench/eval_cpu.json")
  ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # child: one size, JSON on stdout
  args = ap.parse_args()
  settings = dict(batch=args.batch, dim=args.dim, window=args.window, item_chunk=args.item_chunk, reps=args.reps)
  if args.one is not None:
    print("ROW " + json.dumps(measure(args.one, **settings)), flush=True)
    return

  rows = []
  for size in (int(s) for s in args.sizes.split(",")):
    cmd = [sys.executable, os.path.abspath(__file__), f"--one={size}"] + [f"--{k}={v}" for k, v in settings.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [l for l in proc.stdout.splitlines() if l.startswith("ROW ")]
    if proc.returncode != 0 or not line:
      raise RuntimeError(f"size {size} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    rows.append(json.loads(line[0][4:]))
    r = rows[-1]
    print(f"catalogue {size:>10,}: {r['time_s_median']:.3f} s, RSS +{r['rss_above_idle_mb']:.0f} MB", flush=True)

  from recjax.train import results  # pylint: disable=import-outside-toplevel
  record = {
      "kind": "bench_eval",
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "commit": results.git_commit(), "versions": results.versions(), "hardware": results.hardware(),
      "settings": settings,
      "memory_note": ("rss_above_idle_mb: sampled RSS during warm calls minus RSS before them "
                      "(first_call_*: the same for the compiling first call); xla_*: "
                      "compiled memory analysis of catalogue_ranks; peak_rss_mb: the whole process, table "
                      "included; dense_*: the old dense path, compiled only (never run)"),
      "rows": rows,
  }
  print(f"\n{'catalogue':>10s} {'table MB':>9s} {'first s':>8s} {'warm s':>7s} {'RSS+ MB':>8s} {'1st RSS+':>8s} "
        f"{'XLA tmp MB':>10s} "
        f"{'peak RSS MB':>11s} {'dense XLA tmp MB':>16s}")
  for r in rows:
    print(f"{r['catalogue']:>10,} {r['table_mb']:9.0f} {r['first_call_s']:8.2f} {r['time_s_median']:7.3f} "
          f"{r['rss_above_idle_mb']:8.0f} {r['first_call_rss_above_idle_mb']:8.0f} {r['xla_temp_mb']:10.0f} "
          f"{r['peak_rss_mb']:11.0f} "
          f"{r['dense_xla_temp_mb']:16,.0f}")
  results.write_results(args.out, record)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
