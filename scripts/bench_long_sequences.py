"""Long user histories on the XLA path: step time and peak memory against sequence length.

One attention layer, forward + backward (gradients wrt q, k, v of a weighted sum of the output),
batch 4, one head, d = 50, float32, at L = 256 ... 16k (every power of two):

  * sla_blocked: semi-local attention (K1 = 256, K2 = 32, HSTU pointwise SiLU, 1/L scale) computed
    blockwise by `recjax/layers/sla.py` (attention(..., sla=SLABlocking(128)));
  * linear_hstu: the Linear HSTU running-state attention (`models/linear_hstu.linear_attention`,
    outer state, chunk 64), for comparison;
  * sla_dense: the same SLA mask through the dense [L, L] path, compiled at every length for its
    memory estimate and timed only where the estimate is under `--dense_limit_gb`.

Step time is the fastest of `--iters` runs (other processes on a shared CPU only add time), CPU
time the least process CPU time (all threads) of one step, the steadier measure of work on a loaded
machine; each exponent is the least-squares slope of log(time) on log(L) over L >= `--fit_from`
(2k: issue 18 states its linearity criterion between 2k and 16k, and below 2k fixed per-step costs
flatten the curve). Peak memory is XLA's
compiled estimate (`compiled.memory_analysis()`: arguments + outputs + temporaries - aliases).

`--level step` measures a whole ranker training step instead (issue 18's step-memory criterion):
the trainer's own step (`train/step.make_step`: the ranking task's multi-task BCE over the 8
feedbacks, gradients wrt every parameter, the Adam update, state donated, the memory-optimized
XLA:CPU schedule) on a random but valid ranking batch of 4 requests x 16 candidates with L
history events each, dropout 0.3 on (`--dropout`), for these rows (all D = 64, 2 blocks x 2
heads, dqk = dv = 32, max_history = L, attn_norm_len = L + 16, user features as context tokens):

  * hstu_full: the full-attention HSTU ranker of configs/long_sequences_hstu_rank.py (time bias on),
    attention in XLA (`attention_impl="xla"`: not the C++ kernel, which XLA's analyses cannot see);
  * ultra_sla: ULTRA-HSTU, one stream, SLA K1 = 256, K2 = 32 on the blocked path (block 128);
  * ultra_sla_trunc: the same with attention truncation (N1 = 1 full block, then the newest 1,024);
  * gact_f2, gact_f4, gact_f8: ULTRA-HSTU, plain causal attention over GACT-folded tokens (f events
    per token, no truncation);
  * ultra_dense: ULTRA-HSTU, plain causal attention, no folding (the same family at full attention).

Every row is compiled at every length for XLA's memory estimate ("step memory": arguments +
outputs + temporaries - aliases, the donated state counted once), its FLOPs (cost analysis) and
its compile time, and timed only where the estimate is under `--step_limit_gb`.

Usage:
  python scripts/bench_long_sequences.py [--lengths 256 512 ... 16384] [--iters 3] [--fit_from 2048]
      [--out results/bench/long_sequences_cpu.json]
  python scripts/bench_long_sequences.py --level step [--rows hstu_full ultra_sla ...]
      [--step_limit_gb 3] [--out results/bench/long_step_cpu.json] [--replot]
  (the step level also draws <out>.png: step memory and CPU time against L per row)
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
import optax  # noqa: E402

from pallas_kernels.mask import MaskSpec  # noqa: E402
from recjax.layers.attention import attention  # noqa: E402
from recjax.layers.sla import SLABlocking  # noqa: E402
from recjax.models import build_model  # noqa: E402
from recjax.models.linear_hstu import init_state, linear_attention  # noqa: E402
from recjax.tasks.ranking import RankingTask  # noqa: E402
from recjax.train.results import git_commit, hardware, versions  # noqa: E402
from recjax.train.state import TrainState  # noqa: E402
from recjax.train.step import make_step  # noqa: E402

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
    cell.update(timed(lambda: compiled(*args), iters))
  return cell


def timed(call, iters: int) -> dict:
  """One warm-up, then `iters` timed calls of `call()` -> the step_s / cpu_s fields of a cell."""
  jax.block_until_ready(call())
  times, cpu = [], []
  for _ in range(iters):
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  # The minimum: on a shared CPU the other processes only ever add time.
  return {"step_s": float(np.min(times)), "step_s_median": float(np.median(times)), "step_s_all": times,
          # CPU seconds of all this process's threads: the work done
          "cpu_s": float(np.min(cpu)), "cpu_s_all": cpu}


def provenance(benchmark: str) -> dict:
  """The fields every results JSON of this script opens with: what ran, from which commit, where."""
  return {"benchmark": benchmark, "command": " ".join(["python"] + sys.argv), "commit": git_commit(),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "versions": versions(), "hardware": hardware()}


def fitted_lengths(cells: list[dict], key: str, fit_from: int) -> list[int]:
  """The lengths an exponent is fitted over: those >= fit_from where `key` was measured."""
  return [c["L"] for c in cells if key in c and c["L"] >= fit_from]


def exponent(cells: list[dict], key: str, fit_from: int) -> float | None:
  """Least-squares slope of log(cell[key]) on log(L) over `fitted_lengths`; None with < 2 points."""
  lengths = fitted_lengths(cells, key, fit_from)
  if len(lengths) < 2:
    return None
  by_length = {c["L"]: c[key] for c in cells if c["L"] in lengths}
  x, y = np.log(lengths), np.log([by_length[L] for L in lengths])
  return float(np.polyfit(x, y, 1)[0])


# --- Step level: a whole ranker training step -------------------------------------------------

STEP_BATCH, STEP_CANDS, STEP_TASKS = 4, 16, 8
USER_VOCAB, ITEM_VOCAB = (16, 8, 4), (32, 8)   # 3 user-context tokens, 2 item features
# Each row: its model config on top of the shared width / depth (`step_config`); the SLA windows
# and L' come from the command line.
STEP_ROWS = {
    # attention_impl "xla": the C++ kernel (the ranker's CPU default) is a custom call that XLA's
    # memory and FLOP analyses cannot see into; this row is XLA's full attention, as measured so far.
    "hstu_full": dict(name="hstu_ranker", use_time_bias=True, num_time_buckets=129, user_context="tokens",
                      attention_impl="xla"),
    "ultra_sla": dict(name="ultra_hstu", sla=True, truncated_len=0),
    "ultra_sla_trunc": dict(name="ultra_hstu", sla=True, full_layers=1),
    "gact_f2": dict(name="ultra_hstu", sla=False, history_fold=2),
    "gact_f4": dict(name="ultra_hstu", sla=False, history_fold=4),
    "gact_f8": dict(name="ultra_hstu", sla=False, history_fold=8),
    "ultra_dense": dict(name="ultra_hstu", sla=False, history_fold=1),
}


def step_config(row: str, L: int, args) -> dict:
  """The model config of `row` for histories of L events (module docstring)."""
  cfg = dict(dim=64, num_blocks=2, num_heads=2, dqk=32, dv=32, max_history=L, attn_norm_len=L + 16,
             dropout=args.dropout, backend="xla", num_tasks=STEP_TASKS, user_vocab=USER_VOCAB,
             item_vocab=ITEM_VOCAB, **STEP_ROWS[row])
  if cfg["name"] == "ultra_hstu":
    cfg.update(local_window=args.local_window, global_window=args.global_window, sla_block=args.sla_block)
  if row == "ultra_sla_trunc":
    cfg["truncated_len"] = args.truncated_len
  return cfg


def step_tokens(cfg: dict, L: int) -> int:
  """Tokens the first block runs on: context + history (folded) + candidates."""
  return len(USER_VOCAB) + -(-L // cfg.get("history_fold", 1)) + STEP_CANDS


def step_batch(L: int, num_items: int, seed: int = 0) -> dict:
  """A random but valid ranking batch (tasks/ranking.py's schema): every request has exactly L
  history events, sorted times before the request time, 16 real candidates, 8 feedback labels."""
  rng = np.random.default_rng(seed)
  n, c = STEP_BATCH, STEP_CANDS
  b = dict(hist_ids=rng.integers(1, num_items, (n, L)), hist_actions=rng.integers(0, 256, (n, L)),
           hist_watch=rng.integers(1, 9, (n, L)), hist_tab=rng.integers(1, 15, (n, L)),
           hist_times=np.sort(rng.integers(0, 10**6, (n, L)), axis=1), hist_lengths=np.full(n, L),
           hist_feats=rng.integers(0, min(ITEM_VOCAB), (n, L, len(ITEM_VOCAB))),
           user_feats=rng.integers(0, min(USER_VOCAB), (n, len(USER_VOCAB))),
           request_times=np.full(n, 2 * 10**6), cand_ids=rng.integers(1, num_items, (n, c)),
           cand_tab=rng.integers(1, 15, (n, c)), cand_feats=rng.integers(0, min(ITEM_VOCAB), (n, c, len(ITEM_VOCAB))))
  b = {k: jnp.asarray(v, jnp.int32) for k, v in b.items()}
  b["cand_mask"] = jnp.ones((n, c), jnp.float32)
  b["cand_labels"] = jnp.asarray(rng.integers(0, 2, (n, c, STEP_TASKS)), jnp.int8)
  b["cand_watch_ratio"] = jnp.asarray(rng.random((n, c)), jnp.float32)
  return b


def ranking_loss(model):
  """The ranking task's own loss(params, batch, key): multi-task BCE over the real candidates, task
  weights 1, no watch head. `RankingTask.loss_fn` reads only these two attributes, so it is called
  on them instead of on a task (which would load a dataset)."""
  settings = argparse.Namespace(task_weights=np.ones(STEP_TASKS, np.float32), watch_weight=0.0)
  return RankingTask.loss_fn(settings, model)


def bench_params(model, key, batch) -> dict:
  """Parameters of `model`'s shapes, drawn N(0, 0.02²). Only the shapes are the model's (traced, not
  compiled): XLA's memory estimate and a step's time do not depend on the values, and compiling
  the init's forward pass would cost as much as compiling the step. The shapes do not depend on
  the history width, so a short batch serves."""
  shapes = jax.eval_shape(lambda k, b: model.init({"params": k, "dropout": k}, b, train=False)["params"], key, batch)
  leaves, tree = jax.tree.flatten(shapes)
  rng = np.random.default_rng(0)
  return jax.tree.unflatten(tree, [jnp.asarray(0.02 * rng.standard_normal(x.shape), x.dtype) for x in leaves])


def flops_of(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  value = (cost or {}).get("flops")
  return float(value) if value is not None else None


def measure_step(row: str, L: int, args) -> dict:
  """Compile `row`'s training step at history L -> memory, FLOPs, compile time; timed when its
  memory estimate is under the limit."""
  cfg = step_config(row, L, args)
  model = build_model(cfg, args.num_items)   # as the ranking task builds it
  batch = step_batch(L, args.num_items)
  key = jax.random.key(0)
  params = bench_params(model, key, step_batch(min(L, 64), args.num_items, seed=1))
  tx = optax.adam(1e-3)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  t0 = time.perf_counter()
  compiled = make_step(ranking_loss(model), tx, key).lower(state, batch).compile()
  m = compiled.memory_analysis()
  cell = {"row": row, "L": L, "model": cfg["name"], "tokens": step_tokens(cfg, L),
          "compile_s": time.perf_counter() - t0, "peak_bytes": peak_bytes(compiled),
          "argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
          "temp_bytes": int(m.temp_size_in_bytes), "alias_bytes": int(m.alias_size_in_bytes),
          "flops": flops_of(compiled),
          "params": int(sum(x.size for x in jax.tree.leaves(params)))}
  if cell["peak_bytes"] < args.step_limit_gb * 2**30:
    holder = {"state": state}

    def call():   # the state is donated: each step consumes the previous step's
      holder["state"], loss = compiled(holder["state"], batch)
      return loss
    cell.update(timed(call, args.iters))
  return cell


def length_label(L: int) -> str:
  return f"{L // 1024}k" if L % 1024 == 0 else str(L)


def plot_steps(record: dict, path: str) -> str:
  """Step memory and step CPU time against L, one line per row, log-log -> the PNG's path. Memory is
  drawn at every length (XLA's estimate), time only where the step ran."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, (mem_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
  rows = list(dict.fromkeys(c["row"] for c in record["cells"]))
  for row in rows:
    mine = sorted((c for c in record["cells"] if c["row"] == row), key=lambda c: c["L"])
    line, = mem_ax.plot([c["L"] for c in mine], [c["peak_bytes"] / 2**30 for c in mine], "o-", label=row)
    timed_cells = [c for c in mine if "cpu_s" in c]
    if timed_cells:
      time_ax.plot([c["L"] for c in timed_cells], [c["cpu_s"] for c in timed_cells], "o-", color=line.get_color(),
                   label=row)
  limit = record["setup"]["step_limit_gb"]
  mem_ax.axhline(limit, color="grey", ls=":", lw=1)
  mem_ax.annotate(f"timed below {limit:g} GiB", (min(c["L"] for c in record["cells"]), limit),
                  textcoords="offset points", xytext=(2, 3), fontsize=8, color="grey")
  for ax, label in ((mem_ax, "step memory (GiB, XLA estimate)"), (time_ax, "CPU time per step (s)")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("history length L (events)")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.3)
  time_ax.legend(fontsize=8)
  fig.suptitle("one ranker training step against history length (scripts/bench_long_sequences.py --level step)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def run_steps(args) -> dict:
  """--level step: every row at every length, the table, the fits, the verdicts, the JSON."""
  out = args.out or "results/bench/long_step_cpu.json"
  if args.replot:
    if not os.path.exists(out):
      raise SystemExit(f"--replot: no step results at {out} (run --level step first, or pass --out)")
    with open(out) as f:
      print(f"wrote {plot_steps(json.load(f), os.path.splitext(out)[0] + '.png')}")
    return None
  start = time.time()
  cells = []
  for row in args.rows:
    for L in args.lengths:
      c = measure_step(row, L, args)
      cells.append(c)
      step = (f"step {c['step_s'] * 1e3:9.1f} ms  cpu {c['cpu_s'] * 1e3:9.1f} ms" if "step_s" in c
              else "not run (memory over the limit)")
      print(f"{row:16s} L={L:6d}  memory {c['peak_bytes'] / 2**20:9.1f} MiB  compile {c['compile_s']:6.1f} s  "
            f"{step}", flush=True)

  fits = {}
  for row in args.rows:
    mine = [c for c in cells if c["row"] == row]
    fits[row] = {key: exponent(mine, key, args.fit_from) for key in ("step_s", "cpu_s", "peak_bytes")}
    fits[row]["timed_lengths"] = fitted_lengths(mine, "step_s", args.fit_from)
    fits[row]["memory_lengths"] = fitted_lengths(mine, "peak_bytes", args.fit_from)
  at = args.ratio_length if args.ratio_length in args.lengths else max(args.lengths)
  mem = {c["row"]: c["peak_bytes"] for c in cells if c["L"] == at}
  ratios = {f"{a}/{b}": mem[a] / mem[b] for a in ("hstu_full", "ultra_dense")
            for b in ("ultra_sla", "ultra_sla_trunc", "gact_f2", "gact_f4", "gact_f8") if a in mem and b in mem}
  tag = length_label(at)
  verdicts = {}
  for name, ratio in ((f"sla_memory_ratio_{tag}", "hstu_full/ultra_sla"),
                      (f"gact_memory_ratio_{tag}", "hstu_full/gact_f4")):
    if ratio in ratios:
      verdicts[name] = {"value": ratios[ratio], "criterion": ">= 10", "met": bool(ratios[ratio] >= 10)}
  sla_fit = fits.get("ultra_sla", {})
  if sla_fit.get("step_s") is not None:
    verdicts["sla_exponent"] = {"value": sla_fit["step_s"], "criterion": "<= 1.2", "met": bool(sla_fit["step_s"] <= 1.2),
                                "cpu_time_value": sla_fit["cpu_s"], "lengths": sla_fit["timed_lengths"]}

  print("\n| row | L | tokens | step memory (MiB) | temp (MiB) | GFLOPs | compile (s) | step (ms) | CPU time (ms) |\n"
        "|---|---|---|---|---|---|---|---|---|")
  for c in cells:
    step = f"{c['step_s'] * 1e3:.0f} | {c['cpu_s'] * 1e3:.0f}" if "step_s" in c else "not run (memory) | -"
    gflops = f"{c['flops'] / 1e9:.1f}" if c["flops"] is not None else "-"
    print(f"| {c['row']} | {c['L']} | {c['tokens']} | {c['peak_bytes'] / 2**20:.1f} | {c['temp_bytes'] / 2**20:.1f} | "
          f"{gflops} | {c['compile_s']:.1f} | {step} |")
  for row, fit in fits.items():
    parts = ([f"memory ∝ L^{fit['peak_bytes']:.2f} over L = {fit['memory_lengths']}"]
             if fit["peak_bytes"] is not None else [])
    if fit["step_s"] is not None:
      parts.append(f"wall time ∝ L^{fit['step_s']:.2f}, CPU time ∝ L^{fit['cpu_s']:.2f} over L = {fit['timed_lengths']}")
    if parts:
      print(f"{row}: " + ", ".join(parts))
  print(f"step memory ratios at L = {at}: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
  for name, v in verdicts.items():
    print(f"{name} = {v['value']:.2f} ({v['criterion']}): {'met' if v['met'] else 'MISSED'}")

  record = {
      **provenance("long_step"),
      "setup": {"what": "one ranker training step: forward + backward of the ranking task's multi-task BCE "
                        "wrt all parameters + Adam update (train/step.make_step, state donated), dropout in "
                        "train mode",
                "step_memory": "XLA's compiled memory analysis: argument + output + temp - alias bytes",
                "requests": STEP_BATCH, "candidates": STEP_CANDS, "tasks": STEP_TASKS,
                "num_items": args.num_items, "user_vocab": list(USER_VOCAB), "item_vocab": list(ITEM_VOCAB),
                "dropout": args.dropout, "local_window": args.local_window, "global_window": args.global_window,
                "sla_block": args.sla_block, "truncated_len": args.truncated_len,
                "step_limit_gb": args.step_limit_gb, "iters": args.iters, "lengths": args.lengths,
                "fit_from": args.fit_from,
                "models": {row: dict(step_config(row, 0, args), max_history="L", attn_norm_len="L + 16")
                           for row in args.rows}},
      "cells": cells, "exponents": fits, "ratio_length": at, "memory_ratios": ratios, "verdicts": verdicts,
      "wall_s": time.time() - start,
  }
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out, "w") as f:
    json.dump(record, f, indent=1)
  print(f"wrote {out} and {plot_steps(record, os.path.splitext(out)[0] + '.png')} ({record['wall_s']:.0f} s)")
  return record


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--level", choices=("layer", "step"), default="layer",
                      help="one attention layer (default) or a whole ranker training step")
  parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192, 16384])
  parser.add_argument("--fit_from", type=int, default=2048,
                      help="fit the exponents over lengths >= this (issue 18's criterion: 2k to 16k)")
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--dense_lengths", type=int, nargs="+", default=[2048, 8192],
                      help="layer level: lengths at which the dense path is compiled for its memory estimate")
  parser.add_argument("--dense_limit_gb", type=float, default=1.5,
                      help="layer level: time the dense path only where its estimate is below this")
  parser.add_argument("--rows", nargs="+", choices=tuple(STEP_ROWS), default=list(STEP_ROWS),
                      help="step level: the models measured")
  parser.add_argument("--step_limit_gb", type=float, default=3.0,
                      help="step level: time a step only where its memory estimate is below this")
  parser.add_argument("--num_items", type=int, default=20_000, help="step level: item table rows")
  parser.add_argument("--dropout", type=float, default=0.3, help="step level: the models' dropout (train mode)")
  parser.add_argument("--local_window", type=int, default=256, help="step level: SLA K1")
  parser.add_argument("--global_window", type=int, default=32, help="step level: SLA K2")
  parser.add_argument("--sla_block", type=int, default=128, help="step level: query rows per SLA block")
  parser.add_argument("--truncated_len", type=int, default=1024, help="step level: L' of ultra_sla_trunc")
  parser.add_argument("--ratio_length", type=int, default=8192,
                      help="step level: the L at which the memory ratios are read (else the largest)")
  parser.add_argument("--replot", action="store_true",
                      help="step level: only redraw the PNG from the JSON at --out (no measuring)")
  parser.add_argument("--out", default=None,
                      help="default results/bench/long_sequences_cpu.json (layer), long_step_cpu.json (step)")
  args = parser.parse_args(argv)
  if min(args.lengths) < 1:
    parser.error(f"--lengths must be positive, got {args.lengths}")
  if args.fit_from > max(args.lengths):
    parser.error(f"--fit_from {args.fit_from} is above every --lengths value {args.lengths}: nothing to fit")
  if args.replot and args.level != "step":
    parser.error("--replot redraws the step level's PNG: use it with --level step")
  if args.level == "step":
    return run_steps(args)
  args.out = args.out or "results/bench/long_sequences_cpu.json"
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

  fits = {impl: {key: exponent([c for c in cells if c["impl"] == impl], key, args.fit_from)
                for key in ("step_s", "cpu_s")} for impl in ("sla_blocked", "linear_hstu")}
  print("\n| impl | L | step (ms) | CPU time (ms) | peak memory (MiB) |\n|---|---|---|---|---|")
  for c in cells:
    step = f"{c['step_s'] * 1e3:.1f} | {c['cpu_s'] * 1e3:.1f}" if "step_s" in c else "not run (memory) | -"
    print(f"| {c['impl']} | {c['L']} | {step} | {c['peak_bytes'] / 2**20:.1f} |")
  for impl, fit in fits.items():
    if fit["step_s"] is not None:   # None: fewer than two lengths from --fit_from on
      print(f"{impl}: wall time ∝ L^{fit['step_s']:.2f}, CPU time ∝ L^{fit['cpu_s']:.2f} "
            f"over L = {[L for L in args.lengths if L >= args.fit_from]}")
  record = {
      **provenance("long_sequences"),
      "setup": {"batch": B, "heads": H, "d": D, "dtype": "float32", "mask": str(SLA), "sla_block": BLOCK,
                "linear_chunk": 64, "iters": args.iters, "fit_from": args.fit_from,
                "what": "one attention layer, forward + backward"},
      "cells": cells, "time_exponent": fits, "wall_s": time.time() - start,
  }
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=1)
  print(f"wrote {args.out} ({record['wall_s']:.0f} s)")
  return record


if __name__ == "__main__":
  main()
