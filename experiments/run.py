"""The one entry point: python -m experiments.run --config=configs/<name>.py --workdir=DIR

Overrides: --config.model.num_blocks=4 ; quick test: --config=configs/<name>.py:quick
Writes results/<dataset>/<config name>.json (or --results=PATH). That default follows the config name,
not --workdir, so a run refuses to replace a results file written from another workdir (a probe run
of a committed config in /tmp would otherwise overwrite the committed result): give --results=PATH,
or --overwrite_results to replace it on purpose.

--allow_config_change: resuming --workdir with a config that differs from its checkpoint's (other
than in train length, logging/eval/checkpoint frequency, eval batch size or cut-offs; see
recjax/train/config_check.py) stops with the differing keys named; this flag continues anyway.
The allocator: RECJAX_TUNE_MALLOC=0 keeps glibc's defaults (recjax/cpu_allocator.py has the rule);
what was applied is in the results file under hardware.malloc.

--snapshot: while a long run trains (or after it was stopped), evaluate the latest checkpoint in
--workdir and write its results file marked `"partial": true`, without training or touching the
run's workdir. The finished run later overwrites that file with the final one. On a finished run,
with a config that differs only in evaluation (e.g. `:history_removed`, plus --allow_config_change),
it re-evaluates the final parameters under that protocol; the results file says so.

--distributed (or RECJAX_DISTRIBUTED=1): one process of a multi-host run; `jax.distributed.initialize`
runs before anything else touches JAX (coordinator, process count and id from --coordinator,
--num_processes, --process_id where given, else from the cluster environment JAX detects). Every
process runs the same command; `config.mesh` spans all processes' devices, each process feeds its
own devices' shards of the same global batch, and only process 0 writes the results file.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard logs; rerun to resume")
_RESULTS = flags.DEFINE_string("results", None, "results JSON path (default results/<dataset>/<config>.json)")
_OVERWRITE_RESULTS = flags.DEFINE_bool("overwrite_results", False, "replace the default results file even "
                                       "where a run in another workdir wrote it")
_SNAPSHOT = flags.DEFINE_bool("snapshot", False, "evaluate --workdir's latest checkpoint (no training) and "
                              "write a results file marked partial")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "resume even where the config differs from the checkpoint's beyond "
    "recjax.train.config_check.RESUMABLE_CHANGES (the differences are recorded in the results' segments)")

_DISTRIBUTED = flags.DEFINE_bool("distributed", os.environ.get("RECJAX_DISTRIBUTED", "") == "1",
                                 "call jax.distributed.initialize() first (multi-host; env RECJAX_DISTRIBUTED=1)")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "--distributed: host:port of process 0 (default: detected)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "--distributed: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "--distributed: this process's id")


def latest_finished_checkpoint(checkpoint_dir: str) -> int | None:
  """Highest step orbax has finalised in `checkpoint_dir` (in-progress saves have non-numeric names)."""
  if not os.path.isdir(checkpoint_dir):
    return None
  steps = [int(d) for d in os.listdir(checkpoint_dir) if d.isdigit()]
  return max(steps) if steps else None


def _snapshot_workdir(workdir: str, scratch: str) -> int:
  """Copies the latest checkpoint of `workdir` into `scratch` (a live run may save or delete meanwhile)."""
  src = os.path.join(workdir, "checkpoints")
  for _ in range(5):
    step = latest_finished_checkpoint(src)
    if step is None:
      raise FileNotFoundError(f"--snapshot: no finished checkpoint in {src}; nothing to evaluate")
    try:
      shutil.copytree(os.path.join(src, str(step)), os.path.join(scratch, "checkpoints", str(step)))
    except (FileNotFoundError, shutil.Error):   # the live run deleted it while we copied: take the next
      shutil.rmtree(os.path.join(scratch, "checkpoints"), ignore_errors=True)
      continue
    if os.path.isdir(os.path.join(workdir, "data")):   # generated data / array_record cache: reuse, read-only
      os.symlink(os.path.abspath(os.path.join(workdir, "data")), os.path.join(scratch, "data"))
    return step
  raise RuntimeError(f"--snapshot: checkpoints in {src} kept changing while being copied; try again")


def main(argv):
  del argv
  from recjax import cpu_allocator  # pylint: disable=import-outside-toplevel
  malloc = cpu_allocator.tune()   # before JAX starts its threads: reuse XLA's per-step scratch memory
  import jax  # pylint: disable=import-outside-toplevel
  if _DISTRIBUTED.value:   # before any other JAX call: the device list is global from here on
    jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU devices' collectives (host runs)
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  from recjax.tasks.base import lookup  # pylint: disable=import-outside-toplevel
  from recjax.train import loop, results  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax and grain are chatty at INFO; progress is printed
  config = _CONFIG.value
  config_values = config.to_dict()
  config_path = flags.FLAGS["config"].config_filename
  quick = config.get("quick", False)
  name = config.name + ("_quick" if quick else "")
  workdir = _WORKDIR.value or os.path.join("workdirs", name)
  logging.info("config %s, workdir %s, backend %s; malloc tuned: %s (%s)", config_path, workdir,
               jax.default_backend(), malloc.applied, malloc.reason)
  path = _RESULTS.value or os.path.join("results", config.dataset_label, f"{name}.json")
  default_workdir = os.path.join("workdirs", name)
  if not (_RESULTS.value or _OVERWRITE_RESULTS.value):
    results.check_results_target(path, workdir, default_workdir)
  extra = {"partial": False}
  with tempfile.TemporaryDirectory(prefix="recjax_snapshot_") as scratch:
    if _SNAPSHOT.value:
      step = _snapshot_workdir(workdir, scratch)
      print(f"recjax: {name} -> evaluating the checkpoint at step {step} of {workdir} (snapshot)", flush=True)
      config.train.max_steps = step   # resume at `step`, train nothing, evaluate
      summary = loop.train_and_evaluate(config, scratch, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
      summary["segments"] = summary["segments"][:-1]   # the snapshot's own segment trained nothing
      planned = config_values["train"]["num_epochs"]
      if summary["epochs"] >= planned - 1e-6:   # a finished run re-evaluated (e.g. under another protocol)
        note = (f"the finished run's final checkpoint (step {step}, {summary['epochs']:.1f} epochs) "
                "evaluated once: the test row is the final parameters', not a per-epoch selection")
      else:
        note = f"snapshot of a run in progress: checkpoint at step {step}, {summary['epochs']:.1f} of {planned} epochs"
      extra = {"partial": True, "snapshot_of": os.path.abspath(workdir), "partial_note": note}
    else:
      print(f"recjax: {name} -> workdir {workdir}", flush=True)
      summary = loop.train_and_evaluate(config, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  record = {"dataset": config.dataset_label, "model": config.model.name, "config": name,
            "workdir": results.portable_path(workdir),
            **results.base_record(config, config_path),
            "wall_clock_s": summary["train_wall_clock_s"], **extra,
            **summary, "config_values": config_values}
  # The code that ran is the last segment's (HEAD may have moved while a long run trained).
  if summary.get("segments"):
    record["commit"] = summary["segments"][-1]["commit"]
  if jax.process_index() != 0:   # one results file per run, not per process
    print(f"process {jax.process_index()}: done; process 0 writes {path}", flush=True)
    return
  results.write_results(path, record)
  t = summary["metrics"]["test"]   # the task names its headline metrics (dotted keys into metrics)
  print("test: " + "  ".join(f"{k} {lookup(t, k):.4f}" for k in summary["headline"]["test"]), flush=True)
  print(f"results written to {path}" + (" (PARTIAL)" if extra["partial"] else ""), flush=True)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
