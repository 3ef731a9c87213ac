"""Run by tests/train/test_mesh.py in a fresh process with 8 host CPU devices (XLA_FLAGS set before
JAX starts): a tiny HSTU trained 5 steps on one device and on meshes, and checkpoints moved between
meshes. Prints one JSON line of measurements; the test asserts on them.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/train/mesh_worker.py DIR

With `DIR PROCESS_ID NUM_PROCESSES PORT` (and 4 devices per process), one of the processes of a
localhost `jax.distributed` run of the same 8x1 mesh.
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from recjax.data import pipeline, registry, splits
from recjax.models import build_model, init_params
from recjax.train import mesh as mesh_lib
from recjax.train.checkpoint import Checkpointer
from recjax.train.loop import resolve_model_config
from recjax.train.state import TrainState, make_optimizer
from recjax.train.step import make_train_step
from tests.conftest import write_cyclic_sequences

STEPS = 5


def tiny_config(path):
  c = base.base()
  c.data.kind, c.data.path, c.data.max_len = "text", path, 20
  c.model.update(dim=16, dqk=8, dv=8, num_blocks=2, num_heads=2, attn_norm_len=20, dropout=0.1)
  c.loss.update(num_negatives=8, token_bucket=64, chunk=32)
  c.train.batch_size = 16
  c.train.prng_impl = "threefry2x32"
  return c


def setup(workdir):
  # 31 items + padding row = 32 table rows: divisible by every mesh here.
  config = tiny_config(write_cyclic_sequences(os.path.join(workdir, "seqs.txt"), num_items=31))
  seqs = registry.load_dataset(config.data)
  train_ex = splits.train_examples(seqs, config.data.max_len, config.data.protocol)
  ds = pipeline.train_dataset(train_ex, batch_size=16, num_epochs=2, seed=0, token_bucket=64)
  batches = [ds[i] for i in range(STEPS)]
  model_cfg, _ = resolve_model_config(config, seqs)
  return config, seqs, batches, model_cfg


def init_state(config, seqs, model_cfg, batches):
  model = build_model(model_cfg, seqs.num_items)
  tx = make_optimizer(config.train)
  init_key, step_key = jax.random.split(jax.random.key(config.seed, impl=config.train.prng_impl))
  params = init_params(model, init_key, batches[0])
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params)), model, tx, step_key


def run(config, seqs, batches, model_cfg, mesh_shape=None, dense="replicate"):
  """5 steps on one device (mesh_shape None: the plain step, fast paths on) or on a mesh."""
  catalogue = seqs.catalogue()
  if mesh_shape is None:
    state, model, tx, key = init_state(config, seqs, model_cfg, batches)
    step = make_train_step(model, tx, config.loss, catalogue, key)
    place_batch, info = (lambda b: b), {}
  else:
    config.mesh.update(shape=mesh_shape, dense=dense)
    spec = mesh_lib.mesh_spec(config.mesh)
    mesh_lib.check_batch(spec, config.train.batch_size)
    mesh = mesh_lib.make_mesh(spec)
    loss_cfg, mcfg, notes = mesh_lib.resolve_fast_paths(config.loss, model_cfg, spec)
    state, model, tx, key = init_state(config, seqs, mcfg, batches)
    state_sh = mesh_lib.tree_shardings(state, mesh, spec)
    batch_sh = mesh_lib.batch_shardings(batches[0], mesh)
    state = mesh_lib.place(state, state_sh)
    step = mesh_lib.make_sharded_train_step(make_train_step(model, tx, loss_cfg, catalogue, key, mesh), mesh,
                                            state_sh, batch_sh)
    place_batch = lambda b: mesh_lib.place_batch(b, batch_sh)   # noqa: E731
    table = state.params["item_embedding"]["table"]
    info = {"notes": notes, "table_spec": str(table.sharding.spec),
            "table_shard_shape": list(table.addressable_shards[0].data.shape),
            "loss_impl": loss_cfg.impl, "tiling": mcfg["attention_tiling"],
            "dense_leaves_sharded": sum(
                1 for p, x in jax.tree_util.tree_leaves_with_path(state.params)
                if "data" in str(x.sharding.spec) and "table" not in jax.tree_util.keystr(p))}
  losses = []
  for b in batches:
    state, loss = step(state, place_batch(b))
    losses.append(float(loss))
  return state, losses, info


def flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def rel_err(a: dict, b: dict) -> float:
  return max(float(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(a[k]), 1e-12)) for k in a)


def restore_onto(ckpt_dir, step, like_state, spec_shape, dense="replicate"):
  spec = mesh_lib.mesh_spec({"shape": spec_shape, "dense": dense})
  mesh = mesh_lib.make_mesh(spec)
  shardings = mesh_lib.tree_shardings(like_state, mesh, spec)
  ckpt = Checkpointer(ckpt_dir)
  state, _ = ckpt.restore(step, like_state, shardings=shardings)
  ckpt.close()
  table = state.params["item_embedding"]["table"]
  return state, {"devices": len(table.sharding.device_set), "table_spec": str(table.sharding.spec)}


def fingerprint(tree) -> float:
  """Σ x² over every leaf, reduced on the mesh (readable on each process under jax.distributed)."""
  return float(jax.jit(lambda t: sum(jnp.vdot(x, x) for x in jax.tree.leaves(t)))(tree))


def distributed_main(workdir, process_id, num_processes, port):
  """One of `num_processes` processes (4 host devices each) training the 8x1 mesh together."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=num_processes, process_id=process_id)
  assert jax.device_count() == 8 and jax.local_device_count() == 8 // num_processes, jax.devices()
  own = os.path.join(workdir, f"p{process_id}")   # each process writes (the same) data file itself
  os.makedirs(own, exist_ok=True)
  config, seqs, batches, model_cfg = setup(own)
  state, losses, _ = run(config, seqs, batches, model_cfg, (8, 1))
  print("RESULT " + json.dumps({"process": process_id, "losses": losses,
                                "param_sq_sum": fingerprint(state.params)}), flush=True)
  jax.distributed.shutdown()


def main(workdir):
  assert jax.device_count() == 8, jax.devices()
  config, seqs, batches, model_cfg = setup(workdir)
  out = {}
  ref_state, ref_losses, _ = run(config, seqs, batches, model_cfg)
  ref = flat(ref_state.params)
  out["ref_losses"] = ref_losses
  states = {}
  for name, shape, dense in [("8x1", (8, 1), "replicate"), ("4x2_fsdp", (4, 2), "fsdp")]:
    state, losses, info = run(config, seqs, batches, model_cfg, shape, dense)
    states[name] = state
    out[name] = {"losses": losses, "param_rel_err": rel_err(ref, flat(state.params)),
                 "param_sq_sum": fingerprint(state.params),
                 "loss_rel_err": max(abs(a - b) / abs(a) for a, b in zip(ref_losses, losses)), **info}

  # Checkpoints between meshes: 8x1 -> 4x1 and -> 1x1; 4x2 (fsdp) -> 8x1.
  moves = {}
  for src, targets in [("8x1", [(4, 1), (1, 1)]), ("4x2_fsdp", [(8, 1)])]:
    d = os.path.join(workdir, f"ckpt_{src}")
    ckpt = Checkpointer(d)
    want = flat(states[src])
    ckpt.save(STEPS, states[src], {"step": STEPS})
    ckpt.close()
    for shape in targets:
      restored, info = restore_onto(d, STEPS, states[src], shape)
      got = flat(restored)
      moves[f"{src}->{shape[0]}x{shape[1]}"] = {
          "identical": all(np.array_equal(want[k], got[k]) for k in want), **info}
  out["restores"] = moves
  print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
  if len(sys.argv) == 5:   # DIR PROCESS_ID NUM_PROCESSES PORT
    distributed_main(sys.argv[1], *map(int, sys.argv[2:]))
  else:
    main(sys.argv[1])
