"""Synthetic item vectors with planted clusters."""
import numpy as np


def planted_clusters(num_clusters=12, n=720, dim=24, spread=0.6, seed=0):
  """Unequal-sized Gaussian clusters -> (x [n, dim] float32, label [n])."""
  rng = np.random.default_rng(seed)
  sizes = rng.dirichlet(np.full(num_clusters, 5.0))
  label = rng.choice(num_clusters, size=n, p=sizes)
  centres = rng.normal(size=(num_clusters, dim)) * 2.0
  x = centres[label] + rng.normal(size=(n, dim)) * spread
  return x.astype(np.float32), label
