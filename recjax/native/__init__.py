"""CPU kernels in C++, called from jitted JAX code as XLA FFI custom calls.

XLA:CPU runs gathers and scatter-adds through memory, one element at a time: for the sampled
softmax of an ML-1M HSTU step (14k tokens x 129 candidates x 50 dims) the gather, the batched dot
and the table gradient's scatter-add take ≈ 110-150 ms of a ≈ 400 ms step, while the arithmetic
is only ≈ 0.3 GFLOP. A fused loop that reads each candidate row once from the cache-resident
table does the forward and backward pass in a few ms per thread. HSTU's causal attention is the
same story: score blocks run through memory op by op, where `causal_attention.cc` keeps a block of
queries' scores in registers (`layers/native_attention.py` wraps it). Each kernel here replaces one
pure-JAX function that stays the reference (and the path on GPU, on other platforms and when no
compiler is found); tests check that both give the same values and gradients.

The sources are compiled on first use with the system C++ compiler (`CXX`, else g++ / c++ /
clang++) against the XLA FFI headers that ship with jaxlib, within
`$RECJAX_NATIVE_COMPILE_TIMEOUT` seconds (default 300), and cached under `$RECJAX_NATIVE_CACHE`
(default `~/.cache/recjax/native`), keyed by the source, the flags, the jaxlib version, the
compiler and its version string, and this CPU's instruction set. `RECJAX_NATIVE=0` turns the
kernels off. Kernels run on `thread_count` threads: the CPUs this process may use (affinity mask
and cgroup quota, not the host's core count), at most one per 512 tokens, or
`$RECJAX_NATIVE_THREADS`.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = {"recjax_sampled_softmax": ("sampled_softmax.cc", "RecjaxSampledSoftmax"),
            "recjax_causal_attention_fwd": ("causal_attention.cc", "RecjaxCausalAttentionFwd"),
            "recjax_causal_attention_bwd": ("causal_attention.cc", "RecjaxCausalAttentionBwd")}
_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-pthread"]
_state: dict[str, object] = {}
MIN_TOKENS_PER_THREAD = 512   # fewer tokens per thread: starting the thread costs more than it saves
DEFAULT_COMPILE_TIMEOUT_S = 300.0


def _cpu_signature() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return line
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _compiler() -> str | None:
  for cxx in (os.environ.get("CXX"), "g++", "c++", "clang++"):
    if cxx and shutil.which(cxx):
      return shutil.which(cxx)
  return None


def _positive_env(name: str, default: float, kind=float):
  """$name parsed as a positive `kind`, `default` when unset; anything else is a ValueError naming it."""
  raw = os.environ.get(name, "").strip()
  if not raw:
    return default
  try:
    value = kind(raw)
  except ValueError:
    value = 0
  if not value > 0:
    raise ValueError(f"${name} must be a positive {kind.__name__}, got {raw!r}")
  return value


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
  """Runs `cmd` with the compile timeout; a hang or a missing program is a RuntimeError naming it."""
  timeout = _positive_env("RECJAX_NATIVE_COMPILE_TIMEOUT", DEFAULT_COMPILE_TIMEOUT_S)
  try:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    raise RuntimeError(f"{what} timed out after {timeout:g} s (raise $RECJAX_NATIVE_COMPILE_TIMEOUT to wait "
                       f"longer): {' '.join(cmd)}") from None
  except OSError as e:
    raise RuntimeError(f"{what} could not run: {' '.join(cmd)}: {e}") from None


def _compiler_version(cxx: str) -> str:
  done = _run([cxx, "--version"], "asking the C++ compiler its version")
  return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else ""


def _jaxlib_version() -> str:
  return jaxlib.__version__


def _build(source: str) -> str:
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found (set CXX)")
  with open(os.path.join(_HERE, source), "rb") as f:
    code = f.read()
  # The headers (and the FFI ABI) come with jaxlib; the machine code depends on compiler and CPU.
  key_parts = [" ".join(_FLAGS), _jaxlib_version(), cxx, _compiler_version(cxx), _cpu_signature()]
  key = hashlib.sha256(code + "\0".join(key_parts).encode()).hexdigest()[:16]
  cache = os.environ.get("RECJAX_NATIVE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "recjax", "native"))
  os.makedirs(cache, exist_ok=True)
  lib = os.path.join(cache, f"{os.path.splitext(source)[0]}-{key}.so")
  if not os.path.exists(lib):
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    cmd = [cxx, *_FLAGS, "-isystem", jax.ffi.include_dir(), os.path.join(_HERE, source), "-o", tmp]
    logging.info("recjax.native: compiling %s (once per machine; a few seconds)", source)
    try:
      done = _run(cmd, f"compiling {source}")
      if done.returncode != 0:
        raise RuntimeError(f"compiling {source} failed:\n{' '.join(cmd)}\n{done.stderr[-2000:]}")
      os.replace(tmp, lib)   # atomic: concurrent builders never load a half-written file
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
  return lib


def available() -> bool:
  """Whether the kernels are compiled and registered (compiles them on the first call)."""
  if "ok" not in _state:
    _state["ok"] = False
    if os.environ.get("RECJAX_NATIVE", "1") == "0":
      _state["why"] = "turned off by RECJAX_NATIVE=0"
      return False
    try:
      for target, (source, symbol) in _SOURCES.items():
        lib = ctypes.cdll.LoadLibrary(_build(source))
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
      _state["ok"] = True
    except (RuntimeError, OSError, AttributeError) as e:
      _state["why"] = str(e)
      logging.warning("recjax.native unavailable, using the pure-JAX path: %s", e)
  return bool(_state["ok"])


def why_unavailable() -> str | None:
  return None if available() else str(_state.get("why"))


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
  """CPUs' worth of time the cgroup may use (quota / period), or None when unlimited or unknown."""
  for quota_file, period_file in (("cpu.max", None),                                      # cgroup v2
                                  ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):    # cgroup v1
    try:
      with open(os.path.join(root, quota_file)) as f:
        fields = f.read().split()
      if period_file is not None:
        with open(os.path.join(root, period_file)) as f:
          fields += f.read().split()
      quota, period = fields[0], fields[1]
      if quota in ("max", "-1"):
        return None
      return float(quota) / float(period) if float(quota) > 0 and float(period) > 0 else None
    except (OSError, IndexError, ValueError):
      continue
  return None


def usable_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
  """CPUs this process may run on: its affinity mask, lowered to a cgroup CPU quota if one is set.

  Not `os.cpu_count()`, which counts the host's cores: a 2-CPU container on a 64-core host would
  start 64 threads that then wait on each other.
  """
  try:
    n = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):   # not on Linux
    n = os.cpu_count() or 1
  quota = _cgroup_cpu_quota(cgroup_root)
  if quota is not None:
    n = min(n, max(1, math.ceil(quota)))
  return max(1, n)


def thread_count(num_tokens: int, cpus: int | None = None) -> int:
  """Threads for a kernel over `num_tokens` tokens.

  `$RECJAX_NATIVE_THREADS` when set (a positive integer), else `cpus` (default `usable_cpus()`)
  capped at one thread per MIN_TOKENS_PER_THREAD tokens; never more than the tokens.
  """
  override = _positive_env("RECJAX_NATIVE_THREADS", 0, int)
  if override:
    n = override
  else:
    n = min(usable_cpus() if cpus is None else cpus, num_tokens // MIN_TOKENS_PER_THREAD)
  return max(1, min(n, num_tokens))


def sampled_softmax_with_grads(user_TD: jax.Array, table_VD: jax.Array, ids_TK: jax.Array,
                               weights_T: jax.Array, temperature: float, num_threads: int | None = None):
  """(sum_t w_t * loss_t, d/d user [T, D], d/d table [V, D]) in one fused pass.

  Column 0 of `ids_TK` is the positive; negatives equal to it are removed (logit -5e4), as in
  `recjax.losses.sampled_softmax_loss_reference`. Inputs are used as given (normalise first).
  An id outside [0, V) is an error naming the token and candidate. `num_threads` defaults to
  `thread_count(T)`; the results are bit-identical for any count.
  """
  if not available():
    raise RuntimeError(f"recjax.native is unavailable: {why_unavailable()}")
  if user_TD.ndim != 2 or table_VD.ndim != 2 or ids_TK.ndim != 2 or weights_T.ndim != 1:
    raise ValueError(f"sampled_softmax_with_grads: expected user [T, D], table [V, D], ids [T, K], weights [T], "
                     f"got {user_TD.shape}, {table_VD.shape}, {ids_TK.shape}, {weights_T.shape}")
  t, d = user_TD.shape
  if ids_TK.shape[0] != t or weights_T.shape[0] != t or table_VD.shape[1] != d or ids_TK.shape[1] < 1:
    raise ValueError(f"sampled_softmax_with_grads: expected user [T, D], table [V, D], ids [T, K >= 1], "
                     f"weights [T], got {user_TD.shape}, {table_VD.shape}, {ids_TK.shape}, {weights_T.shape}")
  call = jax.ffi.ffi_call(
      "recjax_sampled_softmax",
      (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((t, d), jnp.float32),
       jax.ShapeDtypeStruct(table_VD.shape, jnp.float32)))
  return call(user_TD.astype(jnp.float32), table_VD.astype(jnp.float32), ids_TK.astype(jnp.int32),
              weights_T.astype(jnp.float32), inv_temperature=np.float32(1.0 / temperature),
              num_threads=np.int64(thread_count(t) if num_threads is None else num_threads))


def _attention_operands(q_NLD, k_NLD, v_NLD, lengths_N, pos_weights, ts_weights, buckets_BLL, heads):
  """Checks shapes and returns the kernel's operands (absent biases as empty arrays)."""
  if not available():
    raise RuntimeError(f"recjax.native is unavailable: {why_unavailable()}")
  if q_NLD.ndim != 3 or k_NLD.shape != q_NLD.shape or v_NLD.ndim != 3 or v_NLD.shape[:2] != q_NLD.shape[:2]:
    raise ValueError(f"causal_attention: expected q, k [N, L, Dqk] and v [N, L, Dv], got {q_NLD.shape}, "
                     f"{k_NLD.shape}, {v_NLD.shape}")
  n, l, _ = q_NLD.shape
  if lengths_N.shape != (n,) or heads < 1 or n % heads:
    raise ValueError(f"causal_attention: lengths must be [N] = [{n}] and heads ({heads}) must divide N, got "
                     f"lengths {lengths_N.shape}")
  if (ts_weights is None) != (buckets_BLL is None):
    raise ValueError("causal_attention: the time bias needs both ts_weights and buckets")
  if ts_weights is not None:
    if buckets_BLL.shape != (n // heads, l, l) or ts_weights.shape[0] > 256:
      raise ValueError(f"causal_attention: buckets must be [N / heads, L, L] = [{n // heads}, {l}, {l}] with at "
                       f"most 256 buckets, got {buckets_BLL.shape} and {ts_weights.shape[0]} buckets")
  f32 = lambda x: jnp.zeros((0,), jnp.float32) if x is None else x.astype(jnp.float32)
  buckets = jnp.zeros((0, 0, 0), jnp.uint8) if buckets_BLL is None else buckets_BLL.astype(jnp.uint8)
  return (q_NLD.astype(jnp.float32), k_NLD.astype(jnp.float32), v_NLD.astype(jnp.float32),
          lengths_N.astype(jnp.int32), f32(pos_weights), f32(ts_weights), buckets)


def causal_attention_fwd(q_NLD, k_NLD, v_NLD, lengths_N, pos_weights, ts_weights, buckets_BLL, *, heads: int,
                         alpha: float, scale: float, num_targets: int = 0, num_threads: int | None = None) -> jax.Array:
  """HSTU's causal SiLU attention [N, L, Dv] (`causal_attention.cc` has the formula).

  Rows n = b * heads + h; `pos_weights` [2P - 1] and `ts_weights` [nb] with `buckets_BLL` [N / heads,
  L, L] (key-major: [b, j, i] is the time bucket of query i and key j) are optional. Padding queries
  give 0. `num_targets` > 0: the last that many real tokens of each row are targets, which see the
  history and themselves only (`MaskSpec(causal=True, num_targets=...)`).
  """
  ops = _attention_operands(q_NLD, k_NLD, v_NLD, lengths_N, pos_weights, ts_weights, buckets_BLL, heads)
  n, l, _ = q_NLD.shape
  call = jax.ffi.ffi_call("recjax_causal_attention_fwd",
                          jax.ShapeDtypeStruct((n, l, v_NLD.shape[2]), jnp.float32))
  return call(*ops, heads=np.int64(heads), alpha=np.float32(alpha), scale=np.float32(scale),
              num_targets=np.int64(num_targets), num_threads=np.int64(thread_count(n * l) if num_threads is None else num_threads))


def causal_attention_bwd(q_NLD, k_NLD, v_NLD, lengths_N, pos_weights, ts_weights, buckets_BLL, d_out_NLD, *,
                         heads: int, alpha: float, scale: float, num_targets: int = 0, num_threads: int | None = None):
  """(dq, dk, dv, d pos_weights or None, d ts_weights or None) of `causal_attention_fwd` for cotangent d_out."""
  ops = _attention_operands(q_NLD, k_NLD, v_NLD, lengths_N, pos_weights, ts_weights, buckets_BLL, heads)
  n, l, _ = q_NLD.shape
  sds = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  call = jax.ffi.ffi_call("recjax_causal_attention_bwd",
                          (sds(q_NLD.shape), sds(k_NLD.shape), sds(v_NLD.shape), sds(ops[4].shape), sds(ops[5].shape)))
  dq, dk, dv, dpos, dts = call(*ops, d_out_NLD.astype(jnp.float32), heads=np.int64(heads), alpha=np.float32(alpha),
                               scale=np.float32(scale), num_targets=np.int64(num_targets),
                               num_threads=np.int64(thread_count(n * l) if num_threads is None else num_threads))
  return dq, dk, dv, None if pos_weights is None else dpos, None if ts_weights is None else dts
