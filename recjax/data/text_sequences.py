"""Plain-text input: the validated delimited-table parser every reader shares, and the
"one line per user" sequence format (SASRec / P5 style).

Shared parsing rules (used by the MovieLens and KuaiRand readers too):
  * Every row must have exactly the expected number of fields; blank lines are errors (they usually
    mean a truncated or concatenated file), except that a final newline is optional.
  * Numeric fields are strict: integers match `-?[0-9]+`, decimals `-?[0-9]+(.[0-9]*)?` (no
    spaces, no '+', no exponent). Anything else raises `DataError` naming file, line and field.
  * Line numbers are 1-based physical lines of the file, header included.

Large numeric files (MovieLens ratings, KuaiRand logs) are parsed chunk by chunk on raw bytes with
numpy. A cheap vectorised check decides whether a chunk is clean; only a chunk that fails it is
re-parsed line by line, which is where the precise error message comes from. Valid input therefore
never pays for the per-line Python path.

Sequence text format (`read_text_sequences` / `write_text_sequences`):
  * layout "per_user" (default, P5 `sequential_data.txt` style): one line per user,
    `user item item ...`, whitespace separated (spaces or tabs), items oldest first. A user may
    appear on one line only. Users keep file order.
  * layout "pairs" (SASRec `ml-1m.txt` style): one event per line, `user item`, the file order
    of a user's lines is their time order. Users come out in ascending id order.
  * Lines whose first non-blank character is '#' are comments and are skipped (they carry no data,
    so nothing is dropped); blank lines are errors. No timestamps: `timestamps` is None.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import os
import re
from collections.abc import Iterator, Sequence
from typing import IO

import numpy as np

from recjax.data.errors import DataError
from recjax.data.types import Interactions, UserSequences

_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?[0-9]+(\.[0-9]*)?|-?\.[0-9]+")
_CHUNK_BYTES = 1 << 23   # 8 MiB of text per parsing chunk: bounded memory, few Python calls
_FIELD_SEP_BYTE = 0x1f   # multi-byte separators ('::') are mapped onto this byte in the fast path


# ---------------------------------------------------------------------------------------------
# Opening files
# ---------------------------------------------------------------------------------------------

def open_binary(path: str | os.PathLike) -> IO[bytes]:
  """Opens `path` for binary reading; `.gz` files are decompressed transparently."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DataError(path, "file not found")
  if os.path.isdir(path):
    raise DataError(path, "is a directory, expected a file")
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _decode(path: str, raw: bytes, encoding: str, line: int) -> str:
  """Decodes one line, naming the line when the bytes are not valid `encoding`."""
  try:
    return raw.decode(encoding)
  except UnicodeDecodeError as e:
    raise DataError(path, f"not valid {encoding} text ({e.reason} at byte {e.start})", line=line) from None


def _strip_eol(text: str) -> str:
  return text.rstrip("\n").rstrip("\r")


def read_lines(path: str | os.PathLike, *, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, line without end-of-line) for every line of a text file.

  Raises DataError for an empty file. Meant for small files (metadata tables, sequences).
  """
  path = os.fspath(path)
  with open_binary(path) as f:
    n = 0
    for n, raw in enumerate(f, start=1):
      text = _strip_eol(_decode(path, raw, encoding, n))
      if n == 1:
        text = text.lstrip("\ufeff")   # a UTF-8 byte-order mark is not part of the first field
      yield n, text
    if n == 0:
      raise DataError(path, "empty file")


# ---------------------------------------------------------------------------------------------
# Header and range checks
# ---------------------------------------------------------------------------------------------

def check_header(path: str, found: Sequence[str], expected: Sequence[str], *, line: int = 1) -> None:
  """Raises DataError unless the header columns equal `expected` exactly (names and order)."""
  found, expected = list(found), list(expected)
  if found == expected:
    return
  missing = [c for c in expected if c not in found]
  unexpected = [c for c in found if c not in expected]
  parts = [f"header has {len(found)} columns, expected {len(expected)}: {','.join(expected)}"]
  if missing:
    parts.append(f"missing column(s): {', '.join(missing)}")
  if unexpected:
    parts.append(f"unexpected column(s): {', '.join(unexpected)}")
  if not missing and not unexpected:
    parts.append("columns are in the wrong order")
  raise DataError(path, "; ".join(parts), line=line)


def check_range(path: str, values: np.ndarray, *, field: str, first_line: int,
                low: float | None = None, high: float | None = None, what: str = "value") -> None:
  """Raises DataError at the first row whose value lies outside [low, high].

  Args:
    values: [N] parsed column; row i sits on line first_line + i.
  """
  bad = np.zeros(len(values), bool)
  if low is not None:
    bad |= values < low
  if high is not None:
    bad |= values > high
  if bad.any():
    i = int(np.argmax(bad))
    lo = "-inf" if low is None else _fmt(low)
    hi = "inf" if high is None else _fmt(high)
    raise DataError(path, f"{what} {_fmt(values[i])} is out of range [{lo}, {hi}]",
                    line=first_line + i, field=field)


def _fmt(x) -> str:
  x = float(x) if not isinstance(x, (int, np.integer)) else int(x)
  return str(int(x)) if float(x).is_integer() else str(x)


def parse_int(path: str, text: str, *, line: int, field: str) -> int:
  """Parses one strict integer field."""
  if not _INT_RE.fullmatch(text):
    raise DataError(path, f"'{text}' is not an integer", line=line, field=field)
  return int(text)


def parse_float(path: str, text: str, *, line: int, field: str) -> float:
  """Parses one strict decimal field (no exponent, no 'nan')."""
  if not _FLOAT_RE.fullmatch(text):
    raise DataError(path, f"'{text}' is not a number", line=line, field=field)
  return float(text)


# ---------------------------------------------------------------------------------------------
# Numeric tables (fast, chunked)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NumericTable:
  """Parsed columns of a numeric delimited file; row i sits on line `first_line + i`."""
  path: str
  columns: dict[str, np.ndarray]   # int64 (or float64 for float columns), each [N]
  first_line: int

  def __len__(self) -> int:
    return len(next(iter(self.columns.values())))

  def __getitem__(self, name: str) -> np.ndarray:
    return self.columns[name]

  def check_range(self, field: str, low: float | None = None, high: float | None = None,
                  what: str = "value") -> None:
    check_range(self.path, self.columns[field], field=field, first_line=self.first_line,
                low=low, high=high, what=what)


def _sep_display(sep: str) -> str:
  return {"\t": "TAB", ",": "','", "::": "'::'", "|": "'|'"}.get(sep, repr(sep))


def _fast_chunk(buf: bytes, sep: str, nf: int, float_fields: np.ndarray) -> np.ndarray | None:
  """Parses a chunk of complete lines with numpy, or returns None if anything looks off.

  Returns [n_lines, nf] int64 (float64 when any float field). None means "let the line-by-line
  parser decide": it is the authority on errors, this function only has to be conservative.
  """
  if b"\r" in buf:
    buf = buf.replace(b"\r\n", b"\n")
  if len(sep) > 1:
    buf = buf.replace(sep.encode(), bytes([_FIELD_SEP_BYTE]))
    sep_byte = _FIELD_SEP_BYTE
  else:
    sep_byte = ord(sep)
  b = np.frombuffer(buf, np.uint8)
  allowed = np.zeros(256, bool)
  allowed[ord("0"):ord("9") + 1] = True
  allowed[[ord("-"), ord("\n"), sep_byte]] = True
  has_float = bool(float_fields.any())
  if has_float:
    allowed[ord(".")] = True
  if not allowed[b].all():
    return None
  is_sep = b == sep_byte
  is_nl = b == ord("\n")
  nl_pos = np.flatnonzero(is_nl)
  seps_before = np.cumsum(is_sep)
  seps_per_line = np.diff(np.concatenate([[0], seps_before[nl_pos]]))
  if np.any(seps_per_line != nf - 1):
    return None
  boundary = is_sep | is_nl
  prev_boundary = np.concatenate([[True], boundary[:-1]])
  if np.any(boundary & prev_boundary):        # an empty field or blank line
    return None
  if np.diff(np.flatnonzero(boundary), prepend=-1).max() > 19:
    return None                                # > 18 characters: numpy would saturate, not fail
  next_boundary = np.concatenate([boundary[1:], [True]])
  if np.any((b == ord("-")) & ~(prev_boundary & ~next_boundary)):
    return None                                # '-' not leading a number: numpy might accept it
  if has_float:
    dots = np.flatnonzero(b == ord("."))
    if len(dots):
      line_of_dot = np.searchsorted(nl_pos, dots)
      line_start_seps = np.concatenate([[0], seps_before[nl_pos]])[line_of_dot]
      field_of_dot = seps_before[dots] - line_start_seps
      if not float_fields[field_of_dot].all():
        return None                            # a decimal point in an integer column
  text = buf if sep_byte == ord(" ") else buf.replace(bytes([sep_byte]), b" ")
  try:
    values = np.fromstring(text, sep=" ", dtype=np.float64 if has_float else np.int64)
  except (ValueError, DeprecationWarning):
    return None
  if len(values) != len(nl_pos) * nf:
    return None
  values = values.reshape(len(nl_pos), nf)
  if has_float:
    int_fields = ~float_fields
    if np.any(np.abs(values[:, int_fields]) > 2**53):   # float64 would have rounded an integer
      return None
  return values


def _slow_chunk(path: str, buf: bytes, sep: str, names: Sequence[str], float_fields: np.ndarray,
                first_line: int, encoding: str) -> np.ndarray:
  """Line-by-line parse of a chunk; raises DataError at the first bad line/field."""
  nf = len(names)
  lines = buf.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  out = np.zeros((len(lines), nf), np.float64 if float_fields.any() else np.int64)
  int_limit = 2**53 if float_fields.any() else 2**63 - 1   # exact in the table's dtype
  for i, raw in enumerate(lines):
    line = first_line + i
    text = _decode(path, raw, encoding, line).rstrip("\r")
    if text == "":
      raise DataError(path, "blank line (expected a data row)", line=line)
    fields = text.split(sep)
    if len(fields) != nf:
      raise DataError(path, f"expected {nf} fields separated by {_sep_display(sep)} "
                      f"({', '.join(names)}), found {len(fields)}", line=line)
    for j, (name, tok) in enumerate(zip(names, fields)):
      if float_fields[j]:
        out[i, j] = parse_float(path, tok, line=line, field=name)
        continue
      x = parse_int(path, tok, line=line, field=name)
      if abs(x) > int_limit:
        raise DataError(path, f"integer {tok} is too large (limit {int_limit})", line=line, field=name)
      out[i, j] = x
  return out


def _line_chunks(f: IO[bytes], chunk_bytes: int) -> Iterator[bytes]:
  """Yields chunks of complete lines (each ends with b'\\n')."""
  while True:
    buf = f.read(chunk_bytes)
    if not buf:
      return
    if not buf.endswith(b"\n"):
      buf += f.readline()
      if not buf.endswith(b"\n"):
        buf += b"\n"   # the file's last line had no newline
    yield buf


def read_numeric_table(path: str | os.PathLike, columns: Sequence[str], *, sep: str,
                       header: bool, float_columns: Sequence[str] = (),
                       encoding: str = "ascii", chunk_bytes: int = _CHUNK_BYTES) -> NumericTable:
  """Reads a delimited file whose fields are all numbers.

  Args:
    columns: the field names, in file order. With `header=True` the file's first line must list
      exactly these names; without a header they are only used in messages.
    sep: field separator ('::', '\\t', ',', ...).
    float_columns: names parsed as decimals; all others must be integers.
  Returns:
    NumericTable with int64 [N] columns (float64 for `float_columns`).
  """
  path = os.fspath(path)
  names = list(columns)
  float_fields = np.array([c in float_columns for c in names])
  blocks: list[np.ndarray] = []
  with open_binary(path) as f:
    line = 1
    if header:
      raw = f.readline()
      if not raw:
        raise DataError(path, "empty file")
      text = _strip_eol(_decode(path, raw, encoding if encoding != "ascii" else "utf-8", 1))
      check_header(path, text.lstrip("\ufeff").split(sep), names)
      line = 2
    first_line = line
    for buf in _line_chunks(f, chunk_bytes):
      values = _fast_chunk(buf, sep, len(names), float_fields)
      if values is None:
        values = _slow_chunk(path, buf, sep, names, float_fields, line, encoding)
      blocks.append(values)
      line += len(values)
  if not blocks or line == first_line:
    raise DataError(path, "no data rows after the header" if header else "empty file")
  table = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
  out = {}
  for j, name in enumerate(names):
    col = table[:, j]
    out[name] = np.ascontiguousarray(col if float_fields[j] else col.astype(np.int64))
  return NumericTable(path, out, first_line)


# ---------------------------------------------------------------------------------------------
# String tables (small files: metadata, feature tables)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TextTable:
  """String rows of a delimited file; `lines[i]` is the physical line of row i."""
  path: str
  names: list[str]
  rows: list[list[str]]
  lines: list[int]

  def column(self, name: str) -> list[str]:
    j = self.names.index(name)
    return [r[j] for r in self.rows]

  def int_column(self, name: str) -> np.ndarray:
    """Strict integer column, [N] int64."""
    vals = self.column(name)
    out = np.empty(len(vals), np.int64)
    for i, (v, line) in enumerate(zip(vals, self.lines)):
      x = parse_int(self.path, v, line=line, field=name)
      if abs(x) >= 2**63:
        raise DataError(self.path, f"integer {v} does not fit in 64 bits", line=line, field=name)
      out[i] = x
    return out

  def numeric_column(self, name: str) -> np.ndarray:
    """int64 when every value is an integer; else float64 with empty fields as NaN."""
    vals = self.column(name)
    if all(_INT_RE.fullmatch(v) for v in vals):
      return self.int_column(name)
    out = np.empty(len(vals), np.float64)
    for i, (v, line) in enumerate(zip(vals, self.lines)):
      out[i] = np.nan if v == "" else parse_float(self.path, v, line=line, field=name)
    return out

  def str_column(self, name: str) -> np.ndarray:
    return np.array(self.column(name), dtype=object)


def _csv_rows(path: str, sep: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
  """(line number, fields) of a quoted CSV file, parsed by the csv module in one C loop."""
  with open_binary(path) as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as f:
    reader = csv.reader(f, delimiter=sep, strict=True)
    while True:
      try:
        fields = next(reader)
      except StopIteration:
        return
      except csv.Error as e:
        raise DataError(path, f"bad CSV quoting ({e})", line=reader.line_num) from None
      except UnicodeDecodeError as e:
        raise DataError(path, f"not valid {encoding} text ({e.reason})", line=reader.line_num + 1) from None
      if reader.line_num == 1 and fields:
        fields[0] = fields[0].lstrip("\ufeff")
      yield reader.line_num, fields


def _split_rows(path: str, sep: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
  for line, text in read_lines(path, encoding=encoding):
    yield line, (text.split(sep) if text else [])


def read_text_table(path: str | os.PathLike, names: Sequence[str], *, sep: str, header: bool,
                    encoding: str = "utf-8", quoted: bool = False) -> TextTable:
  """Reads a delimited file as strings, checking the header and every row's field count.

  Args:
    quoted: parse CSV quoting ("a,b" is one field) with the csv module.
  """
  path = os.fspath(path)
  names = list(names)
  rows, lines = [], []
  n_seen = 0
  source = _csv_rows(path, sep, encoding) if quoted else _split_rows(path, sep, encoding)
  for line, fields in source:
    n_seen += 1
    if header and n_seen == 1:
      check_header(path, fields, names, line=line)
      continue
    if not fields:
      raise DataError(path, "blank line (expected a data row)", line=line)
    if len(fields) != len(names):
      raise DataError(path, f"expected {len(names)} fields separated by {_sep_display(sep)} "
                      f"({', '.join(names)}), found {len(fields)}", line=line)
    rows.append(fields)
    lines.append(line)
  if n_seen == 0:
    raise DataError(path, "empty file")
  if not rows:
    raise DataError(path, "no data rows after the header")
  return TextTable(path, names, rows, lines)


# ---------------------------------------------------------------------------------------------
# One-line-per-user sequence files
# ---------------------------------------------------------------------------------------------

def _parse_id_tokens(path: str, tokens: list[str], *, line: int, field: str) -> np.ndarray:
  """Strict integer tokens of one line -> int64 [len(tokens)]."""
  try:
    arr = np.array(tokens).astype(np.int64)
  except (ValueError, OverflowError):
    arr = None
  if arr is None or not all(_INT_RE.fullmatch(t) for t in tokens):
    for k, t in enumerate(tokens):
      parse_int(path, t, line=line, field=f"{field}[{k}]")
      if abs(int(t)) >= 2**63:
        raise DataError(path, f"integer {t} does not fit in 64 bits", line=line, field=f"{field}[{k}]")
  return arr


def _data_lines(path: str) -> Iterator[tuple[int, list[str]]]:
  """(line number, whitespace tokens) of non-comment lines; blank lines raise."""
  for line, text in read_lines(path, encoding="utf-8"):
    stripped = text.strip()
    if stripped.startswith("#"):
      continue
    if not stripped:
      raise DataError(path, "blank line (expected 'user item ...')", line=line)
    yield line, stripped.split()


def _check_items(path: str, items: np.ndarray, *, line: int, num_items: int | None,
                 id_offset: int, field: str) -> None:
  """Model ids must be >= 1 (0 is padding) and < num_items when that is known."""
  bad = items < 1 if num_items is None else (items < 1) | (items >= num_items)
  if bad.any():
    k = int(np.argmax(bad))
    limit = "" if num_items is None else f" and below num_items={num_items}"
    raise DataError(path, f"item id {int(items[k]) - id_offset} gives model id {int(items[k])}; model ids "
                    f"must be >= 1 (0 is padding){limit}; is id_offset={id_offset} right?",
                    line=line, field=f"{field}[{k}]")


def read_text_sequences(path: str | os.PathLike, *, layout: str = "per_user", id_offset: int = 0,
                        num_items: int | None = None,
                        candidate_items: np.ndarray | None = None) -> UserSequences:
  """Reads a user-sequence text file (see the module docstring for the format).

  Args:
    layout: "per_user" (`user item item ...`) or "pairs" (`user item`, one event per line).
    id_offset: added to every item id to get model ids (1 for files whose ids start at 0).
    num_items: embedding rows; default max model id + 1. Ids >= num_items raise.
  Returns:
    UserSequences with timestamps=None.
  """
  path = os.fspath(path)
  if layout == "per_user":
    return _read_per_user(path, id_offset, num_items, candidate_items)
  if layout == "pairs":
    return _read_pairs(path, id_offset, num_items, candidate_items)
  raise ValueError(f"layout must be 'per_user' or 'pairs', got {layout!r}")


def _read_per_user(path: str, id_offset: int, num_items: int | None,
                   candidate_items: np.ndarray | None) -> UserSequences:
  users, seqs, seen = [], [], {}
  for line, tokens in _data_lines(path):
    if len(tokens) < 2:
      raise DataError(path, "user has no items (expected 'user item item ...')", line=line)
    user = parse_int(path, tokens[0], line=line, field="user")
    if user < 0:
      raise DataError(path, f"user id {user} is negative", line=line, field="user")
    if user in seen:
      raise DataError(path, f"user {user} already appeared on line {seen[user]}", line=line, field="user")
    seen[user] = line
    items = _parse_id_tokens(path, tokens[1:], line=line, field="items") + id_offset
    _check_items(path, items, line=line, num_items=num_items, id_offset=id_offset, field="items")
    users.append(user)
    seqs.append(items)
  if not seqs:
    raise DataError(path, "no data lines (only comments)")
  items = np.concatenate(seqs)
  offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
  n_items = int(items.max()) + 1 if num_items is None else num_items
  return UserSequences(user_ids=np.array(users, np.int64), offsets=offsets, items=items.astype(np.int32),
                       timestamps=None, num_items=n_items, source=path, candidate_items=candidate_items)


def _read_pairs(path: str, id_offset: int, num_items: int | None,
                candidate_items: np.ndarray | None) -> UserSequences:
  from recjax.data.sequences import sequences_from_interactions   # avoids an import cycle
  users, items = [], []
  for line, tokens in _data_lines(path):
    if len(tokens) != 2:
      raise DataError(path, f"expected 2 fields 'user item', found {len(tokens)}", line=line)
    user = parse_int(path, tokens[0], line=line, field="user")
    item = parse_int(path, tokens[1], line=line, field="item") + id_offset
    if user < 0:
      raise DataError(path, f"user id {user} is negative", line=line, field="user")
    _check_items(path, np.array([item]), line=line, num_items=num_items, id_offset=id_offset, field="item")
    users.append(user)
    items.append(item)
  if not users:
    raise DataError(path, "no data lines (only comments)")
  item_arr = np.array(items, np.int64)
  n_items = int(item_arr.max()) + 1 if num_items is None else num_items
  inter = Interactions(user=np.array(users, np.int64), item=item_arr, timestamp=None, source=path,
                       num_items=n_items, candidate_items=candidate_items)
  return sequences_from_interactions(inter)


def write_text_sequences(seqs: UserSequences, path: str | os.PathLike, *, layout: str = "per_user",
                         id_offset: int = 0, comment: str | None = None) -> str:
  """Writes `seqs` in the text format `read_text_sequences` reads (ids written as item - id_offset).

  Extras and timestamps are not written: this format has no place for them.
  """
  path = os.fspath(path)
  if layout not in ("per_user", "pairs"):
    raise ValueError(f"layout must be 'per_user' or 'pairs', got {layout!r}")
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wt", encoding="utf-8") as f:
    if comment:
      for c in comment.splitlines():
        f.write(f"# {c}\n")
    for k, user in enumerate(seqs.user_ids.tolist()):
      ids = (seqs.items_of(k).astype(np.int64) - id_offset).tolist()
      if layout == "per_user":
        f.write(f"{user} {' '.join(map(str, ids))}\n")
      else:
        f.writelines(f"{user} {i}\n" for i in ids)
  return path
