"""Turns the `config.data` section into UserSequences: the one place a config names a dataset."""
from __future__ import annotations

import os

from absl import logging

from recjax.data.types import UserSequences

KINDS = ("movielens", "text", "kuairand", "synthetic")


def resolve_path(path: str) -> str:
  """Relative data paths are taken from the repository root, so configs work from any cwd."""
  if os.path.isabs(path):
    return path
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(root, path))


def load_dataset(data_cfg, cache_dir: str | None = None) -> UserSequences:
  """Reads the dataset a config names; with `data.array_record=True` the sequences go through an
  array_record TFDS dataset in `cache_dir` (written once, then read back on every start)."""
  if not data_cfg.get("array_record", False):
    return _read_source(data_cfg, cache_dir)
  from recjax.data import tfds_builder  # pylint: disable=import-outside-toplevel
  root = os.path.join(cache_dir or resolve_path("workdirs/data"), "array_record")
  name = "recjax_sequences"
  path = tfds_builder.version_dir(root, name)
  if not os.path.exists(path):
    path = tfds_builder.write_sequences_array_record(_read_source(data_cfg, cache_dir), root, name)
    logging.info("wrote array_record dataset %s", path)
  return tfds_builder.read_sequences_array_record(path)


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
    return movielens.load_movielens(data_cfg.name, path, with_timestamps=data_cfg.get("with_timestamps", False))
  if kind == "text":
    from recjax.data import text_sequences  # pylint: disable=import-outside-toplevel
    return text_sequences.read_text_sequences(resolve_path(data_cfg.path), id_offset=data_cfg.get("id_offset", 0))
  if kind == "kuairand":
    from recjax.data import kuairand  # pylint: disable=import-outside-toplevel
    return kuairand.load_kuairand(resolve_path(data_cfg.data_dir), data_cfg.get("variant", "pure"),
                                  data_cfg.get("logs", "standard"))
  if kind == "synthetic":
    from recjax.data import kuairand, synthetic  # pylint: disable=import-outside-toplevel
    world = synthetic.WorldConfig(**dict(data_cfg.world))
    out_dir = os.path.join(cache_dir or resolve_path("workdirs/data"), f"synthetic_{world.fingerprint()}")
    if not os.path.exists(os.path.join(out_dir, "world.json")):
      logging.info("generating synthetic world into %s", out_dir)
      synthetic.generate_world(world, out_dir)
    return kuairand.load_kuairand(out_dir, world.variant, data_cfg.get("logs", "standard"))
  raise ValueError(f"unknown data.kind {kind!r}; known: {KINDS}")
