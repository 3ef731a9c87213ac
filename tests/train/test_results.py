"""results: git_commit (HEAD's sha, "+dirty" for any change to the source folders, untracked included)
and the guard that keeps a run from replacing a results file another workdir's run wrote."""
import json
import os
import shutil
import subprocess

import pytest

from recjax.train import results

def _git(repo, *args):
  return subprocess.check_output(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                                 text=True).strip()


@pytest.fixture
def repo(tmp_path):
  if shutil.which("git") is None:
    pytest.skip("git not installed")
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
  from recjax import compile_options
  assert hw["xla_compile_options"] == compile_options.step_options()


def _write(path, **fields):
  path.write_text(json.dumps({"config": "c", **fields}))
  return str(path)


def test_results_guard_refuses_another_workdirs_file(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  results.check_results_target(str(tmp_path / "absent.json"), "/tmp/probe", "workdirs/c")   # nothing to lose
  committed = _write(tmp_path / "c.json", workdir="workdirs/c")
  results.check_results_target(committed, "workdirs/c", "workdirs/c")          # a rerun or resume of that run
  results.check_results_target(committed, str(tmp_path / "workdirs" / "c"), "workdirs/c")   # same dir, absolute
  with pytest.raises(results.ResultsOverwriteError, match=r"c\.json exists .*'workdirs/c'.*'/tmp/probe'.*--results="):
    results.check_results_target(committed, "/tmp/probe", "workdirs/c")


def test_results_guard_reads_files_older_than_the_workdir_field(tmp_path, monkeypatch):
  """Files written before runs recorded their workdir came from the default one (workdirs/<name>)."""
  monkeypatch.chdir(tmp_path)
  legacy = _write(tmp_path / "c.json")
  results.check_results_target(legacy, os.path.join("workdirs", "c"), os.path.join("workdirs", "c"))
  with pytest.raises(results.ResultsOverwriteError):
    results.check_results_target(legacy, "elsewhere", os.path.join("workdirs", "c"))
  garbled = tmp_path / "g.json"
  garbled.write_text("{not json")
  with pytest.raises(results.ResultsOverwriteError, match="not a readable results file"):   # unreadable: never replaced silently
    results.check_results_target(str(garbled), "workdirs/c", "workdirs/c")


def test_results_record_the_workdir_portably(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert results.portable_path("workdirs/c") == os.path.join("workdirs", "c")
  assert results.portable_path(str(tmp_path / "workdirs" / "c")) == os.path.join("workdirs", "c")
  assert results.portable_path("/elsewhere/w") == "/elsewhere/w"   # outside the run's directory: absolute
