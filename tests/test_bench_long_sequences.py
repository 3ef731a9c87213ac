"""scripts/bench_long_sequences.py --level step at a toy size: the JSON's fields, positive memory
estimates, the SLA ranker's step below the dense one once L is past the SLA window, and exponents
fitted only over the lengths from --fit_from on.

In a subprocess: the script tunes malloc at import (cpu_allocator.tune()), which the pytest
process must not (tests/test_cpu_allocator.py)."""
import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_step_level_writes_memory_time_and_ratios(tmp_path):
  out = tmp_path / "long_step.json"
  # Two rows at two lengths: each compile of a ranker step is ~10 s of CPU on the 2-core box, so
  # these four are the test's cost. Windows shrunk so that L = 256 is well past K1 + K2.
  cmd = [sys.executable, os.path.join(REPO, "scripts", "bench_long_sequences.py"), "--level", "step",
         "--rows", "ultra_sla", "ultra_dense", "--lengths", "128", "256", "--fit_from", "256",
         "--iters", "1", "--dropout", "0",
         "--local_window", "16", "--global_window", "4", "--sla_block", "16", "--num_items", "500",
         "--out", str(out)]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rec = json.loads(out.read_text())

  for key in ("command", "commit", "date", "versions", "hardware", "setup", "exponents", "verdicts"):
    assert key in rec, key
  assert rec["benchmark"] == "long_step"
  assert "temp" in rec["setup"]["step_memory"]
  assert sorted((c["row"], c["L"]) for c in rec["cells"]) == [
      ("ultra_dense", 128), ("ultra_dense", 256), ("ultra_sla", 128), ("ultra_sla", 256)]
  for c in rec["cells"]:
    assert c["peak_bytes"] > 0 and c["temp_bytes"] > 0 and c["argument_bytes"] > 0
    assert c["peak_bytes"] == c["argument_bytes"] + c["output_bytes"] + c["temp_bytes"] - c["alias_bytes"]
    assert c["step_s"] > 0 and c["cpu_s"] > 0           # a few MB: under the limit, so timed
  cells = {c["row"]: c for c in rec["cells"] if c["L"] == 256}
  assert cells["ultra_sla"]["peak_bytes"] < cells["ultra_dense"]["peak_bytes"]
  assert rec["ratio_length"] == 256
  ratio = rec["memory_ratios"]["ultra_dense/ultra_sla"]
  assert math.isclose(ratio, cells["ultra_dense"]["peak_bytes"] / cells["ultra_sla"]["peak_bytes"]) and ratio > 1
  # No hstu_full row: no ratio verdict. Two lengths were measured, but only one is >= --fit_from:
  # no exponent to fit (two would give one).
  assert rec["verdicts"] == {} and rec["setup"]["fit_from"] == 256
  for row in ("ultra_sla", "ultra_dense"):
    fit = rec["exponents"][row]
    assert fit["timed_lengths"] == [256] and fit["memory_lengths"] == [256]
    assert fit["step_s"] is None and fit["cpu_s"] is None and fit["peak_bytes"] is None
