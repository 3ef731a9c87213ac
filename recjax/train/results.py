"""The results file every run writes: what ran, on what, for how long, and what it measured."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "ml_collections")


def versions() -> dict:
  out = {"python": platform.python_version()}
  for p in PACKAGES:
    try:
      out[p] = metadata.version(p)
    except metadata.PackageNotFoundError:
      out[p] = None
  return out


def hardware() -> dict:
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  import jax  # pylint: disable=import-outside-toplevel
  from recjax import cpu_allocator, native  # pylint: disable=import-outside-toplevel
  return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
          "jax_backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "malloc_tuned": cpu_allocator.is_tuned(), "malloc": cpu_allocator.status().to_dict(),
          "native_kernels": native.available(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


SOURCE_DIRS = ("recjax", "configs", "experiments", "pallas_kernels", "scripts")


def git_commit(cwd: str | None = None) -> str:
  """HEAD's sha, "+dirty" when the source folders differ from it: modified, staged, deleted or
  untracked (not ignored) files, since a new untracked module changes what runs as much as an edit."""
  try:
    sha = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=cwd, text=True,
                                  stderr=subprocess.DEVNULL).strip()
    pathspecs = [f":(top){d}" for d in SOURCE_DIRS]   # the repository's folders, whatever the cwd
    changes = subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=all", "--", *pathspecs],
                                      cwd=cwd, text=True, stderr=subprocess.DEVNULL)
    return sha + ("+dirty" if changes.strip() else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def write_results(path: str, record: dict) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".part"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2, sort_keys=False, default=float)
    f.write("\n")
  os.replace(tmp, path)
  return path


def base_record(config, config_path: str) -> dict:
  return {
      "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.run"] + sys.argv[1:]),
      "config_file": config_path,
      "commit": git_commit(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
      "versions": versions(),
      "hardware": hardware(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "seed": config.seed,
  }
