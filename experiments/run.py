"""The one entry point: python -m experiments.run --config=configs/<name>.py --workdir=DIR

Overrides: --config.model.num_blocks=4 ; quick test: --config=configs/<name>.py:quick
Writes results/<dataset>/<config name>.json (or --results=PATH).
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard logs; rerun to resume")
_RESULTS = flags.DEFINE_string("results", None, "results JSON path (default results/<dataset>/<config>.json)")


def main(argv):
  del argv
  from recjax import cpu_allocator  # pylint: disable=import-outside-toplevel
  cpu_allocator.tune()   # before JAX starts its threads: reuse XLA's per-step scratch memory
  import jax  # pylint: disable=import-outside-toplevel
  from recjax.train import loop, results  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax and grain are chatty at INFO; progress is printed
  config = _CONFIG.value
  config_path = flags.FLAGS["config"].config_filename
  quick = config.get("quick", False)
  name = config.name + ("_quick" if quick else "")
  workdir = _WORKDIR.value or os.path.join("workdirs", name)
  logging.info("config %s, workdir %s, backend %s", config_path, workdir, jax.default_backend())
  print(f"recjax: {name} -> workdir {workdir}", flush=True)
  summary = loop.train_and_evaluate(config, workdir)
  record = {"dataset": config.dataset_label, "model": config.model.name, "config": name,
            **results.base_record(config, config_path),
            "wall_clock_s": summary["train_wall_clock_s"], "partial": False,
            **summary, "config_values": config.to_dict()}
  # The code that ran is the last segment's (HEAD may have moved while a long run trained).
  if summary.get("segments"):
    record["commit"] = summary["segments"][-1]["commit"]
  path = _RESULTS.value or os.path.join("results", config.dataset_label, f"{name}.json")
  results.write_results(path, record)
  t = summary["metrics"]["test"]
  print("test: " + "  ".join(f"{k} {t[k]:.4f}" for k in ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200",
                                                         "ndcg@200", "mrr")), flush=True)
  print(f"results written to {path}", flush=True)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
