"""Model FLOPs utilisation: achieved FLOP/s ÷ peak FLOP/s, against two peaks.

    MFU = (FLOPs per step × steps / seconds) / (devices × peak FLOP/s per device)

(papers.md §1.1: Kunlun reports 17% → 37% MFU on B200; the exact definition is not published.)
The numerator comes from `recjax.scaling.flops` (XLA's count of the compiled step, plus analytic
counts for custom calls). Two denominators, because each can mislead alone:
  * the datasheet's dense peak for the device and dtype (`DATASHEET`, by `device_kind`);
  * a matmul peak measured here (`measure_matmul_peak`): what XLA reaches on a large square
    matmul on this device, which is all a CPU has (no datasheet), and on a power-capped GPU can
    sit well below the datasheet (papers.md §1.1: Meta's "97% tensor-core utilisation" on a 750 W
    B200).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

DTYPES = ("bf16", "fp32")


@dataclasses.dataclass(frozen=True)
class DatasheetPeak:
  """Dense (no 2:4 sparsity) peak FLOP/s of one device, per dtype (None: not published)."""
  name: str
  bf16: float | None
  fp32: float | None


# (substring of jax's device_kind, lower case) -> peak. First match wins, so the specific kinds
# come before the general ones ("h100 pcie" before "h100", "v5 lite" before "v5").
# Sources (dense figures; NVIDIA datasheets print the sparse figure, 2× these, for tensor cores):
DATASHEET: tuple[tuple[str, DatasheetPeak], ...] = (
    # NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100): BF16 tensor 312 TF (624 sparse),
    # FP32 19.5 TF (non-tensor). Same for SXM and PCIe.
    ("a100", DatasheetPeak("NVIDIA A100", 312e12, 19.5e12)),
    # NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100): PCIe BF16 1,513 TF sparse
    # -> 756 dense, FP32 51 TF; SXM BF16 1,979 TF sparse -> 989 dense, FP32 67 TF.
    ("h100 pcie", DatasheetPeak("NVIDIA H100 PCIe", 756e12, 51e12)),
    ("h100", DatasheetPeak("NVIDIA H100 SXM", 989e12, 67e12)),
    # NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): NVL BF16 1,671 TF sparse -> 835
    # dense, FP32 60 TF; SXM as H100 SXM (same GH100 compute), 1,979 sparse -> 989, FP32 67 TF.
    ("h200 nvl", DatasheetPeak("NVIDIA H200 NVL", 835e12, 60e12)),
    ("h200", DatasheetPeak("NVIDIA H200 SXM", 989e12, 67e12)),
    # NVIDIA HGX B200 datasheet (nvidia.com/en-us/data-center/hgx): per GPU FP16/BF16 tensor
    # 4.5 PF sparse -> 2.25 PF dense, FP32 75 TF (at up to 1,000 W).
    ("b200", DatasheetPeak("NVIDIA B200", 2.25e15, 75e12)),
    # Cloud TPU v5e docs (cloud.google.com/tpu/docs/v5e): 197 TF bf16 per chip; no fp32 figure
    # (the MXU takes bf16 inputs; fp32 matmuls run as several bf16 passes). jax calls it "TPU v5 lite".
    ("v5 lite", DatasheetPeak("TPU v5e", 197e12, None)),
    ("v5e", DatasheetPeak("TPU v5e", 197e12, None)),
    # Cloud TPU v5p docs (cloud.google.com/tpu/docs/v5p): 459 TF bf16 per chip. jax: "TPU v5" / "TPU v5p".
    ("v5", DatasheetPeak("TPU v5p", 459e12, None)),
)


def datasheet_peak(device_kind: str | None = None, dtype: str = "bf16") -> float | None:
  """Dense peak FLOP/s for `device_kind` (default: `jax.devices()[0].device_kind`), or None when the
  device has no entry (CPUs) or no published figure for `dtype`."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
  kind = (jax.devices()[0].device_kind if device_kind is None else device_kind).lower()
  for key, peak in DATASHEET:
    if key in kind:
      return getattr(peak, dtype)
  return None


def default_matmul_size(platform: str | None = None) -> int:
  """2048 on CPU (≈ 17 GFLOP, a fraction of a second), 8192 on accelerators (≈ 1.1 TFLOP)."""
  return 2048 if (platform or jax.default_backend()) == "cpu" else 8192


def measure_matmul_peak(n: int | None = None, dtype: str = "fp32", repeats: int = 5) -> float:
  """FLOP/s of the best of `repeats` runs of a jitted [n, n] @ [n, n] matmul (2n³ FLOPs) on the
  default device, after one warm-up run (compilation). Best, not mean: other processes only ever
  slow a run down."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
  n = default_matmul_size() if n is None else int(n)
  if n < 1 or repeats < 1:
    raise ValueError(f"measure_matmul_peak: need n ≥ 1 and repeats ≥ 1, got n={n}, repeats={repeats}")
  jdtype = jnp.bfloat16 if dtype == "bf16" else jnp.float32
  ka, kb = jax.random.split(jax.random.key(0))
  a_NN = jax.random.normal(ka, (n, n), jdtype)
  b_NN = jax.random.normal(kb, (n, n), jdtype)
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jdtype))
  matmul(a_NN, b_NN).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    matmul(a_NN, b_NN).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best


class MfuMeter:
  """Accumulates (steps, seconds) of a run and reports achieved FLOP/s and MFU against both peaks.

  flops_per_step: FLOPs of one global step, summed over the `num_devices` devices that ran it.
  datasheet_peak, measured_peak: FLOP/s of one device; either may be None (then its MFU is None).
  """

  def __init__(self, flops_per_step: float, *, datasheet_peak: float | None = None,
               measured_peak: float | None = None, num_devices: int = 1, device_kind: str = ""):
    if flops_per_step <= 0 or num_devices < 1:
      raise ValueError(f"MfuMeter: need flops_per_step > 0 and num_devices ≥ 1, got {flops_per_step}, {num_devices}")
    for name, peak in (("datasheet_peak", datasheet_peak), ("measured_peak", measured_peak)):
      if peak is not None and peak <= 0:
        raise ValueError(f"MfuMeter: {name} must be positive FLOP/s or None, got {peak}")
    self.flops_per_step = float(flops_per_step)
    self.datasheet_peak = datasheet_peak
    self.measured_peak = measured_peak
    self.num_devices = int(num_devices)
    self.device_kind = device_kind
    self.steps = 0
    self.seconds = 0.0
    self.flops = 0.0

  @classmethod
  def for_current_device(cls, flops_per_step: float, *, dtype: str = "fp32", measure: bool = True,
                         num_devices: int | None = None) -> "MfuMeter":
    """Peaks of `jax.devices()[0]`: the datasheet's for `dtype`, and (if `measure`) a matmul benchmark."""
    kind = jax.devices()[0].device_kind
    return cls(flops_per_step, datasheet_peak=datasheet_peak(kind, dtype),
               measured_peak=measure_matmul_peak(dtype=dtype) if measure else None,
               num_devices=jax.device_count() if num_devices is None else num_devices, device_kind=kind)

  def update(self, steps: int, seconds: float, flops_per_step: float | None = None) -> None:
    """Add `steps` steps that took `seconds` of wall clock (time them after a host sync), each of
    `flops_per_step` FLOPs (default: the meter's; batches of another shape cost differently)."""
    if steps < 0 or seconds < 0:
      raise ValueError(f"MfuMeter.update: steps and seconds must be ≥ 0, got {steps}, {seconds}")
    per_step = self.flops_per_step if flops_per_step is None else float(flops_per_step)
    if per_step <= 0:
      raise ValueError(f"MfuMeter.update: flops_per_step must be > 0, got {per_step}")
    self.steps += int(steps)
    self.seconds += float(seconds)
    self.flops += per_step * steps

  @property
  def achieved_flops_per_s(self) -> float | None:
    return self.flops / self.seconds if self.seconds > 0 else None

  def mfu(self, peak: float | None) -> float | None:
    achieved = self.achieved_flops_per_s
    if peak is None or achieved is None:
      return None
    return achieved / (self.num_devices * peak)

  def report(self) -> dict:
    """Plain fields for progress logs and results files."""
    return {"steps": self.steps, "seconds": self.seconds, "flops": self.flops, "flops_per_step": self.flops_per_step,
            "achieved_flops_per_s": self.achieved_flops_per_s, "num_devices": self.num_devices,
            "device_kind": self.device_kind,
            "datasheet_peak_flops_per_s": self.datasheet_peak, "measured_peak_flops_per_s": self.measured_peak,
            "mfu_datasheet": self.mfu(self.datasheet_peak), "mfu_measured": self.mfu(self.measured_peak)}
