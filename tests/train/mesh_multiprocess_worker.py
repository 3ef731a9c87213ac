"""Run by tests/train/test_mesh.py with 8 host CPU devices: `experiments.run --distributed` as two
localhost processes x 4 host devices against one process with 8, on a tiny retrieval and a tiny
ranking config, and the 2-process checkpoint restored by a 1-device run. One JSON line out.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/train/mesh_multiprocess_worker.py DIR [TASK...]
"""
import json
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mesh_run_worker as rw   # noqa: E402  (the tiny configs, the checkpoint reader, the comparisons)

STEPS = 5
# Retrieval on 8x1 (the data axis split between the processes); ranking on 4x2 with FSDP, so that
# dense parameters are sharded across the two processes and evaluation must gather them.
MESHES = {"retrieval": ("(8,1)", "replicate"), "ranking": ("(4,2)", "fsdp")}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _args(name, workdir, results, steps, mesh=None):
  shape, dense = MESHES[name] if mesh is None else (mesh, "replicate")
  return [sys.executable, "-m", "experiments.run", *rw.CONFIGS[name], *rw.COMMON, f"--workdir={workdir}",
          f"--results={results}", f"--config.train.max_steps={steps}", f"--config.mesh.shape={shape}",
          f"--config.mesh.dense={dense}"]


def run_one_process(name, workdir):
  proc = subprocess.run(_args(name, workdir, f"{workdir}.json", STEPS), cwd=rw.REPO, capture_output=True,
                        text=True, timeout=600)
  if proc.returncode:
    raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-3000:])
  with open(f"{workdir}.json") as f:
    return json.load(f)


def params(workdir, step):
  """A checkpoint's parameters as numpy, restored onto this process's first device (orbax needs a
  target: the checkpoint names devices of the 2-process topology)."""
  import jax   # pylint: disable=import-outside-toplevel
  import numpy as np   # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp   # pylint: disable=import-outside-toplevel
  path = os.path.abspath(os.path.join(workdir, "checkpoints", str(step), "state"))
  ckptr = ocp.StandardCheckpointer()
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), ckptr.metadata(path).item_metadata.tree)
  tree = ckptr.restore(path, target)
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree["params"])}


def sharded_leaves(workdir, step) -> dict:
  """From the checkpoint's metadata: how many parameter leaves it stores split over devices, and the
  ids of the devices of its mesh (a 2-process CPU run numbers the second process's from 2048)."""
  import orbax.checkpoint as ocp   # pylint: disable=import-outside-toplevel
  path = os.path.abspath(os.path.join(workdir, "checkpoints", str(step), "state"))
  tree = ocp.StandardCheckpointer().metadata(path).item_metadata.tree["params"]
  import jax   # pylint: disable=import-outside-toplevel
  leaves = jax.tree.leaves(tree)
  return {"sharded": sum(1 for m in leaves if any(a is not None for a in m.sharding.partition_spec or ())),
          "device_ids": sorted(d.id for row in leaves[0].sharding.device_mesh.mesh for d in row)}


def run_two_processes(name, workdir):
  """Both processes run the same command in the same workdir; each sees 4 of the 8 devices."""
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  procs = [subprocess.Popen(_args(name, workdir, f"{workdir}.json", STEPS) + [
      "--distributed", f"--coordinator=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=rw.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=900)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outs)):
    if p.returncode:
      raise RuntimeError(f"process {i} exited {p.returncode}:\n{out[-4000:]}")
  with open(f"{workdir}.json") as f:
    return json.load(f), outs


def main(root, names):
  out = {}
  for name in names:
    ref_dir = os.path.join(root, f"{name}_single")
    ref = run_one_process(name, ref_dir)
    multi_dir = os.path.join(root, f"{name}_two_processes")
    multi, outs = run_two_processes(name, multi_dir)
    ref_p, multi_p = params(ref_dir, STEPS), params(multi_dir, STEPS)
    # Restored by one process on one device: --snapshot resumes at the checkpoint's step, trains
    # nothing and evaluates (into a scratch copy of the workdir).
    restore = subprocess.run(
        _args(name, multi_dir, f"{multi_dir}_restored.json", STEPS, mesh="(1,1)") + ["--snapshot"],
        cwd=rw.REPO, env={**os.environ, "XLA_FLAGS": ""}, capture_output=True, text=True, timeout=600)
    if restore.returncode:
      raise RuntimeError(restore.stdout[-2000:] + restore.stderr[-3000:])
    with open(f"{multi_dir}_restored.json") as f:
      restored = json.load(f)
    ckpt = os.path.join(multi_dir, "checkpoints")
    out[name] = {
        "num_leaves": len(ref_p), "mesh": MESHES[name],
        "sharded_leaves": sharded_leaves(multi_dir, STEPS), "steps": multi["steps"], "notes": multi["notes"],
        "param_rel_err": rw.global_rel_err(ref_p, multi_p), "leaf_rel_err": rw.rel_err(ref_p, multi_p),
        "differing_test_metrics": rw.differing_metrics(ref["metrics"]["test"], multi["metrics"]["test"], 1e-5),
        "restored_differing_test_metrics": rw.differing_metrics(multi["metrics"]["test"],
                                                                restored["metrics"]["test"], 1e-5),
        "restored_partial": restored.get("partial"),
        "checkpoint_steps": sorted(d for d in os.listdir(ckpt) if d.isdigit()),
        "results_files": sorted(f for f in os.listdir(root) if f.startswith(f"{name}_two_processes")
                                and f.endswith(".json")),
        "results_lines": [sum(l.startswith("results written") for l in o.splitlines()) for o in outs],
        "rows_lines": [[l for l in o.splitlines() if "reads rows" in l] for o in outs],
        "progress_lines": [sum(l.startswith("step ") for l in o.splitlines()) for o in outs],
    }
  print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:] or list(MESHES))   # the tasks with a 2-process mesh here (not generative)
