"""Kernel-vs-reference tests for the attention family, forward and gradients.

`AttentionKernelTests` holds the checks; subclasses pick where they run:
`TestAttentionKernelsInterpret` (INTERPRET = True, CPU, part of the default
run) and `TestAttentionKernelsCompiled` (INTERPRET = False, needs a GPU,
skipped elsewhere). Each case draws fresh random inputs (seeded by the case
id, so a failure reproduces; set PALLAS_TEST_SEED to draw others), checks the
output and the gradients wrt q, k, v and both bias tables against the dense
XLA reference, and reports relative errors max|kernel - ref| / max|ref|.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import gdpa as gdpa_lib
from pallas_kernels.common import BlockSizes
from pallas_kernels.hstu_attention import (hstu_attention,
                                           hstu_attention_reference)
from pallas_kernels.mask import MaskSpec

SMALL = BlockSizes(16, 16, 16, 16, 16, 16)
MIXED = BlockSizes(block_q=32, block_k=16, block_q_dkv=16, block_k_dkv=32,
                   block_q_dq=32, block_k_dq=16)
NUM_BUCKETS = 129


@dataclasses.dataclass(frozen=True)
class Case:
  """One kernel configuration; `op` picks the public function under test."""
  name: str
  op: str = "hstu"  # hstu | gdpa | seed_pooling | sliding_window
  B: int = 4
  Lq: int = 40
  Lk: int | None = None  # None: self-attention, Lk = Lq
  H: int = 2
  Dqk: int = 16
  Dv: int = 16
  lengths: tuple[int, ...] | None = (0, 1, 17, 40)
  kv_lengths: tuple[int, ...] | None = None
  mask: MaskSpec = MaskSpec()
  targets: tuple[int, ...] | None = None  # per-sequence targets
  activation: str = "silu"
  dtype: str = "float32"
  pos: bool = True
  ts: bool = True
  num_pos: int | None = None  # None: 2 * max(Lq, Lk) - 1
  alpha: float = 1.0
  scale: float | None = None  # None: 1 / Lq (HSTU's 1/N)
  blocks: BlockSizes = SMALL
  window: int = 9  # sliding_window only

  @property
  def lk(self) -> int:
    return self.Lq if self.Lk is None else self.Lk


SEMI_LOCAL = MaskSpec(local_window=20, global_prefix=5)
L72 = dict(Lq=72, lengths=(0, 1, 37, 72))

CASES = [
    # HSTU: causal pointwise SiLU with both bias terms; lengths 0, 1, odd, max.
    Case("hstu_causal"),
    Case("hstu_causal_bf16", dtype="bfloat16"),
    Case("hstu_padded_dims", B=1, lengths=None, H=1, Dqk=50, Dv=24,
         ts=False),
    Case("hstu_ts_only_3heads", B=3, H=3, Dqk=8, Dv=8, lengths=(40, 9, 33),
         pos=False),
    Case("hstu_no_bias_mixed_blocks", B=2, lengths=(40, 21), pos=False,
         ts=False, blocks=MIXED, Lq=64),
    Case("hstu_pos_clamped", B=2, lengths=(40, 21), num_pos=19),
    # Activations.
    Case("gelu", B=2, lengths=(40, 21), H=1, activation="gelu"),
    Case("relu", B=2, lengths=(40, 21), H=1, activation="relu"),
    Case("identity", B=2, lengths=(40, 21), H=1, activation="identity"),
    Case("softmax", activation="softmax", alpha=0.25, scale=1.0),
    Case("softmax_bf16", activation="softmax", alpha=0.25, scale=1.0,
         dtype="bfloat16"),
    # Masks (L = 72: windows and prefixes cross tile borders).
    Case("local_window", mask=MaskSpec(local_window=20), **L72),
    Case("semi_local", mask=SEMI_LOCAL, **L72),
    Case("semi_local_targets", mask=dataclasses.replace(SEMI_LOCAL,
                                                        num_targets=3), **L72),
    Case("semi_local_jagged_targets", mask=SEMI_LOCAL, targets=(0, 2, 4, 9),
         **L72),
    Case("causal_jagged_targets", targets=(3, 0, 5, 7)),
    Case("contextual_semi_local_targets", targets=(2, 1, 3, 6),
         mask=MaskSpec(local_window=12, global_prefix=3, contextual_prefix=6),
         **L72),
    Case("sliding_window_noncausal", mask=MaskSpec(causal=False,
                                                   local_window=9), **L72),
    Case("noncausal_softmax", mask=MaskSpec(causal=False),
         activation="softmax", alpha=0.25, scale=1.0),
    Case("semi_local_targets_softmax_bf16", mask=SEMI_LOCAL,
         targets=(0, 2, 4, 9), activation="softmax", alpha=0.25, scale=1.0,
         dtype="bfloat16", **L72),
    # Kunlun shapes through the wrappers.
    Case("gdpa", op="gdpa", B=2, Lq=100, Lk=32, lengths=(100, 50),
         kv_lengths=(32, 7), pos=False, ts=False),
    Case("gdpa_gelu_bf16", op="gdpa", B=2, Lq=100, Lk=32, lengths=None,
         kv_lengths=(32, 0), activation="gelu", dtype="bfloat16", pos=False,
         ts=False),
    Case("seed_pooling_softmax", op="seed_pooling", B=3, Lq=24, Lk=70,
         lengths=None, kv_lengths=(70, 0, 33), activation="softmax",
         pos=False, ts=False),
    Case("seed_pooling_relu", op="seed_pooling", B=2, Lq=24, Lk=70,
         lengths=None, kv_lengths=(70, 33), activation="relu", pos=False,
         ts=False),
    Case("sliding_window_wrapper", op="sliding_window", activation="softmax",
         pos=False, ts=False, **L72),
]

# The slow sweep: a full grid over the main axes (run with `-m slow`).
SLOW_CASES = [
    Case(f"sweep_{act}_{dt}_{m}_{b}_{h}_{d}",
         B=b, lengths=(0, 1, 37, 72)[:b] if b > 1 else None, H=h, Dqk=d,
         Dv=d, activation=act, dtype=dt, mask=mask, Lq=72,
         alpha=0.25 if act == "softmax" else 1.0,
         scale=1.0 if act == "softmax" else None)
    for act in ("silu", "gelu", "relu", "identity", "softmax")
    for dt in ("float32", "bfloat16")
    for m, mask in (("causal", MaskSpec()),
                    ("local", MaskSpec(local_window=20)),
                    ("sla", SEMI_LOCAL),
                    ("sla_t", dataclasses.replace(SEMI_LOCAL, num_targets=4)),
                    ("ctx_t", MaskSpec(contextual_prefix=5, num_targets=3)))
    for b, h, d in ((1, 1, 32), (4, 2, 24))
]


def _seed(name: str) -> int:
  return zlib.crc32(name.encode()) ^ int(os.environ.get("PALLAS_TEST_SEED", 0))


def make_inputs(case: Case) -> tuple[dict, dict]:
  """(differentiable float inputs, other keyword inputs) for one case."""
  rng = np.random.default_rng(_seed(case.name))
  dtype = jnp.dtype(case.dtype)
  B, Lq, Lk, H = case.B, case.Lq, case.lk, case.H
  q_shape = (Lq, H, case.Dqk) if case.op == "seed_pooling" else (
      B, Lq, H, case.Dqk)
  diff = dict(
      q=jnp.asarray(rng.normal(size=q_shape), dtype),
      k=jnp.asarray(rng.normal(size=(B, Lk, H, case.Dqk)), dtype),
      v=jnp.asarray(rng.normal(size=(B, Lk, H, case.Dv)), dtype))
  other = {}
  if case.lengths is not None:
    other["lengths"] = jnp.asarray(case.lengths, jnp.int32)
  if case.kv_lengths is not None:
    other["kv_lengths"] = jnp.asarray(case.kv_lengths, jnp.int32)
  if case.targets is not None:
    other["num_targets"] = jnp.asarray(case.targets, jnp.int32)
  if case.pos:
    num_pos = case.num_pos or 2 * max(Lq, Lk) - 1
    diff["pos_weights"] = jnp.asarray(0.5 * rng.normal(size=num_pos),
                                      jnp.float32)
  if case.ts:
    diff["ts_weights"] = jnp.asarray(0.5 * rng.normal(size=NUM_BUCKETS),
                                     jnp.float32)
    # Unix-like seconds with gaps from seconds to weeks (buckets ~0..45).
    gaps = np.exp(rng.uniform(0, 14, size=(B, Lk))).astype(np.int64)
    times = 1_700_000_000 + np.cumsum(gaps, axis=1)
    other["key_times"] = jnp.asarray(times, jnp.int32)
    # HSTU's query time is the next slot's time.
    other["query_times"] = jnp.asarray(
        np.concatenate([times[:, 1:], times[:, -1:]], axis=1), jnp.int32)
  return diff, other


def _call(case: Case, reference: bool, interpret: bool, diff: dict,
          other: dict) -> jax.Array:
  """Runs the public function of `case.op` (kernel or reference)."""
  common = dict(block_sizes=case.blocks, interpret=interpret)
  act = case.activation
  if case.op == "hstu":
    fn = hstu_attention_reference if reference else hstu_attention
    scale = 1.0 / case.Lq if case.scale is None else case.scale
    return fn(diff["q"], diff["k"], diff["v"], other.get("lengths"),
              mask=case.mask, scale=scale, activation=act, alpha=case.alpha,
              num_targets=other.get("num_targets"),
              pos_weights=diff.get("pos_weights"),
              ts_weights=diff.get("ts_weights"),
              query_times=other.get("query_times"),
              key_times=other.get("key_times"), **common)
  if case.op == "gdpa":
    fn = gdpa_lib.gdpa_reference if reference else gdpa_lib.gdpa
    return fn(diff["q"], diff["k"], diff["v"], tau=float(case.Lq),
              q_lengths=other.get("lengths"),
              kv_lengths=other.get("kv_lengths"), activation=act, **common)
  if case.op == "seed_pooling":
    fn = (gdpa_lib.seed_pooling_attention_reference if reference
          else gdpa_lib.seed_pooling_attention)
    return fn(diff["q"], diff["k"], diff["v"], other.get("kv_lengths"),
              activation=act, **common)
  if case.op == "sliding_window":
    fn = (gdpa_lib.sliding_window_attention_reference if reference
          else gdpa_lib.sliding_window_attention)
    return fn(diff["q"], diff["k"], diff["v"], other.get("lengths"),
              window=case.window, activation=act, **common)
  raise ValueError(case.op)


@functools.partial(jax.jit, static_argnames=("case", "reference",
                                             "interpret"))
def _value_and_grads(diff: dict, other: dict, cotangent: jax.Array, *,
                     case: Case, reference: bool, interpret: bool):
  """Output and d <out, cotangent> / d (every differentiable input)."""
  def f(d):
    out = _call(case, reference, interpret, d, other)
    return jnp.sum(out.astype(jnp.float32) * cotangent), out
  (_, out), grads = jax.value_and_grad(f, has_aux=True)(diff)
  return out, grads


def rel_err(x: jax.Array, ref: jax.Array) -> float:
  x = np.asarray(x, np.float64)
  ref = np.asarray(ref, np.float64)
  return float(np.max(np.abs(x - ref)) / max(np.max(np.abs(ref)), 1e-30))


def _out_shape(case: Case) -> tuple[int, ...]:
  return (case.B, case.Lq, case.H, case.Dv)


class AttentionKernelTests:
  """Kernel vs reference checks, parameterised by where kernels run."""

  INTERPRET: bool = True
  # fp32 in interpret mode is exact fp32 math on both sides.
  FP32_RTOL = 1e-5
  # bf16: the kernel rounds P (and dS) to bf16 tile by tile before the
  # matmuls, the reference once; both accumulate in fp32.
  BF16_RTOL = 2e-2

  def _tol(self, case: Case) -> float:
    return self.FP32_RTOL if case.dtype == "float32" else self.BF16_RTOL

  def _check(self, case: Case):
    diff, other = make_inputs(case)
    rng = np.random.default_rng(_seed(case.name) + 1)
    cot = jnp.asarray(rng.normal(size=_out_shape(case)), jnp.float32)
    out, grads = _value_and_grads(diff, other, cot, case=case,
                                  reference=False, interpret=self.INTERPRET)
    ref_out, ref_grads = _value_and_grads(diff, other, cot, case=case,
                                          reference=True, interpret=False)
    assert out.shape == _out_shape(case) and out.dtype == diff["k"].dtype
    tol = self._tol(case)
    errors = {"out": rel_err(out, ref_out)}
    for name in diff:
      assert grads[name].shape == diff[name].shape, name
      assert grads[name].dtype == diff[name].dtype, name
      errors["d" + name] = rel_err(grads[name], ref_grads[name])
    bad = {n: e for n, e in errors.items() if not e < tol}
    assert not bad, f"{case.name}: rel errors above {tol}: {errors}"
    # Padding rows are exact zeros, in the output and in dq.
    lengths = other.get("lengths")
    if lengths is not None and case.op in ("hstu", "sliding_window"):
      rows = np.arange(case.Lq)[None, :] >= np.asarray(lengths)[:, None]
      assert not np.asarray(out, np.float32)[rows].any()
      assert not np.asarray(grads["q"], np.float32)[rows].any()
    return errors

  @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
  def test_matches_reference(self, case: Case):
    self._check(case)

  @pytest.mark.slow
  @pytest.mark.parametrize("case", SLOW_CASES, ids=lambda c: c.name)
  def test_sweep_matches_reference(self, case: Case):
    self._check(case)


class TestAttentionKernelsInterpret(AttentionKernelTests):
  INTERPRET = True


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")
class TestAttentionKernelsCompiled(AttentionKernelTests):
  INTERPRET = False
  # Compiled fp32 dots use TF32 on both sides (Triton and XLA defaults).
  FP32_RTOL = 5e-3


# ------------------------------------------------------------ input checks


def _qkv(B=2, Lq=8, Lk=8, H=2, D=4, dtype=jnp.float32):
  z = functools.partial(jnp.zeros, dtype=dtype)
  return z((B, Lq, H, D)), z((B, Lk, H, D)), z((B, Lk, H, D))


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=jnp.zeros((2, 8, 3, 4))), r"k must be .*k.shape=\(2, 8, 3, 4\)"),
    (dict(v=jnp.zeros((2, 7, 2, 4))), r"v must be .*v.shape=\(2, 7, 2, 4\)"),
    (dict(q=jnp.zeros((2, 8, 8))), r"q, k, v must be \[B, L, H, D\]"),
    (dict(lengths=jnp.zeros((3,), jnp.int32)), r"lengths must be \[B\]"),
    (dict(activation="tanh"), "activation must be one of"),
    (dict(pos_weights=jnp.zeros((8,))), r"pos_weights must be \[2P - 1\]"),
    (dict(ts_weights=jnp.zeros((4,))), "go together"),
    (dict(ts_weights=jnp.zeros((4,)), query_times=jnp.zeros((2, 8)),
          key_times=jnp.zeros((2, 7))), "key_times"),
    (dict(k=jnp.zeros((2, 6, 2, 4)), v=jnp.zeros((2, 6, 2, 4))),
     "Positional masks"),
    (dict(q=jnp.zeros((2, 8, 2, 4), jnp.bfloat16)), "share a dtype"),
])
def test_shape_errors(kwargs, match):
  q, k, v = _qkv()
  args = dict(q=q, k=k, v=v)
  args.update({n: kwargs.pop(n) for n in ("q", "k", "v") if n in kwargs})
  with pytest.raises(ValueError, match=match):
    hstu_attention(args["q"], args["k"], args["v"], kwargs.pop("lengths",
                                                              None),
                   scale=1.0, interpret=True, **kwargs)


def test_block_size_errors():
  with pytest.raises(ValueError, match="block_q must be a power of two"):
    BlockSizes(block_q=48)
  with pytest.raises(ValueError, match="block_k_dq must be a power of two"):
    BlockSizes(block_k_dq=8)


def test_wrapper_errors():
  q, k, v = _qkv(Lk=4)
  with pytest.raises(ValueError, match="tau must be > 0"):
    gdpa_lib.gdpa(q, k, v, tau=0.0)
  with pytest.raises(ValueError, match="pointwise"):
    gdpa_lib.gdpa(q, k, v, tau=1.0, activation="softmax")
  with pytest.raises(ValueError, match="self-attention"):
    gdpa_lib.sliding_window_attention(q, k, v, window=2)
