"""scripts/bench_kernels.py on CPU (its interpret-mode smoke size): the bias ablation's four rows,
each timed for both implementations, and the JSON's provenance fields. The numbers themselves mean
nothing on CPU; on a GPU the same script wrote results/bench/kernels_*_nvidia_h200.json."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bias_ablation_writes_four_rows_with_provenance(tmp_path):
  out = tmp_path / "kernels.json"
  cmd = [sys.executable, os.path.join(REPO, "scripts", "bench_kernels.py"), "--bias_ablation",
         "--lengths", "64", "--out", str(out)]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rec = json.loads(out.read_text())

  assert rec["partial"] is False and rec["compiled"] is False
  assert "bench_kernels.py" in rec["command"] and "--bias_ablation" in rec["command"]
  assert rec["commit"] != "unknown"
  rows = {r["name"]: r for r in rec["rows"]}
  assert set(rows) == {"causal_none", "causal_pos", "causal_ts", "causal_pos_ts"}
  assert {r["bias"] for r in rows.values()} == {"none", "pos", "ts", "pos+ts"}
  for r in rows.values():
    for key in ("pallas_fwd", "xla_fwd", "pallas_fwd_bwd", "xla_fwd_bwd"):
      assert r[key]["ms"] > 0, (r["name"], key, r[key])
    assert r["speedup_fwd_bwd"] > 0
