"""The study notebooks (tests/test_notebooks.py's STUDY_NOTEBOOKS) run top to bottom on CPU, as a
reader would run them; a file of their own so that pytest-xdist can run them beside the others.
Slow (`-m slow`): minutes together, and what they call is tested by default elsewhere."""
import os

import pytest

from tests.conftest import REPO
from tests.test_notebooks import STUDY_NOTEBOOKS, run_notebook


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDY_NOTEBOOKS)
def test_study_notebook_runs(name, tmp_path):
  proc = run_notebook(os.path.join(REPO, "notebooks", name), tmp_path)
  assert proc.returncode == 0, f"{name} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
