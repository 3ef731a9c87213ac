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
  from recjax import compile_options, cpu_allocator, native  # pylint: disable=import-outside-toplevel
  return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
          "jax_backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "malloc_tuned": cpu_allocator.is_tuned(), "malloc": cpu_allocator.status().to_dict(),
          "native_kernels": native.available(),
          "xla_compile_options": compile_options.step_options(),   # of the train and eval steps
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


class ResultsOverwriteError(RuntimeError):
  """A run would replace a results file that another workdir's run wrote."""


def _same_dir(a: str, b: str) -> bool:
  return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def portable_path(path: str) -> str:
  """`path` relative to the current directory when inside it (a clone elsewhere compares equal), else absolute."""
  full = os.path.abspath(path)
  rel = os.path.relpath(full)
  return full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def check_results_target(path: str, workdir: str, default_workdir: str) -> None:
  """Refuses to let a run replace a results file that a run in another workdir wrote.

  A run's default results path follows its config name, not its workdir, so a probe run of a
  committed config (`--workdir=/tmp/try`) would silently overwrite the committed result. Files
  record their workdir (relative to the directory the run started in); older files without one were
  written from the default workdir. Call it before training, so nothing is spent on a run whose
  results cannot be written.
  """
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      stored = json.load(f).get("workdir", default_workdir)
  except (OSError, ValueError, AttributeError):
    stored = None   # unreadable: it cannot tell where it came from, so it is not replaced silently
  if stored is not None and _same_dir(stored, workdir):
    return   # the same run again (a resume, a rerun, a --snapshot of it): its own file
  origin = ("is not a readable results file" if stored is None else
            f"was written by a run in workdir {stored!r}, not this run's {workdir!r}")
  raise ResultsOverwriteError(
      f"{path} exists and {origin}: pass --results=PATH to write this run's results elsewhere, or "
      "--overwrite_results to replace it")


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
