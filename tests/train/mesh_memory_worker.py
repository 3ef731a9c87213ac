"""Run by tests/train/test_mesh.py (slow) with 8 host CPU devices: a 10M x 64 item table, the step's
per-device memory on one device and under FSDP on 8, from XLA's compiled memory analysis, then two
real FSDP steps. Prints one JSON line; the test asserts on it.

The analysis is of the trainer's step (AdamW): on 8 devices with the mesh's sampled softmax
(`resolve_fast_paths`: the row-sharded `shard_map` loss), on one device with the same loss unsharded
(`loss.impl="xla"`, which XLA's analysis sees into; the C++ kernel is a custom call). The two real steps run the same model, table and
sharding with plain SGD: this one process holds all 8 host "devices", so with Adam's moments the
real steps needed 14.5 GB of host RAM (measured peak RSS, most of it the state being initialised),
which a loaded 23 GB machine could not always give; with SGD and a table filled by a cheap
deterministic pattern (its values do not matter here) the whole worker peaked at 5.8 GB (8.6 GB with
the SPMD sampled softmax). They show
that the sharded step runs at this size and updates the table's rows; the memory claim rests on the
analysis.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/train/mesh_memory_worker.py DIR

Per-device step memory = arguments + outputs + temporaries - aliased (donated state written in
place): what one accelerator of that size would have to hold. The host process holds all 8 "devices"
at once, so its RSS is not the per-device figure.
"""
import json
import resource
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recjax.models import build_model, init_params
from recjax.train import mesh as mesh_lib
from recjax.train.state import TrainState, make_optimizer
from recjax.train.step import make_train_step
from tests.train import mesh_worker

NUM_ROWS = 10_000_000   # table rows (row 0 is padding): divisible by 8
DIM = 64


def step_bytes(compiled) -> dict:
  m = compiled.memory_analysis()
  out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}
  out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return out


def main(workdir):
  assert jax.device_count() == 8, jax.devices()
  config, seqs, batches, model_cfg = mesh_worker.setup(workdir)
  config.model.dim = DIM
  model_cfg = {**model_cfg, "dim": DIM}
  spec = mesh_lib.mesh_spec({"shape": (8, 1), "dense": "fsdp"})
  mesh = mesh_lib.make_mesh(spec)
  loss_cfg, model_cfg, _ = mesh_lib.resolve_fast_paths(config.loss, model_cfg, spec)   # the mesh's loss
  one_loss_cfg = loss_cfg.copy_and_resolve_references()
  one_loss_cfg.impl = "xla"   # one device: the same loss, unsharded (no C++ kernel: XLA's analysis sees into it)
  model = build_model(model_cfg, NUM_ROWS)
  tx = make_optimizer(config.train)
  init_key, step_key = jax.random.split(jax.random.key(0, impl=config.train.prng_impl))

  def init_state():
    init = model.init({"params": init_key, "dropout": init_key}, batches[0], train=False)["params"]
    return TrainState(jnp.zeros((), jnp.int32), init, tx.init(init))

  abstract = jax.eval_shape(init_state)
  # The catalogue is a small id set (the batches' items): the table size, not the sampler's
  # constant, is what this measures.
  step = make_train_step(model, tx, one_loss_cfg, np.arange(1, 32), step_key)
  one = step_bytes(step.lower(abstract, batches[0]).compile())

  state_sh = mesh_lib.tree_shardings(abstract, mesh, spec)
  batch_sh = mesh_lib.batch_shardings(batches[0], mesh)
  sharded = mesh_lib.make_sharded_train_step(make_train_step(model, tx, loss_cfg, np.arange(1, 32), step_key, mesh),
                                             mesh, state_sh, batch_sh)
  eight = step_bytes(sharded.lower(abstract, batches[0]).compile())

  # Two real steps (SGD; see the module docstring), the state created already sharded (never whole
  # on one device): the dense parameters from the model's own init with a small table (only the
  # table's shape depends on the rows), the table a cheap pattern (truncated-normal sampling of
  # 640M values materialises several full-size temporaries).
  small = init_params(build_model(model_cfg, 32), init_key, batches[0])
  sgd = optax.sgd(0.5)

  def sgd_state():
    rows = jax.lax.broadcasted_iota(jnp.float32, (NUM_ROWS, DIM), 0)
    cols = jax.lax.broadcasted_iota(jnp.float32, (NUM_ROWS, DIM), 1)
    params = {**small, "item_embedding": {"table": 0.02 * jnp.sin(rows * 0.618 + cols * 1.7)}}
    return TrainState(jnp.zeros((), jnp.int32), params, sgd.init(params))

  sgd_abstract = jax.eval_shape(sgd_state)
  sgd_sh = mesh_lib.tree_shardings(sgd_abstract, mesh, spec)
  sgd_step = mesh_lib.make_sharded_train_step(make_train_step(model, sgd, loss_cfg, np.arange(1, 32), step_key, mesh),
                                              mesh, sgd_sh, batch_sh)
  state = jax.jit(sgd_state, out_shardings=sgd_sh)()
  table = state.params["item_embedding"]["table"]
  before = np.asarray(table.addressable_shards[0].data[:32])
  losses = []
  for b in batches[:2]:
    state, loss = sgd_step(state, mesh_lib.place_batch(b, batch_sh))
    losses.append(float(loss))
  table = state.params["item_embedding"]["table"]
  after = np.asarray(table.addressable_shards[0].data[:32])
  print("RESULT " + json.dumps({
      "table_shape": list(table.shape), "table_shard_shape": list(table.addressable_shards[0].data.shape),
      "state_bytes": int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(abstract))),
      "one_device": one, "fsdp_8": eight, "losses": losses,
      "table_rows_changed": int(np.sum(np.any(before != after, axis=1))),
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
