"""One error type for bad input: it always names the file, and the line and field where known."""
from __future__ import annotations


class DataError(ValueError):
  """Raised for malformed input. The message names file, line (1-based) and field."""

  def __init__(self, path: str, message: str, *, line: int | None = None, field: str | None = None):
    where = str(path)
    if line is not None:
      where += f", line {line}"
    if field is not None:
      where += f", field '{field}'"
    super().__init__(f"{where}: {message}")
    self.path = str(path)
    self.line = line
    self.field = field
