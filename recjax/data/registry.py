"""Turns the `config.data` section into UserSequences: the one place a config names a dataset."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from absl import logging

from recjax.data.types import UserSequences

KINDS = ("movielens", "text", "kuairand", "synthetic")
# The config.data keys each kind reads to make its sequences (data.kind included): the data
# fingerprint hashes exactly these, so the split/length keys (max_len, protocol) and the route
# (array_record) share one cache. configs/base.py declares every key with its default.
SOURCE_KEYS = {
    "movielens": ("name", "data_dir", "with_timestamps"),
    "text": ("path", "id_offset"),
    "kuairand": ("data_dir", "variant", "logs"),
    "synthetic": ("world", "logs"),
}
# Defaults for configs not built from configs/base.py (library use, tests).
DEFAULTS = {"with_timestamps": False, "id_offset": 0, "variant": "pure", "logs": "standard",
            "array_record": False}
_PATH_KEYS = ("data_dir", "path")
ARRAY_RECORD_NAME = "recjax_sequences"


def resolve_path(path: str) -> str:
  """Relative data paths are taken from the repository root, so configs work from any cwd."""
  if os.path.isabs(path):
    return path
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(root, path))


def _get(data_cfg, key: str):
  if key in DEFAULTS:
    return data_cfg.get(key, DEFAULTS[key])
  if key not in data_cfg:
    raise ValueError(f"data.kind={data_cfg.kind!r} needs config key data.{key}")
  return data_cfg[key]


def data_spec(data_cfg) -> dict:
  """The resolved settings that determine the sequences: data.kind and its SOURCE_KEYS, paths made
  absolute, a synthetic world with every WorldConfig default filled in."""
  kind = data_cfg.kind
  if kind not in SOURCE_KEYS:
    raise ValueError(f"unknown data.kind {kind!r}; known: {KINDS}")
  spec = {"kind": kind}
  for key in SOURCE_KEYS[kind]:
    value = _get(data_cfg, key)
    if key in _PATH_KEYS:
      value = resolve_path(value)
    elif key == "world":
      from recjax.data import synthetic  # pylint: disable=import-outside-toplevel
      world = synthetic.WorldConfig(**_plain(value))
      value = {"generator_version": world.generator_version, **world.as_dict()}
    spec[key] = _plain(value)
  return spec


def _plain(value):
  """ConfigDicts, tuples and numpy scalars -> JSON values (dicts, lists, Python numbers)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value.item() if hasattr(value, "item") else value


def data_fingerprint(data_cfg) -> str:
  """16 hex digits of the data spec: the array_record cache key (same data config, same folder)."""
  blob = json.dumps(data_spec(data_cfg), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_dataset(data_cfg, cache_dir: str | None = None) -> UserSequences:
  """Reads the dataset a config names; with `data.array_record=True` the sequences go through an
  array_record TFDS dataset at <cache_dir>/array_record/<data fingerprint> (written once per data
  config, then read back on every start; another data config gets another folder)."""
  if not _get(data_cfg, "array_record"):
    return _read_source(data_cfg, cache_dir)
  from recjax.data import tfds_builder  # pylint: disable=import-outside-toplevel
  spec, fingerprint = data_spec(data_cfg), data_fingerprint(data_cfg)
  root = os.path.join(cache_dir or resolve_path("workdirs/data"), "array_record", fingerprint)
  path = tfds_builder.version_dir(root, ARRAY_RECORD_NAME)
  # The metadata file is written last: without it the folder is an interrupted write.
  if not os.path.exists(os.path.join(path, tfds_builder.META_FILE)):
    path = tfds_builder.write_sequences_array_record(
        _read_source(data_cfg, cache_dir), root, ARRAY_RECORD_NAME, overwrite=True,
        provenance={"data_fingerprint": fingerprint, "data_spec": spec})
    logging.info("wrote array_record dataset %s", path)
  made_by = (tfds_builder.read_metadata(path).get("provenance") or {}).get("data_fingerprint")
  if made_by != fingerprint:
    raise ValueError(f"{path} was written for data fingerprint {made_by}, not {fingerprint} "
                     f"({spec}); delete it to rebuild")
  return tfds_builder.read_sequences_array_record(path)


def synthetic_dir(data_cfg, cache_dir: str | None) -> str:
  """The folder a synthetic world of `data_cfg` is generated into (its feature tables and oracle)."""
  from recjax.data import synthetic  # pylint: disable=import-outside-toplevel
  world = synthetic.WorldConfig(**_plain(data_cfg.world))
  return os.path.join(cache_dir or resolve_path("workdirs/data"), f"synthetic_{world.fingerprint()}")


def _read_source(data_cfg, cache_dir: str | None) -> UserSequences:
  """Reads (or, for "synthetic", generates then reads) the dataset a config names."""
  kind = data_cfg.kind
  if kind == "movielens":
    from recjax.data import movielens  # pylint: disable=import-outside-toplevel
    path = resolve_path(data_cfg.data_dir)
    if not os.path.isdir(path):
      raise FileNotFoundError(
          f"data.data_dir={data_cfg.data_dir!r} (resolved to {path}) does not exist. MovieLens cannot be "
          "shipped with recjax (licence): run scripts/download_movielens.sh or point "
          "--config.data.data_dir at your copy.")
    return movielens.load_movielens(data_cfg.name, path, with_timestamps=_get(data_cfg, "with_timestamps"))
  if kind == "text":
    from recjax.data import text_sequences  # pylint: disable=import-outside-toplevel
    return text_sequences.read_text_sequences(resolve_path(data_cfg.path), id_offset=_get(data_cfg, "id_offset"))
  if kind == "kuairand":
    from recjax.data import kuairand  # pylint: disable=import-outside-toplevel
    return kuairand.load_kuairand(resolve_path(data_cfg.data_dir), _get(data_cfg, "variant"),
                                  _get(data_cfg, "logs"))
  if kind == "synthetic":
    from recjax.data import kuairand, synthetic  # pylint: disable=import-outside-toplevel
    world = synthetic.WorldConfig(**_plain(data_cfg.world))
    out_dir = synthetic_dir(data_cfg, cache_dir)
    if not os.path.exists(os.path.join(out_dir, "world.json")):
      logging.info("generating synthetic world into %s", out_dir)
      synthetic.generate_world(world, out_dir)
    return kuairand.load_kuairand(out_dir, world.variant, _get(data_cfg, "logs"))
  raise ValueError(f"unknown data.kind {kind!r}; known: {KINDS}")
