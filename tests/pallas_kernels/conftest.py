"""pytest setup for the Pallas kernel tests.

The repository has no pytest config (pyproject.toml / pytest.ini) yet, so the
`slow` marker is registered here. Slow tests (large interpret-mode sweeps) are
skipped unless selected with `-m slow` or PALLAS_RUN_SLOW=1.
"""

import os

import pytest


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: large interpret-mode sweeps (minutes on CPU)")


def pytest_collection_modifyitems(config, items):
  if "slow" in (config.getoption("markexpr") or "") or os.environ.get(
      "PALLAS_RUN_SLOW") == "1":
    return
  skip = pytest.mark.skip(reason="slow: select with -m slow or PALLAS_RUN_SLOW=1")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
