"""Long user histories on the XLA path: step time and peak memory against sequence length.

One attention layer, forward + backward (gradients wrt q, k, v of a weighted sum of the output),
batch 4, one head, d = 50, float32, at L = 2k, 4k, 8k, 16k:

  * sla_blocked: semi-local attention (K1 = 256, K2 = 32, HSTU pointwise SiLU, 1/L scale) computed
    blockwise by `recjax/layers/sla.py` (attention(..., sla=SLABlocking(128)));
  * linear_hstu: the Linear HSTU running-state attention (`models/linear_hstu.linear_attention`,
    outer state, chunk 64), for comparison;
  * sla_dense: the same SLA mask through the dense [L, L] path, compiled at every length for its
    memory estimate and timed only where the estimate is under `--dense_limit_gb`.

Step time is the fastest of `--iters` runs (other processes on a shared CPU only add time), CPU
time the least process CPU time (all threads) of one step, the steadier measure of work on a loaded
machine; each exponent is the least-squares slope of log(time) on log(L). Peak memory is XLA's
compiled estimate (`compiled.memory_analysis()`: arguments + outputs + temporaries - aliases).

Usage:
  python scripts/bench_long_sequences.py [--lengths 2048 4096 8192 16384] [--iters 3]
      [--out results/bench/long_sequences_cpu.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recjax import cpu_allocator  # noqa: E402

cpu_allocator.tune()   # as experiments/run.py does, before JAX starts its threads

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from pallas_kernels.mask import MaskSpec  # noqa: E402
from recjax.layers.attention import attention  # noqa: E402
from recjax.layers.sla import SLABlocking  # noqa: E402
from recjax.models.linear_hstu import init_state, linear_attention  # noqa: E402
from recjax.train.results import git_commit, hardware, versions  # noqa: E402

B, H, D = 4, 1, 50
SLA = MaskSpec(causal=True, local_window=256, global_prefix=32)
BLOCK = 128


def step_fn(impl: str, L: int):
  """jitted (q, k, v, g) -> (dq, dk, dv) for one implementation at length L."""
  lengths = jnp.full((B,), L, jnp.int32)

  def forward(q, k, v):
    if impl == "linear_hstu":
      valid = jnp.ones((B, L), bool)
      return linear_attention(q, k, v, valid, init_state("outer", B, H, D, D), chunk=64)[0]
    kw = dict(sla=SLABlocking(BLOCK)) if impl == "sla_blocked" else dict(tiling=None)
    return attention(q, k, v, lengths_B=lengths, mask=SLA, kind="pointwise", activation="silu",
                     alpha=1.0, scale=1.0 / L, **kw)

  def loss(q, k, v, g):
    return jnp.sum(forward(q, k, v) * g)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def peak_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def measure(impl: str, L: int, iters: int, run: bool) -> dict:
  args = [jax.random.normal(k, (B, L, H, D)) for k in jax.random.split(jax.random.key(L), 4)]
  t0 = time.perf_counter()
  compiled = step_fn(impl, L).lower(*args).compile()
  cell = {"impl": impl, "L": L, "compile_s": time.perf_counter() - t0, "peak_bytes": peak_bytes(compiled)}
  if run:
    jax.block_until_ready(compiled(*args))   # warm-up
    times, cpu = [], []
    for _ in range(iters):
      t0, c0 = time.perf_counter(), time.process_time()
      jax.block_until_ready(compiled(*args))
      times.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
    # The minimum: on a shared CPU the other processes only ever add time.
    cell["step_s"] = float(np.min(times))
    cell["step_s_median"] = float(np.median(times))
    cell["step_s_all"] = times
    cell["cpu_s"] = float(np.min(cpu))   # CPU seconds of all this process's threads: the work done
    cell["cpu_s_all"] = cpu
  return cell


def exponent(cells: list[dict], key: str = "step_s") -> float | None:
  pts = [(c["L"], c[key]) for c in cells if key in c]
  if len(pts) < 2:
    return None
  x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
  return float(np.polyfit(x, y, 1)[0])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--dense_lengths", type=int, nargs="+", default=[2048, 8192],
                      help="lengths at which the dense path is compiled for its memory estimate")
  parser.add_argument("--dense_limit_gb", type=float, default=1.5,
                      help="time the dense path only where its estimate is below this")
  parser.add_argument("--out", default="results/bench/long_sequences_cpu.json")
  args = parser.parse_args(argv)
  start = time.time()
  cells = []
  for impl in ("sla_blocked", "linear_hstu"):
    for L in args.lengths:
      cells.append(measure(impl, L, args.iters, run=True))
      print(f"{impl:12s} L={L:6d}  step {cells[-1]['step_s'] * 1e3:9.1f} ms  "
            f"cpu {cells[-1]['cpu_s'] * 1e3:9.1f} ms  peak {cells[-1]['peak_bytes'] / 2**20:8.1f} MiB", flush=True)
  for L in args.dense_lengths:
    probe = measure("sla_dense", L, args.iters, run=False)
    if probe["peak_bytes"] < args.dense_limit_gb * 2**30:
      probe = measure("sla_dense", L, args.iters, run=True)
    cells.append(probe)
    step = f"{probe['step_s'] * 1e3:9.1f} ms" if "step_s" in probe else "  not run"
    print(f"{'sla_dense':12s} L={L:6d}  step {step}  peak {probe['peak_bytes'] / 2**20:8.1f} MiB", flush=True)

  fits = {impl: {key: exponent([c for c in cells if c["impl"] == impl], key) for key in ("step_s", "cpu_s")}
          for impl in ("sla_blocked", "linear_hstu")}
  print("\n| impl | L | step (ms) | CPU time (ms) | peak memory (MiB) |\n|---|---|---|---|---|")
  for c in cells:
    step = f"{c['step_s'] * 1e3:.1f} | {c['cpu_s'] * 1e3:.1f}" if "step_s" in c else "not run (memory) | -"
    print(f"| {c['impl']} | {c['L']} | {step} | {c['peak_bytes'] / 2**20:.1f} |")
  for impl, fit in fits.items():
    print(f"{impl}: wall time ∝ L^{fit['step_s']:.2f}, CPU time ∝ L^{fit['cpu_s']:.2f} over L = {args.lengths}")
  record = {
      "benchmark": "long_sequences", "command": " ".join(["python"] + sys.argv),
      "commit": git_commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "versions": versions(), "hardware": hardware(),
      "setup": {"batch": B, "heads": H, "d": D, "dtype": "float32", "mask": str(SLA), "sla_block": BLOCK,
                "linear_chunk": 64, "iters": args.iters, "what": "one attention layer, forward + backward"},
      "cells": cells, "time_exponent": fits, "wall_s": time.time() - start,
  }
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=1)
  print(f"wrote {args.out} ({record['wall_s']:.0f} s)")


if __name__ == "__main__":
  main()
