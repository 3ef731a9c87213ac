"""results.git_commit: HEAD's sha, "+dirty" for any change to the source folders (untracked included)."""
import shutil
import subprocess

import pytest

from recjax.train import results

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _git(repo, *args):
  return subprocess.check_output(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                                 text=True).strip()


@pytest.fixture
def repo(tmp_path):
  _git(tmp_path, "init", "-q")
  for d in results.SOURCE_DIRS:
    (tmp_path / d).mkdir()
    (tmp_path / d / "a.py").write_text("x = 1\n")
  (tmp_path / ".gitignore").write_text("__pycache__/\n*.log\n")
  (tmp_path / "README.md").write_text("hi\n")
  _git(tmp_path, "add", "-A")
  _git(tmp_path, "commit", "-q", "-m", "init")
  return tmp_path


def test_clean_tree_is_the_bare_sha(repo):
  sha = _git(repo, "rev-parse", "HEAD")
  assert results.git_commit(str(repo)) == sha
  # Ignored files and files outside the source folders do not make it dirty.
  (repo / "recjax" / "__pycache__").mkdir()
  (repo / "recjax" / "__pycache__" / "a.pyc").write_bytes(b"\0")
  (repo / "recjax" / "run.log").write_text("log\n")
  (repo / "notes.txt").write_text("scratch\n")
  (repo / "README.md").write_text("edited\n")
  assert results.git_commit(str(repo)) == sha
  # From a subfolder, the source folders are still the repository's.
  assert results.git_commit(str(repo / "configs")) == sha


@pytest.mark.parametrize("folder", results.SOURCE_DIRS)
def test_untracked_source_file_is_dirty(repo, folder):
  sha = _git(repo, "rev-parse", "HEAD")
  (repo / folder / "sub").mkdir()
  (repo / folder / "sub" / "new_module.py").write_text("y = 2\n")
  assert results.git_commit(str(repo)) == sha + "+dirty"
  assert results.git_commit(str(repo / "configs")) == sha + "+dirty"


@pytest.mark.parametrize("change", ["edit", "stage", "delete"])
def test_tracked_change_is_dirty(repo, change):
  sha = _git(repo, "rev-parse", "HEAD")
  path = repo / "recjax" / "a.py"
  if change == "delete":
    path.unlink()
  else:
    path.write_text("x = 2\n")
    if change == "stage":
      _git(repo, "add", "recjax/a.py")
  assert results.git_commit(str(repo)) == sha + "+dirty"


def test_not_a_repository(tmp_path):
  assert results.git_commit(str(tmp_path)) == "unknown"


def test_hardware_reports_the_malloc_status():
  from recjax import cpu_allocator
  hw = results.hardware()
  assert hw["malloc"] == cpu_allocator.status().to_dict()
  assert hw["malloc"]["applied"] is hw["malloc_tuned"] is False   # this process never tunes
  assert hw["malloc"]["reason"] == "tune() was not called in this process"
