"""When the malloc settings apply (the rule, as a pure function) and that they take effect.

The effect is measured in a child process: mallopt cannot be undone, and the pytest process's
malloc must stay as it was for every other test.
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
size = 64 << 20   # above glibc's largest mmap threshold (32 MB): mmap'ed per call by default
a = libc.malloc(size); ctypes.memset(a, 1, size); libc.free(a)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = libc.malloc(size); ctypes.memset(b, 2, size)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
libc.free(b)
print(json.dumps({"status": status.to_dict(), "faults": faults}))
"""


def _child(**env_changes):
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "JAX_PLATFORMS", cpu_allocator.ENV_VAR, "GLIBC_TUNABLES")}
  env.update(env_changes)
  out = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc malloc settings are Linux-only")
def test_tune_keeps_large_blocks_in_the_heap_and_opt_out_does_not():
  tuned = _child(JAX_PLATFORMS="cpu")
  if not tuned["status"]["applied"] and "not glibc" in tuned["status"]["reason"]:
    pytest.skip("not glibc")
  assert tuned["status"] == {"applied": True, "reason": "CPU backend (JAX_PLATFORMS=cpu)",
                             "settings": cpu_allocator.SETTINGS}
  # Mapped afresh, every 4 KB page faults on first touch (16,384 here); reused, almost none do.
  assert tuned["faults"] < 1000, f"{tuned['faults']} page faults: the freed block was mapped again"
  untouched = _child(JAX_PLATFORMS="cpu", RECJAX_TUNE_MALLOC="0")
  assert untouched["status"] == {"applied": False, "reason": "opted out (RECJAX_TUNE_MALLOC=0)",
                                 "settings": {}}
  assert untouched["faults"] > 10_000   # glibc's default: the 64 MB block is unmapped and mapped again


def test_tune_never_ran_in_the_test_process():
  # The pytest process keeps glibc's defaults: nothing here may call tune().
  assert not cpu_allocator.is_tuned()
  assert cpu_allocator.status().reason == "tune() was not called in this process"


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
