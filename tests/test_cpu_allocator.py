"""The malloc settings take effect: a large block freed and asked for again is not mapped afresh."""
import ctypes
import platform
import resource

import pytest

from recjax import cpu_allocator


def _faults_of_second_use(libc, size):
  """Minor page faults while touching a `size` block that was just freed and asked for again."""
  a = libc.malloc(size)
  ctypes.memset(a, 1, size)
  libc.free(a)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  b = libc.malloc(size)
  ctypes.memset(b, 2, size)
  after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  libc.free(b)
  return after - before


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc malloc settings are Linux-only")
def test_tune_keeps_large_blocks_in_the_heap():
  if not cpu_allocator.tune():
    pytest.skip("not glibc")
  libc = ctypes.CDLL("libc.so.6")
  libc.malloc.restype = ctypes.c_void_p
  libc.malloc.argtypes = [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  size = 64 << 20   # above glibc's largest mmap threshold (32 MB): mmap'ed per call by default
  faults = _faults_of_second_use(libc, size)
  # Mapped afresh, every 4 KB page faults on first touch (16,384 here); reused, almost none do.
  assert faults < 1000, f"{faults} page faults: the freed block was unmapped and mapped again"
  assert cpu_allocator.tune()   # idempotent
