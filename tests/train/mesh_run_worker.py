"""Run by tests/train/test_mesh.py with 8 host CPU devices: `experiments.run` itself (a subprocess
per run) on a tiny retrieval, ranking and generative (TIGER) config, on one device and on 8x1 / 4x2
meshes, and a run stopped on one mesh and resumed on another. Prints one JSON line of measurements.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/train/mesh_run_worker.py DIR [TASK ...]

With TASK names (retrieval, ranking, generative), only those tasks.
"""
import json
import os
import subprocess
import sys

import numpy as np

STEPS = 5
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# threefry: its bits do not depend on how the step is partitioned (the default rbg may).
COMMON = ["--config.train.prng_impl=threefry2x32", "--config.train.eval_every_epochs=0",
          "--config.train.log_every_steps=1", "--config.train.count_flops=false"]
CONFIGS = {
    "retrieval": ["--config=configs/hstu_synthetic.py:quick",
                  "--config.data.max_len=20",
                  "--config.model.num_blocks=1", "--config.train.batch_size=16",
                  "--config.eval.batch_size=32", "--config.data.array_record=false"],
    "ranking": ["--config=configs/hstu_rank_synthetic.py:quick", "--config.train.batch_size=16",
                "--config.model.num_blocks=1"],
    # TIGER's protocol on a tiny cyclic text file (written by main: GENERATIVE_DATA), SIDs of
    # 2 levels x 4 codes (+ a dedup level), a 1 + 1 layer TIGER, beam search over every leaf.
    "generative": ["--config=configs/tiger_amazon_sports.py:quick", "--config.train.batch_size=16",
                   "--config.sid.vector_dim=8", "--config.sid.num_levels=2", "--config.sid.codebook_size=4",
                   "--config.sid.window=2", "--config.model.dim=16", "--config.model.num_heads=2",
                   "--config.model.head_dim=8", "--config.model.ffn_dim=32", "--config.model.num_encoder_layers=1",
                   "--config.model.num_decoder_layers=1", "--config.model.num_user_tokens=16",
                   "--config.model.dropout=0.0", "--config.data.max_len=6", "--config.eval.beam_size=24",
                   "--config.eval.batch_size=16", "--config.eval.max_examples=0"],
}
GENERATIVE_DATA = "generative_seqs.txt"


def run(name, workdir, mesh, steps):
  extra = [f"--config.data.path={os.path.join(os.path.dirname(workdir), GENERATIVE_DATA)}"] if name == "generative" else []
  args = [sys.executable, "-m", "experiments.run", *CONFIGS[name], *extra, *COMMON, f"--workdir={workdir}",
          f"--results={workdir}.json", f"--config.train.max_steps={steps}", f"--config.mesh.shape={mesh}"]
  if mesh == "(4,2)":
    args.append("--config.mesh.dense=fsdp")
  proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
  if proc.returncode:
    raise RuntimeError(" ".join(args) + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:])
  with open(f"{workdir}.json") as f:
    return json.load(f)


def params(workdir, step):
  """The parameters of a checkpoint as numpy, read without a target (onto this process's devices)."""
  import orbax.checkpoint as ocp   # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  tree = ocp.StandardCheckpointer().restore(os.path.abspath(path))
  flat = {}

  def walk(prefix, x):
    if isinstance(x, dict):
      for k, v in x.items():
        walk(f"{prefix}/{k}", v)
    else:
      flat[prefix] = np.asarray(x)
  walk("", tree["params"] if isinstance(tree, dict) and "params" in tree else tree)
  return flat


def train_losses(workdir) -> dict:
  """{step: train/loss} from the run's TensorBoard files (float32; with log_every_steps=1, each
  step's own loss), read as TFRecords of `Event` protos: no TensorFlow needed."""
  import struct   # pylint: disable=import-outside-toplevel
  from tensorboardX.proto import event_pb2   # pylint: disable=import-outside-toplevel
  out = {}
  tb = os.path.join(workdir, "tensorboard")
  for name in sorted(os.listdir(tb)):
    with open(os.path.join(tb, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4   # length, its CRC, the record, its CRC
      for v in event.summary.value:
        if v.tag == "train/loss":
          out[int(event.step)] = float(v.simple_value)
  return out


def rel_err(a, b):
  """The largest per-leaf relative error (small leaves under Adam amplify reduction-order noise)."""
  return max(float(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(a[k]), 1e-12)) for k in a)


def global_rel_err(a, b):
  """|a - b| / |a| over all parameters as one vector."""
  return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a) / sum(np.sum(a[k] ** 2) for k in a)))


def differing_metrics(a, b, tol=1e-4, prefix=""):
  """Dotted keys whose values differ by more than `tol` relative (NaN equals NaN: the gap closed of
  a task whose oracle NE is 1)."""
  if isinstance(a, dict):
    return [k for key in a for k in differing_metrics(a[key], b[key], tol, f"{prefix}{key}.")]
  if isinstance(a, float) and (np.isnan(a) or np.isnan(b)):
    return [] if np.isnan(a) and np.isnan(b) else [prefix[:-1]]
  return [] if abs(a - b) <= tol * max(abs(a), 1e-12) else [prefix[:-1]]


def main(root, names=None):
  unknown = sorted(set(names or ()) - set(CONFIGS))
  if unknown:
    raise ValueError(f"unknown task(s) {unknown}; known: {sorted(CONFIGS)}")
  sys.path.insert(0, REPO)
  from tests.conftest import write_cyclic_sequences  # pylint: disable=import-outside-toplevel
  write_cyclic_sequences(os.path.join(root, GENERATIVE_DATA), num_users=40, num_items=24, min_len=5, max_len=12)
  out = {}
  for name in names or CONFIGS:
    ref_dir = os.path.join(root, f"{name}_1x1")
    ref = run(name, ref_dir, "(1,1)", STEPS)
    ref_p = params(ref_dir, STEPS)
    ref_losses = train_losses(ref_dir)
    out[name] = {"ref_test": ref["metrics"]["test"], "num_leaves": len(ref_p), "ref_losses": ref_losses}
    for mesh in ["(8,1)", "(4,2)"]:
      d = os.path.join(root, f"{name}_{mesh[1]}x{mesh[3]}")
      r = run(name, d, mesh, STEPS)
      p = params(d, STEPS)
      out[name][mesh] = {"param_rel_err": global_rel_err(ref_p, p), "leaf_rel_err": rel_err(ref_p, p), "test": r["metrics"]["test"],
                         "notes": r["notes"], "steps": r["steps"],
                         "differing_test_metrics": differing_metrics(ref["metrics"]["test"], r["metrics"]["test"]),
                         "loss_rel_err": max(abs(l - ref_losses[k]) / abs(ref_losses[k])
                                             for k, l in train_losses(d).items()),
                         "loss_steps": sorted(train_losses(d))}
    # Stopped after 3 steps on 8x1, resumed to 5 on 4x2: where 5 uninterrupted steps end (up to the
    # reduction order of the first 3 steps, which ran on another mesh).
    d = os.path.join(root, f"{name}_resume")
    run(name, d, "(8,1)", 3)
    r = run(name, d, "(4,2)", STEPS)
    out[name]["resume"] = {"param_rel_err": global_rel_err(params(os.path.join(root, f"{name}_4x2"), STEPS),
                                                           params(d, STEPS)),
                           "segments": len(r["segments"]), "steps": r["steps"],
                           "differing_test_metrics": differing_metrics(out[name]["(4,2)"]["test"],
                                                                       r["metrics"]["test"])}
  print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
