"""Datasheet peaks by device kind, the measured matmul peak, and the MFU arithmetic."""

import jax
import jax.numpy as jnp
import pytest

from recjax.scaling import flops, mfu


@pytest.mark.parametrize("kind, dtype, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12), ("NVIDIA H100 PCIe", "bf16", 756e12),
    ("NVIDIA H200", "bf16", 989e12), ("NVIDIA H200", "fp32", 67e12), ("NVIDIA A100-SXM4-80GB", "fp32", 19.5e12),
    ("NVIDIA B200", "bf16", 2.25e15), ("TPU v5 lite", "bf16", 197e12), ("TPU v5", "bf16", 459e12),
    ("TPU v5p", "fp32", None), ("cpu", "bf16", None)])
def test_datasheet_peak_by_device_kind(kind, dtype, peak):
  assert mfu.datasheet_peak(kind, dtype) == peak


def test_meter_arithmetic():
  meter = mfu.MfuMeter(1e9, datasheet_peak=1e10, measured_peak=None, num_devices=2)
  assert meter.report()["mfu_datasheet"] is None   # nothing timed yet
  meter.update(10, 2.0)
  meter.update(10, 2.0)
  r = meter.report()
  assert r["achieved_flops_per_s"] == pytest.approx(5e9)
  assert r["mfu_datasheet"] == pytest.approx(0.25) and r["mfu_measured"] is None
  meter.update(5, 1.0, flops_per_step=2e9)   # a batch of another shape
  assert meter.report()["achieved_flops_per_s"] == pytest.approx(3e10 / 5.0)
  with pytest.raises(ValueError, match="flops_per_step > 0"):
    mfu.MfuMeter(0.0)
  with pytest.raises(ValueError, match="measured_peak must be positive"):
    mfu.MfuMeter(1.0, measured_peak=-1.0)
  with pytest.raises(ValueError, match="dtype must be one of"):
    mfu.datasheet_peak("NVIDIA H100", "fp8")


def test_meter_over_a_matmul_loop_with_the_measured_peak():
  """The meter's arithmetic on a real matmul "training loop": XLA's FLOP count per step, the step
  count and given seconds in, achieved FLOP/s and MFU = achieved / peak out. No timing is asserted
  (a loaded machine moves both the peak and the loop: speed belongs in benchmarks)."""
  n = 256
  peak = mfu.measure_matmul_peak(n, repeats=3)
  assert 1e8 < peak < 1e16
  a = jnp.ones((n, n), jnp.float32)
  step = jax.jit(lambda x: x @ x)
  per_step = flops.xla_cost(step, a).flops
  assert per_step == 2 * n ** 3
  meter = mfu.MfuMeter(per_step, measured_peak=peak, device_kind=jax.devices()[0].device_kind)
  meter.update(10, 0.5)
  meter.update(5, 0.25, flops_per_step=2 * per_step)     # a batch of another shape
  report = meter.report()
  want_flops = 10 * per_step + 5 * 2 * per_step
  assert report["steps"] == 15 and report["flops"] == pytest.approx(want_flops)
  assert report["achieved_flops_per_s"] == pytest.approx(want_flops / 0.75)
  assert report["mfu_measured"] == pytest.approx(want_flops / 0.75 / peak)
