"""Training-step benchmark at the ML-1M reference configuration (SASRec and HSTU).

    python scripts/bench_train.py [--steps 20] [--models hstu,sasrec,hstu_large] [--out results/bench/train_cpu.json]
                                  [--peer_json /tmp/peer/result.json]

For each model it times, on real ML-1M batches when ../shared/data/ml-1m exists (otherwise synthetic
batches of the same shape): producing a batch (input), the loss alone (forward), loss + gradients
(forward + backward), and the whole jitted train step (+ Adam update). Backward and optimizer times
are the differences. It also reports real (non-padding) tokens/s, examples/s, FLOPs per step from
XLA's cost analysis of the plain step (dense attention, XLA loss: the work the step stands for),
utilisation against a matmul peak measured in the same run, and peak RSS. With the fused C++
loss kernel, "forward" includes the loss's backward (the kernel computes both in one pass).
With --run_peer it first times the PyTorch reference on the same machine through
../shared/tools/peer-hstu/run.sh (as shipped, and with the tuned allocator the peer's README
describes), so both sides of the ratio come from one invocation; --peer_json reuses a JSON that
run.sh wrote earlier instead.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recjax import cpu_allocator  # noqa: E402

cpu_allocator.tune()   # as experiments/run.py does, before JAX starts its threads

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import hstu_large_ml1m, hstu_ml1m, sasrec_ml1m  # noqa: E402
from recjax.data import pipeline, splits  # noqa: E402
from recjax.data.types import UserSequences  # noqa: E402
from recjax.models import build_model, init_params  # noqa: E402
from recjax.train import results  # noqa: E402
from recjax.train.loop import resolve_model_config  # noqa: E402
from recjax.train.state import TrainState, make_optimizer  # noqa: E402
from recjax.train.step import loss_fn, make_train_step  # noqa: E402

CONFIGS = {"hstu": hstu_ml1m, "sasrec": sasrec_ml1m, "hstu_large": hstu_large_ml1m}
PEER_RUN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "shared", "tools", "peer-hstu", "run.sh")
TUNED_ALLOCATOR = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
SHARED_ML1M = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "shared", "data", "ml-1m")


def load_sequences() -> tuple[UserSequences, str]:
  if os.path.isdir(SHARED_ML1M):
    from recjax.data.movielens import load_movielens  # pylint: disable=import-outside-toplevel
    return load_movielens("ml-1m", SHARED_ML1M), "ml-1m (real sequences)"
  # Same shapes as ML-1M: 6,040 users, lengths ~ lognormal with median 96, 3,953 item rows.
  rng = np.random.default_rng(0)
  lens = np.clip(rng.lognormal(np.log(96), 0.9, 6040).astype(int), 20, 2314)
  items = rng.integers(1, 3953, lens.sum()).astype(np.int32)
  offsets = np.concatenate([[0], np.cumsum(lens)])
  return UserSequences(np.arange(1, 6041), offsets, items, None, 3953, "synthetic ML-1M-shaped"), \
      "synthetic, ML-1M-shaped"


def timed(fn, reps):
  out = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t)
  return out


def matmul_peak_gflops(n=2048, reps=10):
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  t = min(timed(lambda: f(a), reps))
  return 2 * n ** 3 / t / 1e9


def bench_model(name, seqs, steps, warmup):
  config = CONFIGS[name].get_config()
  model_cfg, _ = resolve_model_config(config, seqs)
  model = build_model(model_cfg, seqs.num_items)
  tc = config.train
  tx = make_optimizer(tc)
  ex = splits.train_examples(seqs, config.data.max_len, config.data.protocol)
  ds = pipeline.train_dataset(ex, batch_size=tc.batch_size, num_epochs=2, seed=0,
                              token_bucket=config.loss.token_bucket)
  n = warmup + steps
  t0 = time.perf_counter()
  batches = [ds[i] for i in range(n)]
  input_s = (time.perf_counter() - t0) / n
  key = jax.random.key(0, impl=tc.prng_impl)
  params = init_params(model, key, batches[0])
  catalogue = jnp.asarray(seqs.catalogue(), jnp.int32)
  fwd = jax.jit(lambda p, b, k: loss_fn(p, model, b, k, config.loss, catalogue))
  fwd_bwd = jax.jit(lambda p, b, k: jax.value_and_grad(loss_fn)(p, model, b, k, config.loss, catalogue))
  step = make_train_step(model, tx, config.loss, seqs.catalogue(), key)
  # The step donates its state: give it its own copy of the parameters.
  state = TrainState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params), tx.init(params))
  # FLOPs of the *plain* step (dense attention, XLA loss), from XLA's cost analysis: the work the
  # step stands for. The fast step's own count would leave out the C++ kernel (opaque to XLA) and
  # count both sides of every skipped-tile branch.
  plain_cfg = config.loss.copy_and_resolve_references()
  plain_cfg.impl = "xla"
  plain_model = build_model(dict(model_cfg, attention_tiling=False), seqs.num_items)
  plain_step = make_train_step(plain_model, tx, plain_cfg, seqs.catalogue(), key)
  flops = plain_step.lower(state, batches[0]).compile().cost_analysis().get("flops", float("nan"))

  # Warm up: compile every token bucket these batches use.
  for b in batches:
    jax.block_until_ready(fwd(params, b, key))
    jax.block_until_ready(fwd_bwd(params, b, key))
  for b in batches[:warmup]:
    state, loss = step(state, b)
  jax.block_until_ready(loss)
  measured = batches[warmup:]
  t_fwd, t_fb, t_step = [], [], []
  for b in measured:
    t_fwd += timed(lambda: fwd(params, b, key), 1)
    t_fb += timed(lambda: fwd_bwd(params, b, key), 1)
  for b in measured:
    t = time.perf_counter()
    state, loss = step(state, b)
    jax.block_until_ready(loss)
    t_step.append(time.perf_counter() - t)
  med = statistics.median
  real_tokens = float(np.mean([b["token_weight"].sum() for b in measured]))
  return {
      "model": name, "config": config.name,
      "batch_size": tc.batch_size, "max_len": config.data.max_len,
      "num_negatives": config.loss.num_negatives,
      "step_s_median": med(t_step), "step_s_min": min(t_step), "step_s_all": [round(x, 4) for x in t_step],
      "input_s": input_s, "forward_s": med(t_fwd), "backward_s": med(t_fb) - med(t_fwd),
      "optimizer_s": med(t_step) - med(t_fb),
      "real_tokens_per_step": real_tokens,
      "tokens_per_s": real_tokens / med(t_step),
      "examples_per_s": tc.batch_size / med(t_step),
      "flops_per_step": flops,
      "achieved_gflops": flops / med(t_step) / 1e9,
      "final_loss": float(loss),
  }


PEER_FIELDS = ("step_s_median", "step_s_min", "tokens_per_s", "torch_version", "peer_commit", "cpu_model",
               "allocator_env", "anomaly_detection", "date", "peak_rss_mb")


def run_peer(tuned_allocator: bool) -> dict:
  """Times the reference trainer with peer-hstu/run.sh (needs PEER_GIT_DIR once; see its README)."""
  out = os.path.join(tempfile.mkdtemp(prefix="peer-"), "result.json")
  env = dict(os.environ, PEER_OUT=out)
  if tuned_allocator:
    env["GLIBC_TUNABLES"] = TUNED_ALLOCATOR
  print(f"timing the PyTorch reference ({'tuned' if tuned_allocator else 'default'} allocator) ...", flush=True)
  subprocess.run(["bash", PEER_RUN], env=env, check=True, stdout=subprocess.DEVNULL)
  return json.load(open(out))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--models", default="hstu,sasrec")
  ap.add_argument("--out", default="results/bench/train_cpu.json")
  ap.add_argument("--peer_json", default=None, help="peer-hstu result JSON measured on this machine")
  ap.add_argument("--run_peer", action="store_true", help="time the PyTorch reference first (peer-hstu)")
  args = ap.parse_args()

  peer = peer_tuned = None
  if args.run_peer:
    peer, peer_tuned = run_peer(False), run_peer(True)
  elif args.peer_json:
    peer = json.load(open(args.peer_json))

  seqs, data_label = load_sequences()
  peak = matmul_peak_gflops()
  rows = [bench_model(m, seqs, args.steps, args.warmup) for m in args.models.split(",")]
  peak_after = matmul_peak_gflops()
  peak = max(peak, peak_after)
  for r in rows:
    r["utilisation_vs_matmul_peak"] = r["achieved_gflops"] / peak
    if peer and r["model"] == "hstu":
      r["peer_step_s_median"] = peer["step_s_median"]
      r["speedup_vs_peer"] = peer["step_s_median"] / r["step_s_median"]
    if peer_tuned and r["model"] == "hstu":
      r["peer_tuned_allocator_step_s_median"] = peer_tuned["step_s_median"]
      r["speedup_vs_peer_tuned_allocator"] = peer_tuned["step_s_median"] / r["step_s_median"]
  rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  record = {
      "kind": "bench_train", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "data": data_label, "commit": results.git_commit(), "versions": results.versions(),
      "hardware": results.hardware(), "matmul_peak_gflops": peak, "peak_rss_mb": rss_mb,
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows,
      "peer": peer and {k: peer.get(k) for k in PEER_FIELDS},
      "peer_tuned_allocator": peer_tuned and {k: peer_tuned.get(k) for k in PEER_FIELDS},
  }
  hdr = (f"{'model':11s} {'step ms':>8s} {'input':>7s} {'fwd':>7s} {'bwd':>7s} {'opt':>7s} {'tok/s':>8s} "
         f"{'ex/s':>7s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'util':>6s} {'vs peer':>8s}")
  hw = record["hardware"]
  print(f"data: {data_label}; matmul peak {peak:.0f} GFLOP/s; peak RSS {rss_mb:.0f} MB; {hw['cpu']}; "
        f"malloc tuned {hw['malloc_tuned']}, native kernels {hw['native_kernels']}")
  print(hdr)
  for r in rows:
    vs = f"{r['speedup_vs_peer']:.1f}x" if "speedup_vs_peer" in r else "-"
    if "speedup_vs_peer_tuned_allocator" in r:
      vs += f" ({r['speedup_vs_peer_tuned_allocator']:.1f}x tuned)"
    print(f"{r['model']:11s} {r['step_s_median']*1e3:8.1f} {r['input_s']*1e3:7.1f} {r['forward_s']*1e3:7.1f} "
          f"{r['backward_s']*1e3:7.1f} {r['optimizer_s']*1e3:7.1f} {r['tokens_per_s']:8.0f} {r['examples_per_s']:7.1f} "
          f"{r['flops_per_step']/1e9:7.2f} {r['achieved_gflops']:8.1f} {r['utilisation_vs_matmul_peak']:6.1%} {vs:>8s}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
