"""Mesh placement (recjax/train/mesh.py) and row-sharded lookups (recjax/layers/sharded_embedding.py).

The multi-device checks run in a subprocess with 8 host CPU devices: the pytest process has already
started JAX with one device, and XLA_FLAGS is read only when JAX starts.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO

from recjax.train import mesh as mesh_lib

EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": REPO}


def _run_eight(args, timeout=1800):   # 25 s on an idle 2-core CPU, over 10 min under load 30
  env = {**os.environ, **EIGHT}
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
  return json.loads(line[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("mesh")
  return _run_eight([os.path.join(REPO, "tests", "train", "mesh_worker.py"), str(workdir)])


@pytest.mark.parametrize("mesh", ["8x1", "4x2_fsdp"])
def test_sharded_step_equals_one_device(eight_device_run, mesh):
  """5 steps of a tiny HSTU: the 1-device step (C++ loss and attention kernels) against the
  sharded step (the row-sharded shard_map loss, attention in XLA, no tiling) with the table
  row-sharded over all 8 devices."""
  r = eight_device_run[mesh]
  assert r["loss_rel_err"] <= 1e-5, (r["losses"], eight_device_run["ref_losses"])
  assert r["param_rel_err"] <= 1e-5, r
  # It really ran sharded, with the fast paths turned off and said so.
  assert r["table_spec"] == "P(('data', 'model'), None)" and r["table_shard_shape"] == [4, 16], r
  assert r["loss_impl"] == "shard_map" and r["tiling"] is False and len(r["notes"]) == 3, r
  assert any("model.attention_impl -> 'xla'" in n for n in r["notes"]), r["notes"]
  if mesh.endswith("fsdp"):
    assert r["dense_leaves_sharded"] > 0, r
  else:
    assert r["dense_leaves_sharded"] == 0, r
  # The steps changed the loss: equal losses are not equal constants.
  assert len(set(round(x, 4) for x in r["losses"])) == len(r["losses"])


@pytest.mark.parametrize("move,devices", [("8x1->4x1", 4), ("8x1->1x1", 1), ("4x2_fsdp->8x1", 8)])
def test_checkpoint_restores_onto_another_mesh(eight_device_run, move, devices):
  r = eight_device_run["restores"][move]
  assert r["identical"], r
  assert r["devices"] == devices, r


LOOKUP_SCRIPT = textwrap.dedent(r"""
    import json
    import jax, jax.numpy as jnp
    from recjax.layers import sharded_embedding as se
    from recjax.train import mesh as mesh_lib
    mesh = mesh_lib.make_mesh(mesh_lib.mesh_spec({"shape": (4, 2)}))
    table = jax.random.normal(jax.random.key(0), (64, 8))
    ids = jax.random.randint(jax.random.key(1), (6, 7), 0, 64)   # 42 ids: padded to 48 for 8 shards
    w = jax.random.normal(jax.random.key(2), (6, 7, 8))
    out = {}
    for axes in [("data",), ("data", "model")]:
      for name, f in [("spmd", se.lookup_spmd), ("all_to_all", se.lookup_all_to_all)]:
        fn = jax.jit(lambda t, i, f=f, axes=axes: f(t, i, mesh, axes))
        ref_g = jax.grad(lambda t: jnp.sum(se.lookup_reference(t, ids) * w))(table)
        g = jax.jit(jax.grad(lambda t, f=f, axes=axes: jnp.sum(f(t, ids, mesh, axes) * w)))(table)
        out[f"{name}/{'x'.join(axes)}"] = {
            "value_err": float(jnp.max(jnp.abs(fn(table, ids) - se.lookup_reference(table, ids)))),
            "grad_err": float(jnp.max(jnp.abs(g - ref_g))), "grad_norm": float(jnp.linalg.norm(ref_g))}
    # The sampled softmax over a row-sharded table: shard_map (each candidate scored on the device
    # holding its row) against the SPMD path (GSPMD partitions the chunked scan's gathers), values,
    # gradients and the largest array any collective of the compiled step moves.
    import re
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from recjax import losses

    def largest_collective(compiled):
      ops = r"(all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(-start)?\("
      sizes = [1]
      for line in compiled.as_text().splitlines():
        m = re.search(r"= (.*?) " + ops, line)
        if m:
          sizes += [int(np.prod([int(d) for d in dims.split(",") if d])) for dims in re.findall(r"\[([\d,]*)\]", m.group(1))]
      return max(sizes)

    t, n, dim = 24, 7, 8
    k = jax.random.split(jax.random.key(3), 4)
    user = jax.random.normal(k[0], (t, dim))
    w = (jax.random.uniform(k[3], (t,)) > 0.2).astype(jnp.float32)
    for rows in (64, 36):   # over ("data", "model"), and over "data" only (36 rows: 8 does not divide)
      table = jax.random.normal(k[1], (rows, dim))
      pos = jax.random.randint(k[2], (t,), 0, rows)
      neg = jax.random.randint(k[2], (t, n), 0, rows).at[0, 2].set(pos[0]).at[3, :].set(pos[3])   # duplicates of the positive
      axes = se.row_axes(dict(mesh.shape), rows)
      table = jax.device_put(table, NamedSharding(mesh, P(axes if len(axes) > 1 else axes[0], None)))
      res = {}
      for impl in ("xla", "shard_map"):
        f = jax.jit(jax.value_and_grad(lambda u, e, impl=impl: losses.sampled_softmax_loss(
            u, e, pos, neg, w, temperature=0.05, chunk=8, impl=impl, mesh=mesh), argnums=(0, 1)))
        v, (gu, ge) = f(user, table)
        res[impl] = {"loss": float(v), "d_user": np.asarray(gu), "d_table": np.asarray(ge),
                     "collective": largest_collective(f.lower(user, table).compile())}
      a, b = res["xla"], res["shard_map"]
      out[f"sampled_softmax/{rows}"] = {
          "axes": list(axes), "loss": [a["loss"], b["loss"]], "tkd": t * (n + 1) * dim, "td": t * dim,
          "d_user_err": float(np.abs(a["d_user"] - b["d_user"]).max() / np.abs(a["d_user"]).max()),
          "d_table_err": float(np.abs(a["d_table"] - b["d_table"]).max() / np.abs(a["d_table"]).max()),
          "collective": {"xla": a["collective"], "shard_map": b["collective"]}}
    # The trainer on 8 devices with a batch the mesh's data axis (4) does not divide.
    import os, sys, tempfile
    from configs import hstu_synthetic
    from recjax.train import loop
    c = hstu_synthetic.get_config("quick")
    c.mesh.shape, c.train.batch_size = (4, 2), 30
    workdir = tempfile.mkdtemp()
    try:
      loop.train_and_evaluate(c, workdir)
      out["bad_batch"] = {"error": None}
    except ValueError as e:
      out["bad_batch"] = {"error": str(e), "written": os.listdir(workdir)}
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_device_checks():
  return _run_eight(["-c", LOOKUP_SCRIPT])


def test_row_sharded_lookups_match_take(eight_device_checks):
  r = {k: v for k, v in eight_device_checks.items() if "/" in k and not k.startswith("sampled_softmax")}
  assert len(r) == 4
  for name, v in r.items():
    assert v["value_err"] == 0.0, (name, v)
    assert v["grad_err"] <= 1e-6 * v["grad_norm"], (name, v)


@pytest.mark.parametrize("rows,axes", [(64, ["data", "model"]), (36, ["data"])])
def test_sharded_sampled_softmax_equals_the_spmd_path(eight_device_checks, rows, axes):
  """On a 4x2 mesh, `loss.impl="shard_map"` (each candidate scored where its row lives, the
  logsumexp combined across devices) gives the SPMD path's loss and gradients, and no collective of
  its compiled program moves more than the users' [T, D] (the SPMD path all-reduces gathered rows)."""
  r = eight_device_checks[f"sampled_softmax/{rows}"]
  assert r["axes"] == axes, r
  a, b = r["loss"]
  assert abs(a - b) <= 1e-6 * abs(a), r
  assert r["d_user_err"] <= 1e-5 and r["d_table_err"] <= 1e-5, r
  assert r["collective"]["shard_map"] <= r["td"] < r["collective"]["xla"], r


def test_trainer_rejects_a_batch_the_mesh_does_not_divide(eight_device_checks):
  """On 8 devices, a 4x2 mesh and train.batch_size=30: the trainer stops before any data or model
  work, naming the field."""
  r = eight_device_checks["bad_batch"]
  assert r["error"] is not None and r["error"].startswith("config.train.batch_size=30 does not divide"), r
  assert "data axis of size 4" in r["error"] and r["written"] == [], r


def test_mesh_spec_resolves_and_validates():
  assert mesh_lib.mesh_spec({"shape": (-1, 2)}, num_devices=8).shape == (4, 2)
  assert mesh_lib.mesh_spec({"shape": (1, 1)}, num_devices=8).num_devices == 1
  with pytest.raises(ValueError, match=r"config.mesh.shape \(3, 1\) needs 3 devices.*8 devices"):
    mesh_lib.mesh_spec({"shape": (3, 1)}, num_devices=8)
  with pytest.raises(ValueError, match="config.mesh.shape.*16 devices"):
    mesh_lib.mesh_spec({"shape": (8, 2)}, num_devices=8)
  with pytest.raises(ValueError, match="config.mesh.dense"):
    mesh_lib.mesh_spec({"shape": (1, 1), "dense": "zero3"}, num_devices=1)
  with pytest.raises(ValueError, match="config.mesh.axes"):
    mesh_lib.mesh_spec({"shape": (1, 1), "axes": ("batch", "model")}, num_devices=1)


def test_mesh_that_does_not_divide_the_batch_names_the_field():
  spec = mesh_lib.mesh_spec({"shape": (4, 2)}, num_devices=8)
  mesh_lib.check_batch(spec, 16)
  with pytest.raises(ValueError, match=r"config.train.batch_size=30 does not divide .* data axis of size 4"):
    mesh_lib.check_batch(spec, 30)
  with pytest.raises(ValueError, match=r"config.eval.batch_size=6"):
    mesh_lib.check_batch(spec, 6, field="eval.batch_size")


def test_sharding_rules():
  from jax.sharding import PartitionSpec as P
  from jax.tree_util import DictKey, GetAttrKey
  spec = mesh_lib.mesh_spec({"shape": (4, 2), "dense": "fsdp"}, num_devices=8)
  table = (DictKey("item_embedding"), DictKey("table"))
  assert mesh_lib.param_spec(table, (32, 16), spec) == P(("data", "model"), None)
  assert mesh_lib.param_spec(table, (12, 16), spec) == P("data", None)      # 12 % 8 != 0, 12 % 4 == 0
  assert mesh_lib.param_spec(table, (31, 16), spec) == P()                  # no axis divides 31 rows
  moment = (GetAttrKey("mu"),) + table                                     # optax moments follow
  assert mesh_lib.param_spec(moment, (32, 16), spec) == P(("data", "model"), None)
  dense = (DictKey("block_0"), DictKey("kernel"))
  assert mesh_lib.param_spec(dense, (6, 16), spec) == P(None, "data")       # largest dim 4 divides
  assert mesh_lib.param_spec(dense, (3, 5), spec) == P()
  assert mesh_lib.param_spec((GetAttrKey("count"),), (), spec) == P()
  rep = mesh_lib.mesh_spec({"shape": (4, 2)}, num_devices=8)
  assert mesh_lib.param_spec(dense, (6, 16), rep) == P()
  assert mesh_lib.batch_spec("ids", (16, 20)) == P("data")
  assert mesh_lib.batch_spec("token_index", (64,)) == P()


def test_fast_paths_fall_back_only_on_a_mesh():
  from configs import base
  c = base.base()
  one = mesh_lib.mesh_spec({"shape": (1, 1)}, num_devices=1)
  loss_cfg, model_cfg, notes = mesh_lib.resolve_fast_paths(c.loss, {"attention_tiling": "auto"}, one)
  assert loss_cfg.impl == "auto" and model_cfg["attention_tiling"] == "auto" and not notes
  eight = mesh_lib.mesh_spec({"shape": (8, 1)}, num_devices=8)
  loss_cfg, model_cfg, notes = mesh_lib.resolve_fast_paths(c.loss, {"attention_tiling": "auto"}, eight)
  assert loss_cfg.impl == "shard_map" and model_cfg["attention_tiling"] is False and len(notes) == 2
  assert c.loss.impl == "auto", "the caller's config must not change"
  c.loss.impl = "xla"   # the SPMD path asked for by name stays
  loss_cfg, _, notes = mesh_lib.resolve_fast_paths(c.loss, {"attention_tiling": "auto"}, eight)
  assert loss_cfg.impl == "xla" and len(notes) == 1
  # The C++ attention kernel: off on a mesh, also where the config leaves the model's default ("auto").
  _, model_cfg, notes = mesh_lib.resolve_fast_paths(c.loss, {"name": "hstu_ranker", "dim": 8}, eight)
  assert model_cfg["attention_impl"] == "xla" and any("attention_impl" in n for n in notes)
  _, model_cfg, _ = mesh_lib.resolve_fast_paths(c.loss, {"name": "hstu_ranker", "dim": 8}, one)
  assert "attention_impl" not in model_cfg
  _, model_cfg, notes = mesh_lib.resolve_fast_paths(c.loss, {"name": "dlrm", "dim": 8}, eight)
  assert "attention_impl" not in model_cfg and not any("attention_impl" in n for n in notes)


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_single_process_loss(eight_device_run, tmp_path):
  """jax.distributed on localhost: 2 processes x 4 host devices train the 8x1 mesh together and
  match the single-process 8-device run (losses and a parameter checksum reduced on the mesh)."""
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PYTHONPATH": REPO}
  worker = os.path.join(REPO, "tests", "train", "mesh_worker.py")
  procs = [subprocess.Popen([sys.executable, worker, str(tmp_path), str(p), "2", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=600)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  single = eight_device_run["8x1"]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
    r = json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):])
    for a, b in zip(r["losses"], single["losses"]):
      assert abs(a - b) <= 1e-5 * abs(b), (r["losses"], single["losses"])
    assert abs(r["param_sq_sum"] - single["param_sq_sum"]) <= 1e-5 * single["param_sq_sum"], r


def test_unsharded_tables_are_reported():
  import numpy as np
  spec = mesh_lib.mesh_spec({"shape": (8, 1)}, num_devices=8)
  params = {"item_embedding": {"table": np.zeros((31, 4))}, "tab_embedding": {"embedding": np.zeros((32, 4))},
            "dense": {"kernel": np.zeros((31, 4))}}
  assert mesh_lib.unsharded_tables(params, spec) == ["['item_embedding']['table'] (31, 4)"]
  assert mesh_lib.unsharded_tables(params, mesh_lib.mesh_spec({"shape": (1, 1)}, num_devices=8)) == []


def test_mesh_change_is_a_resumable_config_change():
  """Checkpoints move between meshes, and ones written before config.mesh existed still resume."""
  from configs import base
  from recjax.train import config_check
  c = base.base()
  stored = config_check.config_record(c)
  old = {k: v for k, v in stored.items() if k != "mesh"}
  assert set(config_check.check_resume(old, c)) == {"mesh.axes", "mesh.dense", "mesh.shape"}
  c.mesh.shape = (4, 2)
  assert set(config_check.check_resume(stored, c)) == {"mesh.shape"}
  c.model.dim = 64
  with pytest.raises(config_check.ConfigMismatchError, match="model.dim"):
    config_check.check_resume(stored, c)


# The known miss (issue 21), kept visible rather than loosened: ranking's 8x1 parameters end 1.124e-5
# from the 1-device run's (bound 1e-5). scripts/mesh_parity_probe.py (results/mesh/
# hstu_rank_synthetic_parity_probe.json) traces 99.9996% of it to one element whose only gradient is
# 1.65e-8 vs 1.34e-8 (fp32 rounding of a batch-shape-dependent XLA:CPU reduction), which Adam (eps
# 1e-8) turns into 0.62 vs 0.57 of a learning-rate step; without it 2.5e-8, and with SGD 9.4e-9. strict:
# a change that meets the bound turns this into a failure, so the marker cannot outlive the miss.
_RANKING_PARITY_MISS = pytest.mark.xfail(
    strict=True, raises=AssertionError,
    reason="known miss: one parameter's Adam step on a ~1e-8 gradient (see the comment above)")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["retrieval", pytest.param("ranking", marks=_RANKING_PARITY_MISS), "generative"])
def test_experiments_run_on_a_mesh_matches_one_device(task, tmp_path):
  """`experiments.run`, 5 steps of a tiny config (retrieval, ranking, generative TIGER) on 8x1 and
  4x2 (fsdp) meshes: each step's loss and the checkpointed parameters equal the 1-device run's
  (fp32, 1e-5 relative); stopped after 3 steps on 8x1 and resumed on 4x2, the run ends where 5
  uninterrupted 4x2 steps end (parameters to 1e-5). Five runs per task, one worker each: ~3 min
  per task on an idle 2-core CPU, 15-20 min on one loaded by 30 other processes."""
  r = _run_eight([os.path.join(REPO, "tests", "train", "mesh_run_worker.py"), str(tmp_path), task],
                 timeout=3600)[task]
  assert r["num_leaves"] > 0
  for mesh in ["(8,1)", "(4,2)"]:
    assert r[mesh]["steps"] == 5 and r[mesh]["loss_steps"] == [1, 2, 3, 4, 5], r[mesh]
    assert r[mesh]["loss_rel_err"] <= 1e-5, (mesh, r[mesh], r["ref_losses"])   # each step's loss
    assert r[mesh]["param_rel_err"] <= 1e-5, (mesh, r[mesh])    # all parameters as one vector
    assert r[mesh]["leaf_rel_err"] <= 1e-4, (mesh, r[mesh])     # the worst single leaf
  if task == "retrieval":   # the C++ loss kernel and the tiled attention are turned off, with notes
    assert any("loss.impl" in n for n in r["(8,1)"]["notes"]), r["(8,1)"]["notes"]
  assert r["resume"]["segments"] == 2 and r["resume"]["steps"] == 5, r["resume"]
  assert r["resume"]["param_rel_err"] <= 1e-5, r["resume"]
  # Test metrics to 1e-4, except ones that count orderings: parameters 1e-6 apart can swap two
  # near-tied candidates, and AUC over a task with 2 positives moves by 1 / (2 * negatives); and the
  # gap closed, (1 - NE) / (1 - NE_oracle), which divides NE's difference by |1 - NE| (≈ 0.02 here).
  # The same holds between each mesh's run and the 1-device run.
  for differing in [r["resume"]["differing_test_metrics"], r["(8,1)"]["differing_test_metrics"],
                    r["(4,2)"]["differing_test_metrics"]]:
    assert all(k.rsplit(".", 1)[-1] in ("auc", "gauc", "gap_closed") for k in differing), differing
    if task != "ranking":
      assert not differing, differing


def test_trainer_rejects_a_mesh_it_cannot_build(tmp_path):
  """The loop reads config.mesh before any data or model work: a bad mesh fails at once, named."""
  from configs import hstu_synthetic
  from recjax.train import loop
  c = hstu_synthetic.get_config("quick")
  c.mesh.shape = (2, 1)   # this pytest process has one device
  with pytest.raises(ValueError, match=r"config.mesh.shape \(2, 1\) needs 2 devices"):
    loop.train_and_evaluate(c, str(tmp_path))
  assert not os.listdir(tmp_path), "nothing may be written before the mesh is checked"


@pytest.mark.slow
def test_ten_million_row_table_trains_under_fsdp_within_one_devices_memory(tmp_path):
  """A 10M x 64 item table (state ≈ 7.7 GB with Adam's moments): under FSDP on 8 devices each device
  needs a fraction of what one device needs for the same step (XLA's compiled memory analysis), and
  two real sharded steps (SGD) train it. ~1 min on an idle 2-core CPU, 5 under load; 5.8 GB of RAM."""
  r = _run_eight([os.path.join(REPO, "tests", "train", "mesh_memory_worker.py"), str(tmp_path)], timeout=1800)
  assert r["table_shape"] == [10_000_000, 64] and r["table_shard_shape"] == [1_250_000, 64], r
  one, eight = r["one_device"]["total"], r["fsdp_8"]["total"]
  # One device must hold the whole state plus the table's dense gradient; each of 8 FSDP devices an
  # eighth of both, plus replicated activations (measured ≈ 12x less: 15.6 GB -> 1.28 GB with the
  # shard_map loss; 1.64 GB with the SPMD one).
  assert one >= r["state_bytes"], r
  assert eight * 6 <= one, r
  assert eight <= r["state_bytes"] / 4, r      # a device of the 1-device state's size has room to spare
  assert all(np.isfinite(r["losses"])) and r["losses"][0] != r["losses"][1], r
  assert r["table_rows_changed"] >= 16, r       # the batches' item rows were updated
  # The worker stays lean enough to run beside other jobs (measured 5.8 GB peak RSS, 14.5 GB when the
  # real steps used Adam: see mesh_memory_worker.py).
  assert r["peak_rss_bytes"] <= 10e9, r


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("mesh_multiprocess")
  return _run_eight([os.path.join(REPO, "tests", "train", "mesh_multiprocess_worker.py"), str(workdir)],
                    timeout=2400)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["retrieval", "ranking"])
def test_two_process_experiments_run_equals_one_process(two_process_runs, task):
  """`experiments.run --distributed` as 2 localhost processes x 4 host devices (gloo) against one
  process with 8, 5 steps of a tiny config (retrieval on 8x1; ranking on 4x2 with FSDP, so dense
  parameters live across both processes and evaluation has to gather them): equal parameters and
  test metrics (1e-5 relative); each process read only its half of every batch; only process 0
  printed progress and wrote the results file; the one sharded checkpoint both processes wrote
  restores in a 1-device run (--snapshot) to the same test metrics. ~3 min per task on 2 cores."""
  r = two_process_runs[task]
  assert r["steps"] == 5 and r["num_leaves"] > 0, r
  assert r["param_rel_err"] <= 1e-5 and r["leaf_rel_err"] <= 1e-5, r
  # Test metrics to 1e-5, except the ranking metrics that count orderings (AUC, GAUC): a 5-step
  # ranker scores many candidates almost alike, and parameters 2e-8 apart swap near-tied pairs
  # (log loss and NE, which read the same predictions, agree to 1e-8). Retrieval: all equal.
  differing = r["differing_test_metrics"]
  assert all(k.rsplit(".", 1)[-1] in ("auc", "gauc") for k in differing), differing
  if task == "retrieval":
    assert not differing, differing
  assert r["rows_lines"] == [["process 0/2: reads rows [0, 8) of each batch of 16"],
                             ["process 1/2: reads rows [8, 16) of each batch of 16"]], r
  assert r["results_lines"] == [1, 0] and r["progress_lines"][1] == 0 < r["progress_lines"][0], r
  assert r["results_files"] == [f"{task}_two_processes.json", f"{task}_two_processes_restored.json"], r
  # One checkpoint, written over the 2-process topology (the second process's CPU devices are
  # numbered from 2048), read back by one process.
  assert r["checkpoint_steps"] == ["5"], r
  assert len(r["sharded_leaves"]["device_ids"]) == 8 and max(r["sharded_leaves"]["device_ids"]) >= 2048, r
  if task == "ranking":
    assert r["sharded_leaves"]["sharded"] > 0, r
  assert r["restored_partial"] is True and r["restored_differing_test_metrics"] == [], r
