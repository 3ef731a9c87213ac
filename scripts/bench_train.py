"""Training-step benchmark: retrieval at the ML-1M reference configuration (SASRec and HSTU,
packed and not) and the ranking step on the default synthetic ranking world (HSTU ranker, DLRM, DIN).

    python scripts/bench_train.py [--models hstu,hstu_unpacked,hstu_xla_attention,sasrec,hstu_large,
                                            hstu_large_unpacked,hstu_large_xla_attention,hstu_ranker,dlrm,din]
                                  [--steps 5] [--rounds 4] [--out results/bench/train_cpu.json]
                                  [--peer_json /tmp/peer/result.json] [--run_peer]

Each model row runs in its own worker process (so its peak RSS is its own, and one model's
allocator state never slows another), on real ML-1M batches when ../shared/data/ml-1m exists
(otherwise synthetic batches of the same shape). The workers compile and warm up first; then the
parent asks them for timing rounds in turn, alternating the order every round, so that a noisy
machine's slow phases hit all rows alike. A round times, on the same `--steps` batches in every
worker: the loss alone (forward; with the fused C++ loss kernel this includes the loss's own
backward, computed in the same pass), loss + gradients (forward + backward), the optimizer update
alone (Adam on the gradients, jitted by itself), and the whole jitted train step. Backward is the
difference of the first two medians; every other part is timed on its own.

Ranking rows (`hstu_ranker`, `dlrm`, `din`, `kunlun`, `interformer_lite`: configs/*_rank_synthetic.py;
`kunlun_<row>`: Kunlun's ablation rows, `--models kunlun_ablation` for all of them) time the ranking task's
own loss (`tasks/ranking.py`: multi-task BCE over the real candidates) and the trainer's step
(`train.step.make_step`) on the task's training batches of the default synthetic world, generated
once by the parent into a temporary folder that the workers share. A ranking batch is
`batch_size` requests of `request_size` candidates: `examples_per_s` counts requests,
`candidates_per_s` real candidates, `tokens_per_s` the real history and candidate tokens.

`*_unpacked` rows are the same config with `model.token_packing=False`; the JSON's `packing` entry
gives, per HSTU config, the ratio of the unpacked to the packed step time per round (median and
range), so the speed-up is read from one invocation.

FLOPs: `flops_per_step` is the work of the step actually timed: XLA's cost analysis of that step
(its unoptimised HLO, so no second compile) plus the C++ kernels' FLOPs, which XLA cannot see: the
fused loss (`recjax.scaling.flops.sampled_softmax_flops` over the real tokens) and, on rows whose
attention runs in the C++ kernel (`model.attention_impl`, "auto" on CPU), the attention's forward and
backward over the real query-key pairs (`causal_attention_flops`). Ranking rows whose attention runs
in the kernel are counted as the same step with attention in XLA (dense scores: an upper bound). XLA counts a
conditional as its larger branch, so attention tiles that the tiled path skips are counted as
computed: an upper bound, and the utilisation (`flops_per_step` / step time / the matmul peak
measured in the same run) is one too. `plain_flops_per_step` is XLA's count for the padded dense
step with the XLA loss (the work the step stands for), for comparison only.

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
import shutil
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
import optax  # noqa: E402

from configs import din_rank_synthetic, dlrm_rank_synthetic, hstu_rank_synthetic  # noqa: E402
from configs import interformer_lite_rank_synthetic, kunlun_rank_synthetic  # noqa: E402
from configs import hstu_large_ml1m, hstu_ml1m, sasrec_ml1m  # noqa: E402
from recjax.data import pipeline, splits  # noqa: E402
from recjax.data.types import UserSequences  # noqa: E402
from recjax.models import build_model, init_params  # noqa: E402
from recjax import tasks  # noqa: E402
from recjax.scaling import mfu  # noqa: E402
from recjax.layers import native_attention  # noqa: E402
from recjax.scaling.flops import causal_attention_flops, sampled_softmax_flops  # noqa: E402
from recjax.train import results  # noqa: E402
from recjax.train.loop import flop_counting_step, resolve_model_config  # noqa: E402
from recjax.train.state import TrainState, make_optimizer  # noqa: E402
from recjax.train.step import loss_fn, make_step, make_train_step  # noqa: E402
from recjax import compile_options  # noqa: E402


# Row name -> (config module, model overrides). HSTU rows come in pairs: packed (the config's
# default) and `_unpacked`; `_xla_attention` rows time the same step with attention in XLA (tiled),
# not in the C++ kernel.
ROWS = {
    "hstu": (hstu_ml1m, {}),
    "hstu_unpacked": (hstu_ml1m, {"token_packing": False}),
    "sasrec": (sasrec_ml1m, {}),
    "hstu_large": (hstu_large_ml1m, {}),
    "hstu_large_unpacked": (hstu_large_ml1m, {"token_packing": False}),
    "hstu_xla_attention": (hstu_ml1m, {"attention_impl": "xla"}),
    "hstu_large_xla_attention": (hstu_large_ml1m, {"attention_impl": "xla"}),
}
# Ranking rows: row name -> (config module, config argument); the task is config.task = "ranking".
# Kunlun's rows are its ablation study's (configs/kunlun_rank_synthetic.py ABLATIONS, one component
# removed each) and InterFormer-lite: `--models kunlun,kunlun_no_gdpa,...` times them side by side
# (scripts/make_readme_tables.py reads examples/s and utilisation from results/bench/kunlun_ablation_cpu.json).
RANKING_ROWS = {"hstu_ranker": (hstu_rank_synthetic, None), "dlrm": (dlrm_rank_synthetic, None),
                "din": (din_rank_synthetic, None), "kunlun": (kunlun_rank_synthetic, None),
                "interformer_lite": (interformer_lite_rank_synthetic, None),
                **{f"kunlun_{row}": (kunlun_rank_synthetic, row) for row in kunlun_rank_synthetic.ABLATIONS}}
KUNLUN_ABLATION_ROWS = ["kunlun", *(f"kunlun_{row}" for row in kunlun_rank_synthetic.ABLATIONS)]
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


def loss_kernel_flops(batch, num_negatives: int, dim: int) -> float:
  """FLOPs of the fused C++ sampled-softmax kernel (invisible to XLA), by the shared count
  (`scaling.flops.sampled_softmax_flops`, loss and both gradients) over the batch's real tokens:
  the kernel skips weight-0 rows."""
  return sampled_softmax_flops(int(np.sum(batch["token_weight"] > 0)), num_negatives, dim, backward=True)


def attention_kernel_flops(batch, model) -> float:
  """FLOPs of the C++ causal-attention kernel (invisible to XLA) in one training step: every block's
  forward and backward over the real query-key pairs (`scaling.flops.causal_attention_flops`)."""
  return model.num_blocks * causal_attention_flops(np.asarray(batch["lengths"]), model.num_heads, model.dqk,
                                                   model.dv, backward=True)


class Worker:
  """One benchmark row: its model, jitted functions and batches, in this (worker) process."""

  def __init__(self, name: str, steps: int, warmup: int, data_dir: str | None = None):
    if name in RANKING_ROWS:
      batches = self._build_ranking(name, steps, warmup, data_dir)
    else:
      batches = self._build_retrieval(name, steps, warmup)
    # Warm up: compile every token bucket these batches use, for every timed function.
    grads = None
    for b in batches:
      jax.block_until_ready(self.fwd(self.params, b, self.key))
      _, grads = jax.block_until_ready(self.fwd_bwd(self.params, b, self.key))
    self.grads = grads
    jax.block_until_ready(self.update(grads, self.opt_state, self.params))
    for b in batches:
      self.state, loss = self.step(self.state, b)
    jax.block_until_ready(loss)

  def _timed_functions(self, loss, tx, key, params) -> None:
    """fwd / fwd_bwd / update / step for `loss(params, batch, key)` (the ranking rows)."""
    self.key, self.params = key, params
    # Every timed part compiled as the training step is (recjax/compile_options.py).
    opts = compile_options.step_options()
    self.fwd = jax.jit(loss, compiler_options=opts)
    self.fwd_bwd = jax.jit(jax.value_and_grad(loss), compiler_options=opts)

    def update(grads, opt_state, params):
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    self.update = jax.jit(update, compiler_options=opts)
    self.step = make_step(loss, tx, key)
    self.opt_state = tx.init(params)
    # The step donates its state: give it its own copy of the parameters.
    self.state = TrainState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params), tx.init(params))

  def _build_ranking(self, name: str, steps: int, warmup: int, data_dir: str) -> list[dict]:
    """The ranking task's loss and step on its own training batches (configs/<name>_rank_synthetic)."""
    module, arg = RANKING_ROWS[name]
    config = module.get_config(arg)
    task = tasks.make_task(config, data_dir)
    model, _, _ = task.build_model()
    tc = config.train
    ds = task.train_dataset(tc.batch_size, 2, 0)
    t0 = time.perf_counter()
    batches = [ds[i] for i in range(warmup + steps)]
    self.input_s = (time.perf_counter() - t0) / len(batches)
    batches = [cpu_allocator.on_device(b) for b in batches]   # copied in once, as the loop does per step
    self.warm, self.measured = batches[:warmup], batches[warmup:]
    key = jax.random.key(0, impl=tc.prng_impl)
    tx = make_optimizer(tc)
    self._timed_functions(task.loss_fn(model), tx, key, init_params(model, key, batches[0]))
    b0 = self.measured[0]
    candidates = float(np.mean([b["cand_mask"].sum() for b in self.measured]))
    history = float(np.mean([b["hist_lengths"].sum() for b in self.measured]))
    native_attn = native_attention.resolve_impl(getattr(model, "attention_impl", "xla"))
    # XLA cannot see into the C++ attention kernel: count the same step on XLA attention, as the trainer does.
    flops = _flops(flop_counting_step(self.step, model, task, None, tx, key).lower(self.state, b0))
    self.info = {
        "model": name, "config": config.name, "model_overrides": {}, "task": "ranking",
        "token_packing": False, "batch_size": tc.batch_size, "max_len": config.ranking.history_len,
        "request_size": config.ranking.request_size, "num_negatives": None,
        "data": "synthetic ranking world (WorldConfig defaults, seed 0)", "input_s": self.input_s,
        "real_candidates_per_step": candidates, "real_tokens_per_step": history + candidates,
        "xla_flops_per_step": flops, "loss_kernel_flops_per_step": 0.0, "loss_impl": "xla (multi-task BCE)",
        "plain_flops_per_step": flops,
        "attention_impl": "native (C++; FLOPs counted on the XLA twin, dense)" if native_attn else "xla",
    }
    return batches

  def _build_retrieval(self, name: str, steps: int, warmup: int) -> list[dict]:
    """The retrieval loss (sampled softmax) and step on ML-1M batches (module docstring)."""
    from recjax import losses  # pylint: disable=import-outside-toplevel
    module, overrides = ROWS[name]
    config = module.get_config()
    seqs, self.data_label = load_sequences()
    model_cfg, _ = resolve_model_config(config, seqs)
    model_cfg.update(overrides)
    model = build_model(model_cfg, seqs.num_items)
    tc = config.train
    tx = make_optimizer(tc)
    ex = splits.train_examples(seqs, config.data.max_len, config.data.protocol)
    ds = pipeline.train_dataset(ex, batch_size=tc.batch_size, num_epochs=2, seed=0,
                                token_bucket=config.loss.token_bucket)
    t0 = time.perf_counter()
    batches = [ds[i] for i in range(warmup + steps)]
    self.input_s = (time.perf_counter() - t0) / len(batches)
    batches = [cpu_allocator.on_device(b) for b in batches]   # copied in once, as the loop does per step
    self.warm, self.measured = batches[:warmup], batches[warmup:]
    key = jax.random.key(0, impl=tc.prng_impl)
    self.key = key
    self.params = init_params(model, key, batches[0])
    catalogue = jnp.asarray(seqs.catalogue(), jnp.int32)
    # Every timed part compiled as the training step is (recjax/compile_options.py).
    opts = compile_options.step_options()
    self.fwd = jax.jit(lambda p, b, k: loss_fn(p, model, b, k, config.loss, catalogue), compiler_options=opts)
    self.fwd_bwd = jax.jit(lambda p, b, k: jax.value_and_grad(loss_fn)(p, model, b, k, config.loss, catalogue),
                           compiler_options=opts)

    def update(grads, opt_state, params):
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    self.update = jax.jit(update, compiler_options=opts)
    self.step = make_train_step(model, tx, config.loss, seqs.catalogue(), key)
    self.opt_state = tx.init(self.params)
    # The step donates its state: give it its own copy of the parameters.
    self.state = TrainState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, self.params), tx.init(self.params))
    native = config.loss.kind == "sampled_softmax" and losses.resolve_impl(config.loss.get("impl", "auto")) == "native"
    native_attn = native_attention.resolve_impl(getattr(model, "attention_impl", "xla"))
    b0 = self.measured[0]
    self.info = {
        "model": name, "config": config.name, "model_overrides": overrides,
        "token_packing": bool(getattr(model, "token_packing", False)),
        "batch_size": tc.batch_size, "max_len": config.data.max_len, "num_negatives": config.loss.num_negatives,
        "data": self.data_label, "input_s": self.input_s,
        "real_tokens_per_step": float(np.mean([b["token_weight"].sum() for b in self.measured])),
        # Cost analysis of the unoptimised HLO (lowering only, no second compile), on the first
        # measured batch (its token bucket fixes the shapes).
        "xla_flops_per_step": _flops(self.step.lower(self.state, b0)),
        "loss_kernel_flops_per_step": loss_kernel_flops(b0, config.loss.num_negatives, config.model.dim) if native else 0.0,
        "loss_impl": "native (fused C++)" if native else "xla",
        "attention_impl": "native (C++)" if native_attn else "xla",
        "attention_kernel_flops_per_step": attention_kernel_flops(b0, model) if native_attn else 0.0,
    }
    plain_cfg = config.loss.copy_and_resolve_references()
    plain_cfg.impl = "xla"
    plain_model = build_model(dict(model_cfg, attention_tiling=False, **(
        {"token_packing": False} if "token_packing" in type(model).__dataclass_fields__ else {})), seqs.num_items)
    plain_step = make_train_step(plain_model, tx, plain_cfg, seqs.catalogue(), key)
    self.info["plain_flops_per_step"] = _flops(plain_step.lower(self.state, b0))
    return batches

  def round(self) -> dict:
    """Times every measured batch once per part; the step last, as training runs it."""
    out = {"forward": [], "forward_backward": [], "optimizer": [], "step": []}
    for b in self.measured:
      out["forward"] += timed(lambda: self.fwd(self.params, b, self.key), 1)
      out["forward_backward"] += timed(lambda: self.fwd_bwd(self.params, b, self.key), 1)
    out["optimizer"] = timed(lambda: self.update(self.grads, self.opt_state, self.params), len(self.measured))
    for b in self.measured:
      t = time.perf_counter()
      self.state, loss = self.step(self.state, b)
      jax.block_until_ready(loss)
      out["step"].append(time.perf_counter() - t)
    self.final_loss = float(loss)
    return out

  def finish(self) -> dict:
    return {"final_loss": self.final_loss,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _flops(lowered) -> float:
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def worker_main(name: str, steps: int, warmup: int, data_dir: str | None):
  """The worker protocol: one JSON line when ready, then one per `round` request, then `done`."""
  w = Worker(name, steps, warmup, data_dir)
  print(json.dumps({"ready": w.info}), flush=True)
  for line in sys.stdin:
    cmd = line.strip()
    if cmd == "round":
      print(json.dumps({"round": w.round()}), flush=True)
    elif cmd == "done":
      print(json.dumps({"done": w.finish()}), flush=True)
      return


def _reply(proc, what: str) -> dict:
  while True:
    line = proc.stdout.readline()
    if not line:
      raise RuntimeError(f"benchmark worker exited (rc {proc.wait()}) before sending {what!r}")
    if line.startswith("{"):
      msg = json.loads(line)
      if what in msg:
        return msg[what]


def prepare_ranking_world(names) -> str | None:
  """Generates the synthetic ranking world once into a temporary workdir (the ranking workers read
  it there instead of each generating its own copy at the same time); None without ranking rows."""
  if not any(n in RANKING_ROWS for n in names):
    return None
  from recjax.data import registry  # pylint: disable=import-outside-toplevel
  workdir = tempfile.mkdtemp(prefix="bench-ranking-")
  registry.load_dataset(hstu_rank_synthetic.get_config().data, cache_dir=os.path.join(workdir, "data"))
  return workdir


def run_rows(names, steps: int, warmup: int, rounds: int) -> list[dict]:
  """Starts one worker per row (they compile side by side), then alternates timing rounds."""
  data_dir = prepare_ranking_world(names)
  extra = ["--data_dir", data_dir] if data_dir else []
  procs = {n: subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", n, "--steps", str(steps),
                                "--warmup", str(warmup)] + extra,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
           for n in names}
  info = {}
  for n, p in procs.items():
    info[n] = _reply(p, "ready")
    print(f"{n}: compiled and warm", flush=True)
  times = {n: [] for n in names}
  for r in range(rounds):
    order = names if r % 2 == 0 else names[::-1]
    for n in order:
      procs[n].stdin.write("round\n")
      procs[n].stdin.flush()
      times[n].append(_reply(procs[n], "round"))
    print(f"round {r + 1}/{rounds}: " + ", ".join(
        f"{n} {statistics.median(times[n][-1]['step']) * 1e3:.0f} ms" for n in names), flush=True)
  rows = []
  for n in names:
    procs[n].stdin.write("done\n")
    procs[n].stdin.flush()
    done = _reply(procs[n], "done")
    procs[n].wait()
    rows.append(summarise(info[n], times[n], done))
  if data_dir:
    shutil.rmtree(data_dir, ignore_errors=True)
  return rows


def summarise(info: dict, rounds: list[dict], done: dict) -> dict:
  med = statistics.median
  every = {k: [t for r in rounds for t in r[k]] for k in rounds[0]}
  step = med(every["step"])
  flops = info["xla_flops_per_step"] + info["loss_kernel_flops_per_step"] + info.get("attention_kernel_flops_per_step", 0.0)
  if "real_candidates_per_step" in info:
    done = dict(done, candidates_per_s=info["real_candidates_per_step"] / step)
  return dict(
      info,
      step_s_median=step, step_s_min=min(every["step"]), step_s_max=max(every["step"]),
      step_s_round_medians=[round(med(r["step"]), 4) for r in rounds],
      step_s_all=[round(x, 4) for x in every["step"]],
      forward_s=med(every["forward"]), backward_s=med(every["forward_backward"]) - med(every["forward"]),
      optimizer_s=med(every["optimizer"]), optimizer_s_min=min(every["optimizer"]),
      tokens_per_s=info["real_tokens_per_step"] / step, examples_per_s=info["batch_size"] / step,
      flops_per_step=flops, achieved_gflops=flops / step / 1e9, **done)


def packing_speedups(rows: list[dict]) -> dict:
  """Per HSTU config: unpacked / packed step time, per round (both timed in the same round)."""
  by_name = {r["model"]: r for r in rows}
  out = {}
  for name, r in by_name.items():
    other = by_name.get(name + "_unpacked")
    if other is None:
      continue
    per_round = [u / p for u, p in zip(other["step_s_round_medians"], r["step_s_round_medians"])]
    out[name] = {"speedup_of_medians": other["step_s_median"] / r["step_s_median"],
                 "speedup_per_round_median": statistics.median(per_round),
                 "speedup_per_round_min": min(per_round), "speedup_per_round_max": max(per_round),
                 "speedup_per_round": [round(x, 3) for x in per_round]}
  return out


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
  ap.add_argument("--steps", type=int, default=5, help="batches timed per round (the same in every row)")
  ap.add_argument("--rounds", type=int, default=4, help="timing rounds, rows alternating within each")
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--models", default="hstu,hstu_unpacked,hstu_xla_attention,sasrec,hstu_large,hstu_large_unpacked,hstu_large_xla_attention,hstu_ranker,dlrm,din",
                  help="rows, comma-separated; 'kunlun_ablation' = Kunlun and each of its ablation rows")
  ap.add_argument("--out", default="results/bench/train_cpu.json")
  ap.add_argument("--peer_json", default=None, help="peer-hstu result JSON measured on this machine")
  ap.add_argument("--run_peer", action="store_true", help="time the PyTorch reference first (peer-hstu)")
  ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)   # internal: one row's process
  ap.add_argument("--data_dir", default=None, help=argparse.SUPPRESS)  # internal: the ranking world
  args = ap.parse_args()
  if args.worker:
    worker_main(args.worker, args.steps, args.warmup, args.data_dir)
    return
  names = [n for m in args.models.split(",") for n in (KUNLUN_ABLATION_ROWS if m == "kunlun_ablation" else [m])]
  unknown = sorted(set(names) - set(ROWS) - set(RANKING_ROWS))
  if unknown:
    ap.error(f"unknown --models {unknown}; known: {sorted(ROWS) + sorted(RANKING_ROWS)}")

  peer = peer_tuned = None
  if args.run_peer:
    peer, peer_tuned = run_peer(False), run_peer(True)
  elif args.peer_json:
    peer = json.load(open(args.peer_json))

  rows = run_rows(names, args.steps, args.warmup, args.rounds)
  # The workers are idle (waiting on their pipes) or gone: the peak is measured on a quiet process.
  peak = mfu.measure_matmul_peak(2048, repeats=20) / 1e9   # the library's measurement (best of 20)
  for r in rows:
    r["utilisation_vs_matmul_peak"] = r["achieved_gflops"] / peak
    if peer and r["model"] == "hstu":
      r["peer_step_s_median"] = peer["step_s_median"]
      r["speedup_vs_peer"] = peer["step_s_median"] / r["step_s_median"]
    if peer_tuned and r["model"] == "hstu":
      r["peer_tuned_allocator_step_s_median"] = peer_tuned["step_s_median"]
      r["speedup_vs_peer_tuned_allocator"] = peer_tuned["step_s_median"] / r["step_s_median"]
  record = {
      "kind": "bench_train", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "data": rows[0]["data"], "commit": results.git_commit(), "versions": results.versions(),
      "hardware": results.hardware(), "matmul_peak_gflops": peak,
      "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
      "peak_rss_note": "each row runs in its own process: peak_rss_mb per row is that process's; the top-level "
                       "value is the largest of them",
      "flops_note": "flops_per_step = XLA cost analysis of the timed step (a skipped tile's branch counted as "
                    "computed: an upper bound) + the fused loss kernel's analytic FLOPs; plain_flops_per_step = "
                    "XLA's count of the padded dense step with the XLA loss",
      "steps_per_round": args.steps, "rounds": args.rounds,
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows, "packing": packing_speedups(rows),
      "peer": peer and {k: peer.get(k) for k in PEER_FIELDS},
      "peer_tuned_allocator": peer_tuned and {k: peer_tuned.get(k) for k in PEER_FIELDS},
  }
  hw = record["hardware"]
  print(f"data: {record['data']}; matmul peak {peak:.0f} GFLOP/s; {hw['cpu']}; malloc tuned {hw['malloc_tuned']}, "
        f"native kernels {hw['native_kernels']}; {args.rounds} rounds x {args.steps} steps, medians")
  print(f"{'model':20s} {'step ms':>8s} {'range':>11s} {'input':>6s} {'fwd':>6s} {'bwd':>6s} {'opt':>6s} "
        f"{'tok/s':>7s} {'ex/s':>6s} {'cand/s':>7s} {'GFLOP':>6s} {'util<=':>6s} {'RSS MB':>7s} {'vs peer':>8s}")
  for r in rows:
    vs = f"{r['speedup_vs_peer']:.1f}x" if "speedup_vs_peer" in r else "-"
    if "speedup_vs_peer_tuned_allocator" in r:
      vs += f" ({r['speedup_vs_peer_tuned_allocator']:.1f}x tuned)"
    rng = f"{r['step_s_min'] * 1e3:.0f}-{r['step_s_max'] * 1e3:.0f}"
    cand = f"{r['candidates_per_s']:.0f}" if "candidates_per_s" in r else "-"
    print(f"{r['model']:20s} {r['step_s_median'] * 1e3:8.1f} {rng:>11s} {r['input_s'] * 1e3:6.1f} "
          f"{r['forward_s'] * 1e3:6.1f} {r['backward_s'] * 1e3:6.1f} {r['optimizer_s'] * 1e3:6.1f} "
          f"{r['tokens_per_s']:7.0f} {r['examples_per_s']:6.0f} {cand:>7s} {r['flops_per_step'] / 1e9:6.2f} "
          f"{r['utilisation_vs_matmul_peak']:6.1%} {r['peak_rss_mb']:7.0f} {vs:>8s}")
  for name, p in record["packing"].items():
    print(f"token packing, {name}: unpacked / packed step time {p['speedup_of_medians']:.2f}x (medians); per round "
          f"median {p['speedup_per_round_median']:.2f}x, range {p['speedup_per_round_min']:.2f}-"
          f"{p['speedup_per_round_max']:.2f}x")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
