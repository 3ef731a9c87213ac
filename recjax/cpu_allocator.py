"""Keep XLA:CPU's per-step scratch memory in the heap instead of mapping it afresh every step.

XLA:CPU allocates one temporary arena per execution (≈ 270 MB for the ML-1M HSTU training step)
and frees it at the end. glibc serves the request from a worker thread, whose secondary arena
cannot hold it, so it is `mmap`ed and `munmap`ed every step: 66k page faults and ≈ 200 ms of
kernel time per step on a 2-core machine (measured; `strace` shows one 270 MB mmap/munmap pair
per step). With one malloc arena, no mmap and no trimming, the block is reused and a step runs
≈ 35% faster. The price: RSS stays at its high-water mark (the free heap top is never given back
to the system, so memory freed by one phase stays with the process), which is why it is applied
only where it pays.

"Never" has to be said as -1. `mallopt` takes an int, so the largest threshold it can write is
2^31 - 1 (2 GB); glibc converts the int to its size_t setting, so -1 becomes SIZE_MAX: no trimming
at all. A 2 GB threshold (the setting until 2026-12-05) trims any step whose scratch block is
larger: the ULTRA-HSTU ranker's step at 16k events (2.8 GB of scratch, scripts/bench_long_sequences.py
--level step) then took 750k page faults and 1.6 s of kernel time per step, 3.6x its 8k step for
2x the FLOPs; the 8k step (1.4 GB) took none (counted with getrusage around the compiled step;
tests/test_cpu_allocator.py's slow test shows the same on a 2.1 GB block).

That heap must also never hold two steps' blocks at once. JAX's CPU client runs a computation on a
worker thread when dispatch is asynchronous (or its inputs are still being copied in), marks the
outputs ready, and frees the block only afterwards, when the worker's task is destroyed: the next
step, started by those outputs, takes its block first. It cannot reuse the old one, so it goes on
top of the heap and the heap grows by a whole block; repeated, with blocks of several batch shapes
and the evaluation's, HSTU-large's 48 ML-1M steps peaked at 2.1-3.1 GB over runs (its block is
≈ 470 MB). So `tune()` also makes JAX dispatch CPU computations synchronously, and `on_device()`
copies a batch in before the call: a step whose inputs are all ready then runs inline in the calling
thread and frees its block before the call returns (the same 48 steps: 1.2 GB, the heap flat
after the first step). The price: the host no longer fetches the next batch while a step runs,
≈ 2.3 ms per step (next batch 0.6, copy-in 1.2, FLOP counter 0.5 ms; HSTU ML-1M, whose step took
320 ms on the loaded 2-core VM), which asynchronous dispatch used to overlap with the step.

When `tune()` applies the settings (the rule, decided from the environment before JAX starts):
  1. `RECJAX_TUNE_MALLOC=0` (or off/false/no): never. `=1` (or on/true/yes): skip rule 3.
  2. `LD_PRELOAD` names another allocator (jemalloc, tcmalloc, mimalloc): never; it owns malloc
     and glibc's settings would change nothing.
  3. The backend will be CPU: `JAX_PLATFORMS` is set and names only "cpu", or it is unset and no
     accelerator plugin is installed (no `jax_plugins` entry point or module, no `libtpu`). A CUDA
     or TPU plugin on a host without the device therefore leaves malloc alone: set
     `JAX_PLATFORMS=cpu` (or `RECJAX_TUNE_MALLOC=1`) there.
  4. Linux with glibc (`mallopt`); elsewhere nothing is done.
`tune()` must run before JAX starts its thread pool, i.e. before the first JAX computation: the
entry points call it first thing. Its `MallocStatus` (what was applied, or why not) goes into
every results file. The malloc settings can be given from outside as
`GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736`
(the dispatch: `jax.config.update("jax_cpu_enable_async_dispatch", False)` before JAX starts).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import importlib.util
from importlib import metadata
import os
import pkgutil
import platform
from typing import Mapping

ENV_VAR = "RECJAX_TUNE_MALLOC"
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NO_TRIM = -1   # read by glibc as size_t: SIZE_MAX, never trim (module docstring: 2^31 - 1 trims above 2 GB)
SETTINGS = {"arena_max": 1, "mmap_max": 0, "trim_threshold": _NO_TRIM}
# JAX's CPU client: computations whose inputs are ready run inline (module docstring).
JAX_SETTINGS = {"jax_cpu_enable_async_dispatch": False}
_PARAMS = {"arena_max": _M_ARENA_MAX, "mmap_max": _M_MMAP_MAX, "trim_threshold": _M_TRIM_THRESHOLD}

_FALSE = ("0", "off", "false", "no")
_TRUE = ("1", "on", "true", "yes")


@dataclasses.dataclass(frozen=True)
class MallocStatus:
  """What `tune()` did: `applied` settings (empty when nothing changed) and the reason."""
  applied: bool
  reason: str
  settings: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    return {"applied": self.applied, "reason": self.reason, "settings": dict(self.settings)}


_status: MallocStatus | None = None


def accelerator_plugins() -> list[str]:
  """Names of installed JAX accelerator plugins (found without importing JAX)."""
  found = [ep.name for ep in metadata.entry_points(group="jax_plugins")]
  try:
    spec = importlib.util.find_spec("jax_plugins")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    found += [m.name for m in pkgutil.iter_modules(list(spec.submodule_search_locations))]
  if importlib.util.find_spec("libtpu") is not None:
    found.append("libtpu")
  return sorted(set(found))


def decide(environ: Mapping[str, str] | None = None, plugins: list[str] | None = None) -> tuple[bool, str]:
  """(tune?, why) by rules 1-3 of the module docstring; reads only `environ` and `plugins`.

  Args:
    environ: the environment (default os.environ).
    plugins: installed accelerator plugins (default `accelerator_plugins()`).
  """
  env = os.environ if environ is None else environ
  choice = env.get(ENV_VAR, "").strip().lower()
  if choice in _FALSE:
    return False, f"opted out ({ENV_VAR}={env[ENV_VAR]})"
  if choice and choice not in _TRUE:
    raise ValueError(f"{ENV_VAR} must be one of {_FALSE + _TRUE} (or unset), got {env[ENV_VAR]!r}")
  preload = env.get("LD_PRELOAD", "")
  other = [a for a in OTHER_ALLOCATORS if a in preload.lower()]
  if other:
    return False, f"another allocator is preloaded ({other[0]} in LD_PRELOAD={preload})"
  if choice in _TRUE:
    return True, f"forced ({ENV_VAR}={env[ENV_VAR]})"
  platforms = [p.strip().lower() for p in env.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    if platforms != ["cpu"]:
      return False, f"backend is not CPU-only (JAX_PLATFORMS={env['JAX_PLATFORMS']})"
    return True, "CPU backend (JAX_PLATFORMS=cpu)"
  plugins = accelerator_plugins() if plugins is None else plugins
  if plugins:
    return False, (f"accelerator plugin(s) installed ({', '.join(plugins)}): the backend may not be CPU; "
                   f"set JAX_PLATFORMS=cpu or {ENV_VAR}=1 to tune anyway")
  return True, "CPU backend (no accelerator plugin installed)"


def _libc():
  if platform.system() != "Linux":
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()   # glibc only (musl has no such symbol)
    return libc
  except (OSError, AttributeError):
    return None


def tune() -> MallocStatus:
  """Decides once per process and applies the settings where the rule says so; returns the status."""
  global _status
  if _status is not None:
    return _status
  want, why = decide()
  if not want:
    _status = MallocStatus(False, why)
    return _status
  libc = _libc()
  if libc is None:
    _status = MallocStatus(False, f"{why}, but malloc is not glibc's ({platform.system()}): nothing to tune")
    return _status
  failed = [name for name, value in SETTINGS.items() if libc.mallopt(_PARAMS[name], value) != 1]
  if failed:
    # mallopt settings already taken stay in effect; report exactly which ones.
    applied = {k: v for k, v in SETTINGS.items() if k not in failed}
    _status = MallocStatus(bool(applied), f"{why}; mallopt refused {', '.join(failed)}", applied)
  else:
    inline = _dispatch_synchronously()
    note = "" if inline else "; JAX had already started, so its dispatch stays asynchronous"
    _status = MallocStatus(True, why + note, {**SETTINGS, **inline})
  return _status


def _dispatch_synchronously() -> dict:
  """Sets JAX_SETTINGS (read when JAX creates its CPU client) -> what was applied ({} when too late)."""
  import jax  # pylint: disable=import-outside-toplevel  (the module only: no backend starts here)
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  if xla_bridge.backends_are_initialized():
    return {}
  for name, value in JAX_SETTINGS.items():
    jax.config.update(name, value)
  return dict(JAX_SETTINGS)


def on_device(tree):
  """`tree` (a batch of numpy or JAX arrays) copied to the default device and ready, when `tune()`
  made dispatch synchronous, so that a step called on it runs inline and frees its scratch block
  before it returns (module docstring); `tree` unchanged otherwise (the asynchronous copy of the
  call itself is then as good)."""
  if status().settings.get("jax_cpu_enable_async_dispatch") is not False:
    return tree
  import jax  # pylint: disable=import-outside-toplevel
  return jax.block_until_ready(jax.device_put(tree))


def status() -> MallocStatus:
  """The status of this process's `tune()` (applies nothing; "not called" before it runs)."""
  return _status if _status is not None else MallocStatus(False, "tune() was not called in this process")


def is_tuned() -> bool:
  """Whether `tune()` has run and taken effect in this process (reports; applies nothing)."""
  return status().applied
