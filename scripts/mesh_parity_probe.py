"""Why the ranking task's 8x1 mesh run ends 1.12e-5 from the 1-device run (bound 1e-5): a diagnosis.

    python scripts/mesh_parity_probe.py [--out results/mesh/hstu_rank_synthetic_parity_probe.json]
                                        [--seeds 1,2,3]

`tests/train/test_mesh.py::test_experiments_run_on_a_mesh_matches_one_device[ranking]` (slow) runs
`experiments.run` on `configs/hstu_rank_synthetic.py:quick` (batch 16, 1 block, threefry, 5 steps)
on one device and on meshes and compares the checkpointed parameters. This script rebuilds the same
task, initial parameters, batches and step keys in one process (8 host devices) and measures:

1. parity: the parameters after 5 steps, 1 device against 2x1, 4x1 and 8x1 meshes (all parameters
   as one vector; the share of the squared difference in each leaf; the one element carrying it),
   with the run's AdamW and with plain SGD;
2. amplification: that element's gradient at every step on both sides, and Adam's 5 updates
   recomputed by hand from those gradients alone;
3. same computation: with dropout 0, the 8x1 mesh's logits and the gradient of the element's table
   row against one device running only the 2 requests of the mesh's shard (same loss denominator),
   and against one device running all 16;
4. seeds: the 1-device vs 8x1 comparison for other `config.seed` values (init, batch order, keys).

Nothing here changes the trainer; it says whether the miss is a difference in what the sharded step
computes or floating-point rounding amplified by the optimiser.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recjax import cpu_allocator  # noqa: E402

cpu_allocator.tune()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import hstu_rank_synthetic  # noqa: E402
from recjax import losses, tasks  # noqa: E402
from recjax.data import pipeline  # noqa: E402
from recjax.models import init_params  # noqa: E402
from recjax.train import mesh as mesh_lib  # noqa: E402
from recjax.train import results  # noqa: E402
from recjax.train.state import TrainState, make_optimizer  # noqa: E402
from recjax.train.step import make_step  # noqa: E402

STEPS = 5
USER_FEATURES = "['inputs']['user_features']['table']"   # part 3 reads which requests use a row of it
CONFIG = "configs/hstu_rank_synthetic.py:quick"


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="results/mesh/hstu_rank_synthetic_parity_probe.json")
  p.add_argument("--seeds", default="1,2,3", help="other config.seed values for part 4 (empty: skip)")
  return p.parse_args()


def config(seed: int = 42, dropout: float | None = None):
  """The slow test's ranking config (tests/train/mesh_run_worker.py: CONFIGS["ranking"], COMMON)."""
  c = hstu_rank_synthetic.get_config("quick")
  c.train.batch_size = 16
  c.model.num_blocks = 1
  c.train.prng_impl = "threefry2x32"
  c.seed = seed
  if dropout is not None:
    c.model.dropout = dropout
  return c


class Setup:
  """The task, initial parameters (numpy), step key and first 5 batches, as the trainer makes them."""

  def __init__(self, c, workdir):
    self.config = c
    self.task = tasks.make_task(c, workdir)
    self.model, _, _ = self.task.build_model()
    init_key, self.step_key = jax.random.split(jax.random.key(c.seed, impl=c.train.prng_impl))
    self.params = jax.tree.map(np.asarray, init_params(self.model, init_key, self.task.init_batch()))
    it = pipeline.TrainIterator(self.task.train_dataset(c.train.batch_size, c.train.num_epochs, c.seed))
    self.batches = [next(it) for _ in range(STEPS)]

  def fresh_params(self):
    return jax.tree.map(jnp.asarray, self.params)


def flat(tree) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def global_rel(a: dict, b: dict) -> float:
  """|a - b| / |a| over all parameters as one vector (the test's `param_rel_err`)."""
  return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a) / sum(np.sum(a[k] ** 2) for k in a)))


def where_it_lies(a: dict, b: dict) -> dict:
  """The leaf with the largest share of the squared difference, its share, its own relative error,
  the element with the largest difference in it, and the global error without that element."""
  sq = {k: float(np.sum((a[k] - b[k]) ** 2)) for k in a}
  total = sum(sq.values())
  leaf = max(sq, key=sq.get)
  d = np.abs(a[leaf] - b[leaf])
  idx = np.unravel_index(int(np.argmax(d)), d.shape)
  rest = total - float(d[idx]) ** 2
  return {"leaf": leaf, "leaf_share": sq[leaf] / max(total, 1e-300),
          "leaf_rel": float(np.sqrt(sq[leaf]) / np.linalg.norm(a[leaf])),
          "element": [int(i) for i in idx], "element_abs_diff": float(d[idx]),
          "element_share": float(d[idx]) ** 2 / max(total, 1e-300),
          "global_rel_without_element": float(np.sqrt(max(rest, 0.0) / sum(np.sum(a[k] ** 2) for k in a)))}


def train(s: Setup, tx, shape, grad_of=None):
  """5 steps on one device (shape (1, 1)) or on a mesh -> (params, losses, [that gradient element
  per step] when `grad_of` = (leaf path, index) is given)."""
  loss = s.task.loss_fn(s.model)

  def step(state, batch):
    key = jax.random.fold_in(s.step_key, state.step)
    value, grads = jax.value_and_grad(loss)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    g = _pick(grads, grad_of) if grad_of is not None else jnp.zeros(())
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), value, g

  params = s.fresh_params()
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  place = lambda b: b   # noqa: E731
  if shape == (1, 1):
    fn = jax.jit(step)
  else:
    spec = mesh_lib.mesh_spec({"shape": shape})
    mesh = mesh_lib.make_mesh(spec)
    state_sh = mesh_lib.tree_shardings(state, mesh, spec)
    batch_sh = mesh_lib.batch_shardings(s.batches[0], mesh)
    state = mesh_lib.place(state, state_sh)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    fn = jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, rep, rep))
    place = lambda b: mesh_lib.place_batch(b, batch_sh)   # noqa: E731
  values, picked = [], []
  for b in s.batches:
    state, value, g = fn(state, place(b))
    values.append(float(value))
    picked.append(float(g))
  return flat(jax.tree.map(np.asarray, state.params)), values, picked


def _pick(tree, where):
  path, index = where
  for p, x in jax.tree_util.tree_leaves_with_path(tree):
    if jax.tree_util.keystr(p) == path:
      return x[tuple(index)]
  raise KeyError(path)


def adam_by_hand(grads: list[float], train_cfg) -> float:
  """The sum of Adam's 5 updates (without weight decay) to one element from its gradients alone."""
  m = v = total = 0.0
  for k, g in enumerate(grads, start=1):
    m = train_cfg.b1 * m + (1 - train_cfg.b1) * g
    v = train_cfg.b2 * v + (1 - train_cfg.b2) * g * g
    m_hat, v_hat = m / (1 - train_cfg.b1 ** k), v / (1 - train_cfg.b2 ** k)
    total += train_cfg.learning_rate * m_hat / (np.sqrt(v_hat) + train_cfg.eps)
  return float(total)


def same_computation(s: Setup, leaf: str, row: int) -> dict:
  """Dropout 0: logits and the gradient of table row `row` (used by one request), on the 8x1 mesh,
  on one device with the whole batch, and on one device with only the mesh shard's 2 requests
  (the loss denominator fixed to the whole batch's, so the gradients are the same sum)."""
  batch = s.batches[0]
  vocab = np.asarray(s.task.context.user_vocab)   # one table, each feature's rows after the previous ones
  table_rows = np.clip(np.asarray(batch["user_feats"]), 0, vocab - 1) + np.concatenate([[0], np.cumsum(vocab)[:-1]])
  requests = [int(i) for i in np.nonzero(np.any(table_rows == row, axis=1))[0]]
  shard = requests[0] // 2                       # 8x1: shard i holds rows [2i, 2i + 2) of 16
  part = {k: np.asarray(v)[2 * shard:2 * shard + 2] for k, v in batch.items()}
  denom = float(np.sum(np.asarray(batch["cand_mask"])))
  weights_T = jnp.asarray(s.task.task_weights, jnp.float32)
  model = s.model

  def loss(params, b, key):
    out = model.apply({"params": params}, b, train=True, rngs={"dropout": key})
    n, c, t = out["logits"].shape
    w = b["cand_mask"].reshape(n * c).astype(jnp.float32)
    per = losses.sigmoid_bce(out["logits"].reshape(n * c, t), b["cand_labels"].reshape(n * c, t).astype(jnp.float32))
    return jnp.sum(weights_T * jnp.sum(per * w[:, None], axis=0) / denom)

  def logits(params, b):
    return model.apply({"params": params}, b, train=False)["logits"]

  key = jax.random.fold_in(s.step_key, 0)
  params = s.fresh_params()
  spec = mesh_lib.mesh_spec({"shape": (8, 1)})
  mesh = mesh_lib.make_mesh(spec)
  p_sh = mesh_lib.tree_shardings(params, mesh, spec)
  b_sh = mesh_lib.batch_shardings(batch, mesh)
  mp, mb = mesh_lib.place(params, p_sh), mesh_lib.place_batch(batch, b_sh)
  rows = slice(2 * shard, 2 * shard + 2)
  out = {"requests_using_row": requests, "shard": shard}
  whole = np.asarray(jax.jit(logits)(params, batch))[rows]
  alone = np.asarray(jax.jit(logits)(params, part))
  meshed = np.asarray(jax.jit(logits, in_shardings=(p_sh, b_sh))(mp, mb))[rows]
  out["logits_max_abs"] = float(np.abs(whole).max())
  out["logits_mesh_vs_one_device_2_requests"] = float(np.abs(meshed - alone).max())
  out["logits_mesh_vs_one_device_16_requests"] = float(np.abs(meshed - whole).max())
  out["logits_one_device_16_vs_2_requests"] = float(np.abs(whole - alone).max())
  grad = jax.jit(jax.grad(loss))
  g_whole = flat(grad(params, batch, key))[leaf][row]
  g_alone = flat(grad(params, part, key))[leaf][row]
  g_mesh = flat(jax.jit(jax.grad(loss), in_shardings=(p_sh, b_sh, None), out_shardings=p_sh)(mp, mb, key))[leaf][row]
  out["row_grad_norm"] = float(np.linalg.norm(g_whole))
  out["row_grad_mesh_vs_one_device_2_requests"] = float(np.linalg.norm(g_mesh - g_alone))
  out["row_grad_mesh_vs_one_device_16_requests"] = float(np.linalg.norm(g_mesh - g_whole))
  return out


def main():
  args = parse_args()
  t0 = time.time()
  load_before = os.getloadavg()
  workdir = tempfile.mkdtemp(prefix="parity_probe_")
  c = config()
  s = Setup(c, workdir)
  metrics = {"parity": {}}
  optimisers = {"adamw": make_optimizer(c.train), "sgd": optax.sgd(10 * c.train.learning_rate)}
  ref = {}
  for name, tx in optimisers.items():
    ref[name] = train(s, tx, (1, 1))
    for shape in [(2, 1), (4, 1), (8, 1)]:
      p, values, _ = train(s, tx, shape)
      r = {"param_rel_err": global_rel(ref[name][0], p),
           "loss_rel_err": max(abs(a - b) / abs(a) for a, b in zip(ref[name][1], values))}
      r.update(where_it_lies(ref[name][0], p))
      metrics["parity"][f"{name} {shape[0]}x{shape[1]}"] = r
      print(f"{name:5s} {shape}: parameters {r['param_rel_err']:.3e} from 1 device (losses {r['loss_rel_err']:.1e}); "
            f"{r['leaf_share']:.6f} of it in {r['leaf']} {r['element']}, without that element "
            f"{r['global_rel_without_element']:.2e}", flush=True)
  worst = metrics["parity"]["adamw 8x1"]
  where = (worst["leaf"], worst["element"])
  _, _, g_one = train(s, optimisers["adamw"], (1, 1), grad_of=where)
  _, _, g_mesh = train(s, optimisers["adamw"], (8, 1), grad_of=where)
  row_grads = flat(jax.grad(s.task.loss_fn(s.model))(s.fresh_params(), s.batches[0],
                                                      jax.random.fold_in(s.step_key, 0)))[where[0]][where[1][0]]
  amp = {"element": where, "grad_one_device": g_one, "grad_8x1": g_mesh,
         "row_grad_abs_median_step0": float(np.median(np.abs(row_grads[row_grads != 0]))),
         "adam_sum_of_updates_by_hand": [adam_by_hand(g_one, c.train), adam_by_hand(g_mesh, c.train)],
         "adam_eps": c.train.eps, "learning_rate": c.train.learning_rate, "measured_abs_diff": worst["element_abs_diff"]}
  amp["by_hand_abs_diff"] = abs(amp["adam_sum_of_updates_by_hand"][0] - amp["adam_sum_of_updates_by_hand"][1])
  metrics["amplification"] = amp
  print(f"element {where}: gradients 1 device {g_one}, 8x1 {g_mesh}; Adam's updates by hand differ by "
        f"{amp['by_hand_abs_diff']:.4e} (measured {worst['element_abs_diff']:.4e})", flush=True)
  if where[0] == USER_FEATURES:
    metrics["same_computation"] = same_computation(Setup(config(dropout=0.0), workdir), where[0], where[1][0])
    print("same computation (dropout 0):", metrics["same_computation"], flush=True)
  metrics["seeds"] = {}
  for seed in [int(x) for x in args.seeds.split(",") if x]:
    si = Setup(config(seed=seed), workdir)
    a = train(si, make_optimizer(si.config.train), (1, 1))[0]
    b = train(si, make_optimizer(si.config.train), (8, 1))[0]
    metrics["seeds"][str(seed)] = {"param_rel_err": global_rel(a, b), **where_it_lies(a, b)}
    print(f"seed {seed}: 8x1 parameters {global_rel(a, b):.3e} from 1 device", flush=True)
  record = {
      "kind": "diagnosis", "dataset": "synthetic", "model": c.model.name, "config": CONFIG,
      "overrides": {"train.batch_size": 16, "model.num_blocks": 1, "train.prng_impl": "threefry2x32",
                    "steps": STEPS},
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "commit": results.git_commit(),
      "versions": results.versions(), "hardware": results.hardware(), "seed": c.seed,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "wall_clock_s": time.time() - t0,
      "load_average_1_5_15min": {"before": list(load_before), "after": list(os.getloadavg())},
      "metrics": metrics,
  }
  results.write_results(args.out, record)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
