"""When the malloc settings apply (the rule, as a pure function) and that they take effect: large
blocks stay in the heap, and consecutive jitted steps reuse one scratch block (synchronous dispatch).

The effects are measured in child processes: mallopt and JAX's dispatch mode cannot be undone, and
the pytest process must stay as it was for every other test.
"""
import json
import os
import platform
import subprocess
import sys

import pytest

from recjax import cpu_allocator
from tests.conftest import REPO

_CHILD = r"""
import ctypes, json, resource, sys
from recjax import cpu_allocator
status = cpu_allocator.tune()
assert cpu_allocator.tune() is status   # decided once per process
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
# Default 64 MB: above glibc's largest mmap threshold (32 MB), so mmap'ed per call by default.
size = int(sys.argv[1]) if len(sys.argv) > 1 else 64 << 20
a = libc.malloc(size); ctypes.memset(a, 1, size); libc.free(a)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = libc.malloc(size); ctypes.memset(b, 2, size)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
libc.free(b)
print(json.dumps({"status": status.to_dict(), "faults": faults}))
"""


def _child(*args, **env_changes):
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "JAX_PLATFORMS", cpu_allocator.ENV_VAR, "GLIBC_TUNABLES")}
  env.update(env_changes)
  out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc malloc settings are Linux-only")
def test_tune_keeps_large_blocks_in_the_heap_and_opt_out_does_not():
  tuned = _child(JAX_PLATFORMS="cpu")
  if not tuned["status"]["applied"] and "not glibc" in tuned["status"]["reason"]:
    pytest.skip("not glibc")
  assert tuned["status"] == {"applied": True, "reason": "CPU backend (JAX_PLATFORMS=cpu)",
                             "settings": {**cpu_allocator.SETTINGS, **cpu_allocator.JAX_SETTINGS}}
  # Mapped afresh, every 4 KB page faults on first touch (16,384 here); reused, almost none do.
  assert tuned["faults"] < 1000, f"{tuned['faults']} page faults: the freed block was mapped again"
  untouched = _child(JAX_PLATFORMS="cpu", RECJAX_TUNE_MALLOC="0")
  assert untouched["status"] == {"applied": False, "reason": "opted out (RECJAX_TUNE_MALLOC=0)",
                                 "settings": {}}
  assert untouched["faults"] > 10_000   # glibc's default: the 64 MB block is unmapped and mapped again


@pytest.mark.slow   # touches 2.1 GB twice in a child: too much memory for the default suite
@pytest.mark.skipif(platform.system() != "Linux", reason="glibc malloc settings are Linux-only")
def test_tune_keeps_a_block_above_2gb_in_the_heap():
  # mallopt's int cannot say more than 2^31 - 1 bytes; a threshold of that size gives a larger freed
  # block back to the system (the ranker's 16k-event step, 2.8 GB of scratch, faulted 750k pages
  # per step). tune() passes -1, which glibc reads as SIZE_MAX: never trim.
  size = (2 << 30) + (64 << 20)
  tuned = _child(size, JAX_PLATFORMS="cpu")
  if not tuned["status"]["applied"] and "not glibc" in tuned["status"]["reason"]:
    pytest.skip("not glibc")
  assert tuned["faults"] < 1000, f"{tuned['faults']} page faults: the freed 2.1 GB block was trimmed"


_STEPS_CHILD = r"""
import ctypes, functools, json, time
from recjax import cpu_allocator
status = cpu_allocator.tune()
import jax, jax.numpy as jnp
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
  _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2

@functools.partial(jax.jit, donate_argnums=(0,))
def step(w, x):   # twelve [768, 768] activations stacked: one ~28 MB scratch block per call
  acts = []
  for i in range(12):
    x = jnp.tanh(x @ w + i)
    acts.append(x)
  s = jnp.cumsum(jnp.stack(acts), axis=0)
  return w + 1e-6 * jnp.sum(s[-1] * s[0]), jnp.sum(s[5])

w, x = jnp.full((768, 768), 1e-3), jnp.ones((768, 768))
temp = step.lower(w, x).compile().memory_analysis().temp_size_in_bytes
for _ in range(2):
  w, _ = step(w, cpu_allocator.on_device(x))
jax.block_until_ready(w)
in_use = libc.mallinfo2().uordblks
held, arenas = [], []   # per call: bytes still allocated beyond the start once it returned; heap size
for _ in range(24):
  w, out = step(w, cpu_allocator.on_device(x))
  time.sleep(0.02)   # an asynchronous step would have started (and taken its block) by now
  held.append(libc.mallinfo2().uordblks - in_use)
  arenas.append(libc.mallinfo2().arena)
print(json.dumps({"status": status.to_dict(), "temp": temp, "held": max(held), "growth": arenas[-1] - arenas[0],
                  "inline": jax.config.read("jax_cpu_enable_async_dispatch") is False}))
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc malloc settings are Linux-only")
@pytest.mark.usefixtures("xla_optimized")   # runs real steps: 2x slower with XLA's backend passes off
def test_tuned_steps_run_inline_and_reuse_one_scratch_block():
  """With asynchronous dispatch the next step could take its block before the last one is freed
  (the heap then grows by a block; how often depends on timing); run inline, it never does."""
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", cpu_allocator.ENV_VAR, "GLIBC_TUNABLES")}
  out = subprocess.run([sys.executable, "-c", _STEPS_CHILD], cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu"},
                       capture_output=True, text=True, timeout=300, check=True)
  got = json.loads(out.stdout.strip().splitlines()[-1])
  if not got["status"]["applied"]:
    pytest.skip(f"malloc not tuned here: {got['status']['reason']}")
  assert got["inline"] and got["status"]["settings"]["jax_cpu_enable_async_dispatch"] is False
  assert got["temp"] > 20 << 20
  # Each call returned with its block freed (asynchronous, the running step would still hold it).
  assert got["held"] < got["temp"] // 2, got
  # Later calls reuse freed blocks: a step that never did would grow the heap by a block on each of the
  # 24 calls. It may still grow a few times early on: other threads share the one arena, and their small
  # allocations can land in a freed block before the next step asks for it (seen: 0-3 blocks, by timing),
  # so the bound is half the calls.
  assert got["growth"] < 12 * got["temp"], got


def test_tune_never_ran_in_the_test_process():
  # The pytest process keeps glibc's defaults: nothing here may call tune().
  assert not cpu_allocator.is_tuned()
  assert cpu_allocator.status().reason == "tune() was not called in this process"
  batch = {"ids": [[1, 2]]}
  assert cpu_allocator.on_device(batch) is batch   # untuned: batches go to the step as they are


@pytest.mark.parametrize("env,plugins,want,reason", [
    ({}, [], True, "no accelerator plugin installed"),
    ({}, ["cuda"], False, "accelerator plugin(s) installed (cuda)"),
    ({"JAX_PLATFORMS": "cpu"}, ["cuda"], True, "JAX_PLATFORMS=cpu"),
    ({"JAX_PLATFORMS": "cuda"}, [], False, "not CPU-only (JAX_PLATFORMS=cuda)"),
    ({"JAX_PLATFORMS": "cuda,cpu"}, [], False, "not CPU-only"),
    ({"JAX_PLATFORMS": "tpu"}, [], False, "not CPU-only"),
    ({"RECJAX_TUNE_MALLOC": "0"}, [], False, "opted out (RECJAX_TUNE_MALLOC=0)"),
    ({"RECJAX_TUNE_MALLOC": "off", "JAX_PLATFORMS": "cpu"}, [], False, "opted out"),
    ({"RECJAX_TUNE_MALLOC": "1"}, ["cuda"], True, "forced (RECJAX_TUNE_MALLOC=1)"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, [], False, "jemalloc in LD_PRELOAD"),
    ({"LD_PRELOAD": "libtcmalloc_minimal.so.4", "JAX_PLATFORMS": "cpu"}, [], False, "tcmalloc"),
    ({"LD_PRELOAD": "/opt/libmimalloc.so", "RECJAX_TUNE_MALLOC": "1"}, [], False, "mimalloc"),
    ({"LD_PRELOAD": "/opt/libfaketime.so"}, [], True, "no accelerator plugin"),
])
def test_decide(env, plugins, want, reason):
  got, why = cpu_allocator.decide(env, plugins)
  assert got is want
  assert reason in why


def test_decide_rejects_unknown_switch_value():
  with pytest.raises(ValueError, match="RECJAX_TUNE_MALLOC must be one of"):
    cpu_allocator.decide({"RECJAX_TUNE_MALLOC": "maybe"}, [])


def test_no_accelerator_plugin_in_the_cpu_test_environment():
  # The CPU-only stack this suite runs on: tune() would apply without JAX_PLATFORMS.
  plugins = cpu_allocator.accelerator_plugins()
  if plugins:
    pytest.skip(f"accelerator plugins installed: {plugins}")
  assert cpu_allocator.decide({}, None)[0]
