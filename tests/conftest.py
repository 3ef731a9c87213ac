"""Shared fixtures: small synthetic sequence files (never MovieLens) and the shared-data locator."""
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def shared_data(name: str) -> str:
  """Path of ../shared/data/<name>, or skip the test with a clear message."""
  path = os.path.join(SHARED_DATA, name)
  if not os.path.isdir(path):
    pytest.skip(f"real data folder {path} not found (it lives beside the checkout as ../shared/data; "
                "the test needs it and is skipped elsewhere)")
  return path


def write_cyclic_sequences(path, num_users=120, num_items=30, min_len=5, max_len=40, seed=0):
  """`user item item ...` lines where each user walks a cycle with a user-specific step: learnable."""
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for u in range(1, num_users + 1):
      n = int(rng.integers(min_len, max_len + 1))
      start, stride = int(rng.integers(0, num_items)), int(rng.integers(1, 4))
      items = [(start + stride * i) % num_items + 1 for i in range(n)]
      f.write(f"{u} " + " ".join(map(str, items)) + "\n")
  return str(path)


@pytest.fixture
def cyclic_text(tmp_path):
  return write_cyclic_sequences(tmp_path / "seqs.txt")
