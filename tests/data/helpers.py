"""Small shared helpers for the data tests: writing fixtures and checking DataError messages."""
from __future__ import annotations

import gzip
import os
import pathlib

import pytest

from recjax.data.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def write(tmp_path: pathlib.Path, name: str, text: str, encoding: str = "utf-8") -> str:
  """Writes `text` to tmp_path/name (gzip-compressed when the name ends in .gz); returns the path."""
  path = tmp_path / name
  path.parent.mkdir(parents=True, exist_ok=True)
  data = text.encode(encoding)
  if name.endswith(".gz"):
    data = gzip.compress(data, mtime=0)
  path.write_bytes(data)
  return str(path)


def shared_dir(name: str) -> pathlib.Path:
  """<repo>/../shared/data/<name>, or skip the test with a clear message when it is absent."""
  path = SHARED_DATA / name
  if not path.is_dir():
    pytest.skip(f"real-data check skipped: {path} not found (the shared data folder is only on the "
                "project machines)")
  return path


def assert_error(excinfo: pytest.ExceptionInfo, path: str | None = None, *, line: int | None = None,
                 field: str | None = None, contains: str | None = None) -> DataError:
  """Checks that a DataError names the file (and line/field when given), in attributes and text."""
  err = excinfo.value
  assert isinstance(err, DataError)
  msg = str(err)
  if path is not None:
    assert err.path == str(path) and msg.startswith(str(path)), msg
    assert os.path.basename(str(path)) in msg
  if line is not None:
    assert err.line == line and f"line {line}" in msg, msg
  if field is not None:
    assert err.field == field and f"field '{field}'" in msg, msg
  if contains is not None:
    assert contains in msg, msg
  return err
