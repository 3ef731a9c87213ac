"""Agreement between two labelings of the same items (e.g. level-1 SID codes vs planted topics)."""
from __future__ import annotations

import numpy as np


def normalized_mutual_info(a, b) -> float:
  """NMI = I(A; B) / sqrt(H(A) H(B)) (the geometric normalisation); 1.0 when both labelings
  are constant (identical trivially), 0.0 when only one is."""
  a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
  if a.shape != b.shape or a.size == 0:
    raise ValueError(f"normalized_mutual_info: need two non-empty labelings of equal length, got {a.shape}, {b.shape}")
  _, ai = np.unique(a, return_inverse=True)
  _, bi = np.unique(b, return_inverse=True)
  joint = np.zeros((ai.max() + 1, bi.max() + 1))
  np.add.at(joint, (ai, bi), 1.0)
  joint /= a.size
  pa, pb = joint.sum(1), joint.sum(0)
  ha = -np.sum(pa * np.log(pa))
  hb = -np.sum(pb * np.log(pb))
  if ha == 0 or hb == 0:
    return 1.0 if ha == hb else 0.0
  nz = joint > 0
  mi = np.sum(joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz]))
  return float(mi / np.sqrt(ha * hb))
