"""HSTU on the ML-1M users that have timestamps offline (users 1-2999): time bias on vs off.

Why: ../shared/data/ml-1m has real timestamps only for users 1-2999 (PROVENANCE.md), so the full
6,040-user reproduction runs without HSTU's relative *time* bias. Training on these 2,999 users
twice, with and without the time bias, measures what that costs. Same protocol and
hyper-parameters as configs/hstu_ml1m.py.

Command:   python -m experiments.run --config=configs/hstu_ml1m_half.py:time   --workdir=workdirs/hstu_ml1m_half_time
           python -m experiments.run --config=configs/hstu_ml1m_half.py:notime --workdir=workdirs/hstu_ml1m_half_notime
           (append ",quick" to the argument for a smoke test)
Hardware:  2-core x86 CPU; 24 steps per epoch.
"""
from configs import base, hstu_ml1m


def get_config(arg: str | None = None):
  args = set((arg or "time").split(","))
  c = hstu_ml1m.get_config()
  c.data.with_timestamps = True
  c.dataset_label = "ml-1m-users1-2999"
  if "notime" in args:
    c.name = "hstu_ml1m_half_notime"
    c.model.use_time_bias = "off"
  else:
    c.name = "hstu_ml1m_half_time"
    c.model.use_time_bias = "auto"
  if "quick" in args:
    base.apply_quick(c)
  return c
