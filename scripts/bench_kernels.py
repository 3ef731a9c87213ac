"""Benchmark the Pallas attention kernels against their dense XLA references.

Measures forward and forward+backward time, achieved TFLOP/s, XLA's peak
memory estimate and the speed ratio to the XLA reference for

  * HSTU causal pointwise SiLU attention with relative bias (pos + time),
  * semi-local attention (K1 = 256, K2 = 32), same op,
  * GDPA (L queries x 32 context keys, SiLU, tau = L),

at L = 200, 1k, 4k, 16k. On a GPU the kernels run compiled (Triton). Without
one, the script says so and runs a tiny interpret-mode smoke version on CPU,
whose numbers only show that the script works, not kernel speed.

FLOPs are useful FLOPs: 2 * (Dqk + Dv) per visible (query, key) pair per head
for the forward pass, 3.5x that for forward+backward (the FlashAttention
convention: the backward pass recomputes q.k and runs four matmuls). The same
count is used for both implementations, so the TFLOP/s ratio is the speed
ratio; the dense reference does more raw work on masked pairs.

Usage:
  python scripts/bench_kernels.py [--out results/bench/kernels_<device>.json]
      [--lengths 200 1024 4096 16384] [--dtype bfloat16] [--iters 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pallas_kernels import gdpa as gdpa_lib  # noqa: E402
from pallas_kernels.common import BlockSizes  # noqa: E402
from pallas_kernels.hstu_attention import (hstu_attention,  # noqa: E402
                                           hstu_attention_reference)
from pallas_kernels.mask import MaskSpec, element_mask  # noqa: E402

GDPA_KEYS = 32
NUM_BUCKETS = 129


@dataclasses.dataclass(frozen=True)
class Workload:
  name: str
  op: str  # hstu | gdpa
  mask: MaskSpec
  L: int
  B: int
  H: int
  D: int
  bias: str  # which relative-bias tables: "pos+ts", "pos", "ts" or "none"

  @property
  def Lk(self) -> int:
    return GDPA_KEYS if self.op == "gdpa" else self.L


def visible_pairs(w: Workload) -> int:
  """Visible (query, key) pairs of one sequence, counted in row chunks."""
  if w.op == "gdpa":
    return w.L * w.Lk
  total, chunk = 0, 1024
  cols = np.arange(w.L)[None, :]
  for start in range(0, w.L, chunk):
    rows = np.arange(start, min(start + chunk, w.L))[:, None]
    total += int(element_mask(w.mask, rows, cols, w.L, w.L, w.L,
                              False).sum())
  return total


def make_fns(w: Workload, interpret: bool, dtype, block_sizes: BlockSizes
             ) -> tuple[dict[str, Callable], tuple]:
  """{impl: jitted fwd / fwd+bwd fn} and the arguments they take."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(w.B, w.L, w.H, w.D)), dtype)
  k = jnp.asarray(rng.normal(size=(w.B, w.Lk, w.H, w.D)), dtype)
  v = jnp.asarray(rng.normal(size=(w.B, w.Lk, w.H, w.D)), dtype)
  lengths = jnp.full((w.B,), w.L, jnp.int32)
  if w.op == "gdpa":
    def run(impl, q, k, v, *_):
      fn = gdpa_lib.gdpa if impl == "pallas" else gdpa_lib.gdpa_reference
      kw = dict(interpret=interpret) if impl == "pallas" else {}
      return fn(q, k, v, tau=float(w.L), **kw)
    args = (q, k, v)
  else:
    pos = jnp.asarray(0.02 * rng.normal(size=2 * w.L - 1), jnp.float32)
    ts = jnp.asarray(0.02 * rng.normal(size=NUM_BUCKETS), jnp.float32)
    times = jnp.asarray(1_700_000_000 + np.cumsum(
        rng.integers(1, 100_000, size=(w.B, w.L)), axis=1), jnp.int32)

    def run(impl, q, k, v, pos=None, ts=None):
      fn = hstu_attention if impl == "pallas" else hstu_attention_reference
      bias = {}
      if "pos" in w.bias:
        bias.update(pos_weights=pos)
      if "ts" in w.bias:
        bias.update(ts_weights=ts, query_times=times, key_times=times)
      return fn(q, k, v, lengths, mask=w.mask, scale=1.0 / w.L,
                block_sizes=block_sizes, interpret=interpret, **bias)
    args = (q, k, v, pos, ts)

  fns = {}
  for impl in ("pallas", "xla"):
    fwd = jax.jit(lambda *a, impl=impl: run(impl, *a))
    loss = lambda *a, impl=impl: jnp.sum(run(impl, *a).astype(jnp.float32))
    fwd_bwd = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
    fns[impl] = (fwd, fwd_bwd)
  return fns, args


def time_fn(fn: Callable, args: tuple, iters: int) -> tuple[float, int]:
  """(median seconds per call, XLA peak-memory estimate in bytes)."""
  compiled = fn.lower(*args).compile()
  mem = compiled.memory_analysis()
  peak = -1
  if mem is not None:
    peak = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
               + mem.output_size_in_bytes)
  jax.block_until_ready(compiled(*args))  # warm-up
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), peak


def bench(w: Workload, interpret: bool, dtype, iters: int,
          block_sizes: BlockSizes) -> dict:
  fns, args = make_fns(w, interpret, dtype, block_sizes)
  flops_fwd = 2.0 * visible_pairs(w) * 2 * w.D * w.B * w.H
  row = dict(dataclasses.asdict(w), mask=str(w.mask), flops_fwd=flops_fwd)
  for impl, (fwd, fwd_bwd) in fns.items():
    for phase, fn, flops in (("fwd", fwd, flops_fwd),
                             ("fwd_bwd", fwd_bwd, 3.5 * flops_fwd)):
      key = f"{impl}_{phase}"
      try:
        sec, peak = time_fn(fn, args, iters)
        row[key] = dict(ms=1e3 * sec, tflops=flops / sec / 1e12,
                        peak_gib=peak / 2**30)
      except Exception as e:  # noqa: BLE001 - OOM etc. is a table entry.
        msg = str(e).splitlines()[0][:160]
        row[key] = dict(error=("OOM" if "RESOURCE_EXHAUSTED" in str(e)
                               or "out of memory" in str(e).lower()
                               else msg))
  for phase in ("fwd", "fwd_bwd"):
    p, x = row[f"pallas_{phase}"], row[f"xla_{phase}"]
    if "ms" in p and "ms" in x:
      row[f"speedup_{phase}"] = x["ms"] / p["ms"]
  return row


def workloads(lengths: list[int], smoke: bool, bias_ablation: bool = False
              ) -> list[Workload]:
  out = []
  for L in lengths:
    # Keep tokens per batch roughly constant (32k; 128 sequences at L=200).
    B = max(1, min(128, 32768 // L))
    H, D = 4, 64
    if smoke:
      B, H, D = 2, 2, 16
    sla = MaskSpec(local_window=min(256, L), global_prefix=min(32, L))
    if smoke:
      sla = MaskSpec(local_window=32, global_prefix=8)
    if bias_ablation:
      # Which relative-bias table costs what, forward and backward (the tables' gradients are
      # scatter-adds of every visible dS entry).
      out += [Workload(f"causal_{b.replace('+', '_')}", "hstu", MaskSpec(), L, B, H, D, b)
              for b in ("none", "pos", "ts", "pos+ts")]
      continue
    out += [Workload("hstu_causal", "hstu", MaskSpec(), L, B, H, D, "pos+ts"),
            Workload("semi_local", "hstu", sla, L, B, H, D, "pos+ts"),
            Workload("gdpa", "gdpa", MaskSpec(causal=False), L, B, H, D,
                     "none")]
  return out


def _commit() -> str:
  """HEAD's sha, "+dirty" when the kernels or this script differ from it (inline, not
  recjax.train.results.git_commit: this script runs where only jax is installed)."""
  try:
    sha = subprocess.check_output(["git", "rev-parse", "HEAD"], text=True,
                                  stderr=subprocess.DEVNULL).strip()
    dirty = subprocess.check_output(
        ["git", "status", "--porcelain", "--", ":(top)pallas_kernels",
         ":(top)scripts/bench_kernels.py"], text=True, stderr=subprocess.DEVNULL)
    return sha + ("+dirty" if dirty.strip() else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _fmt(cell: dict, key: str, spec: str) -> str:
  if "error" in cell:
    return cell["error"][:8]
  return format(cell[key], spec)


def print_table(rows: list[dict]):
  head = (f"{'workload':12s} {'L':>6s} {'B':>4s} | "
          f"{'fwd ms':>8s} {'TF/s':>6s} {'xla ms':>8s} {'x':>5s} | "
          f"{'f+b ms':>8s} {'TF/s':>6s} {'xla ms':>8s} {'x':>5s} | "
          f"{'GiB':>6s} {'xla GiB':>7s}")
  print(head)
  print("-" * len(head))
  for r in rows:
    pf, xf = r["pallas_fwd"], r["xla_fwd"]
    pb, xb = r["pallas_fwd_bwd"], r["xla_fwd_bwd"]
    print(f"{r['name']:12s} {r['L']:6d} {r['B']:4d} | "
          f"{_fmt(pf, 'ms', '8.2f')} {_fmt(pf, 'tflops', '6.1f')} "
          f"{_fmt(xf, 'ms', '8.2f')} {r.get('speedup_fwd', float('nan')):5.2f} | "
          f"{_fmt(pb, 'ms', '8.2f')} {_fmt(pb, 'tflops', '6.1f')} "
          f"{_fmt(xb, 'ms', '8.2f')} "
          f"{r.get('speedup_fwd_bwd', float('nan')):5.2f} | "
          f"{_fmt(pb, 'peak_gib', '6.2f')} {_fmt(xb, 'peak_gib', '7.2f')}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=None,
                      help="JSON path (default results/bench/"
                           "kernels_<device>.json)")
  parser.add_argument("--lengths", type=int, nargs="*", default=None)
  parser.add_argument("--dtype", default="bfloat16",
                      choices=["bfloat16", "float32"])
  parser.add_argument("--iters", type=int, default=None)
  parser.add_argument("--bias_ablation", action="store_true",
                      help="time causal HSTU attention with no bias, the positional table "
                           "alone, the time table alone and both, instead of the default rows")
  args = parser.parse_args(argv)

  backend = jax.default_backend()
  gpu = backend == "gpu"
  device = jax.devices()[0]
  device_name = re.sub(r"[^a-z0-9]+", "_",
                       getattr(device, "device_kind", backend).lower()).strip(
                           "_") if gpu else "cpu"
  if gpu:
    lengths = args.lengths or [200, 1024, 4096, 16384]
    iters = args.iters or 10
    block_sizes = BlockSizes()
    print(f"GPU found ({device.device_kind}): compiled Triton kernels.")
  else:
    lengths = args.lengths or [64, 128]
    iters = args.iters or 1
    block_sizes = BlockSizes(32, 32, 32, 32, 32, 32)
    print("No GPU found: running a tiny interpret-mode smoke test on CPU. "
          "These numbers show the script works; they are NOT kernel "
          "performance.")
  dtype = jnp.dtype(args.dtype)
  out = args.out or os.path.join("results", "bench",
                                 f"kernels_{device_name}.json")
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  rows = []
  commit = _commit()

  def write(partial: bool):
    # Rewritten after every row: a run stopped at its time limit keeps what it measured.
    result = dict(
        command=" ".join(["python"] + sys.argv), commit=commit,
        device=getattr(device, "device_kind", backend), backend=backend,
        compiled=gpu, date=datetime.datetime.now().isoformat(timespec="seconds"),
        jax_version=jax.__version__, dtype=args.dtype, iters=iters,
        block_sizes=dataclasses.asdict(block_sizes), partial=partial, rows=rows)
    with open(out, "w") as f:
      json.dump(result, f, indent=1)

  for w in workloads(lengths, smoke=not gpu, bias_ablation=args.bias_ablation):
    rows.append(bench(w, interpret=not gpu, dtype=dtype, iters=iters,
                      block_sizes=block_sizes))
    print(f"  done {w.name} L={w.L}", flush=True)
    write(partial=True)
  print_table(rows)
  write(partial=False)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
