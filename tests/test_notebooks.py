"""Every notebook in notebooks/ runs top to bottom on CPU, as a reader would run it (cwd notebooks/).

The notebooks carry their own `assert`s (causality, metrics against brute force, resume), so this
test fails when a walk-through stops matching the library, not only when it crashes.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

ALL_NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))
# The study walk-throughs (~2.3 min together on 2 cores) run from tests/test_notebooks_studies.py, in
# the slow set (`-m slow`), to shorten the default suite (still above 10 minutes); the library calls they make are
# tested by default in their own modules, and the quickstart stays in the default suite.
STUDY_NOTEBOOKS = ("kunlun.ipynb", "long_sequences.ipynb", "semantic_ids.ipynb")
NOTEBOOKS = [p for p in ALL_NOTEBOOKS if os.path.basename(p) not in STUDY_NOTEBOOKS]


def notebook_source(path: str) -> str:
  cells = json.load(open(path))["cells"]
  code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
  if not code:
    raise ValueError(f"{path}: no code cells")
  return "\n\n".join(code) + "\n"


def test_there_are_notebooks():
  assert NOTEBOOKS, "notebooks/ holds no .ipynb walk-through"
  names = {os.path.basename(p) for p in ALL_NOTEBOOKS}
  assert set(STUDY_NOTEBOOKS) <= names, f"a study notebook is missing: {set(STUDY_NOTEBOOKS) - names}"


def run_notebook(path: str, tmp_path) -> subprocess.CompletedProcess:
  """The notebook's code cells as one script, run with cwd notebooks/ -> the finished process."""
  script = tmp_path / (os.path.basename(path) + ".py")
  script.write_text(notebook_source(path))
  return subprocess.run([sys.executable, str(script)], cwd=os.path.dirname(path), capture_output=True,
                        text=True, timeout=900)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
  proc = run_notebook(path, tmp_path)
  assert proc.returncode == 0, f"{os.path.basename(path)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
