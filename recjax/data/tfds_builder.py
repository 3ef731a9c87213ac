"""UserSequences <-> a TFDS dataset in array_record format (no TensorFlow needed).

One example per user, split "train" (the whole dataset; train/valid/test splitting happens later):
  index       int64            the user's position k in the UserSequences (restores order)
  user_id     int64
  items       Sequence(int32)  model ids, oldest first
  timestamps  Sequence(int64)  unix seconds; empty when the source has none
  extra_<n>   Sequence(dtype)  one per per-event extra (ratings, KuaiRand actions, tab, ...)
TFDS shuffles examples by key hash when it writes, so readers sort by `index`. What the features
cannot hold (num_items, candidate_items, has_timestamps, source, extras dtypes) goes into
`recjax_sequences.json` next to dataset_info.json, which makes a write/read round trip lossless.

`file_format="array_record"` is required: the TFDS default (tfrecord) needs TensorFlow. Builders
are made per dataset name with skip_registration, so any number of names can coexist.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import tensorflow_datasets as tfds

from recjax.data.types import UserSequences

DATASET_VERSION = "1.0.0"
META_FILE = "recjax_sequences.json"
SPLIT = "train"
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


class _SequencesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes the examples of one UserSequences (given at construction)."""
  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: "One example per user: index, user_id, items, timestamps, extras."}

  def __init__(self, *, seqs: UserSequences, **kwargs):
    self._seqs = seqs   # set before super().__init__, which may already build the info
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {"index": np.int64, "user_id": np.int64,
                "items": tfds.features.Sequence(np.int32),
                "timestamps": tfds.features.Sequence(np.int64)}
    for name, values in self._seqs.extras.items():
      features[f"extra_{name}"] = tfds.features.Sequence(values.dtype.type)
    return tfds.core.DatasetInfo(builder=self, description=f"recjax user sequences from {self._seqs.source}",
                                 features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager   # the examples come from memory
    return {SPLIT: self._generate_examples()}

  def _generate_examples(self):
    s = self._seqs
    for k in range(s.num_users):
      lo, hi = int(s.offsets[k]), int(s.offsets[k + 1])
      example = {"index": k, "user_id": int(s.user_ids[k]), "items": s.items[lo:hi].astype(np.int32),
                 "timestamps": (s.timestamps[lo:hi] if s.timestamps is not None
                                else np.zeros(0, np.int64))}
      for name, values in s.extras.items():
        example[f"extra_{name}"] = values[lo:hi]
      yield k, example


def _check_name(name: str) -> None:
  if not _NAME_RE.fullmatch(name):
    raise ValueError(f"dataset name must be snake_case ([a-z][a-z0-9_]*), got {name!r}")


def version_dir(data_dir: str | os.PathLike, name: str) -> str:
  """<data_dir>/<name>/<DATASET_VERSION>: the folder TFDS writes (and readers open)."""
  return os.path.join(os.fspath(data_dir), name, DATASET_VERSION)


def _metadata(seqs: UserSequences) -> dict:
  return {"num_items": int(seqs.num_items),
          "candidate_items": None if seqs.candidate_items is None
          else np.asarray(seqs.candidate_items, np.int64).tolist(),
          "has_timestamps": seqs.has_timestamps, "source": seqs.source,
          "num_users": int(seqs.num_users), "num_events": int(len(seqs.items)),
          "extras": {k: v.dtype.str for k, v in seqs.extras.items()}}


def write_sequences_array_record(seqs: UserSequences, data_dir: str | os.PathLike, name: str, *,
                                 overwrite: bool = False, provenance: dict | None = None) -> str:
  """Writes `seqs` as the TFDS dataset `name` under data_dir (array_record, split "train").

  `provenance` (JSON-able; e.g. the data config and its fingerprint, which the registry keys its
  cache by) is kept in the metadata file, where `read_metadata` returns it.

  Returns:
    The dataset's version folder (pass it to read_sequences_array_record / sequences_data_source).
  """
  _check_name(name)
  out = version_dir(data_dir, name)
  if os.path.exists(out):
    if not overwrite:
      raise FileExistsError(f"{out} already exists; pass overwrite=True to replace it")
    shutil.rmtree(out)
  cls = type(f"RecjaxSequences_{name}", (_SequencesBuilder,), {"name": name}, skip_registration=True)
  builder = cls(seqs=seqs, data_dir=os.fspath(data_dir), file_format="array_record")
  builder.download_and_prepare()
  # Written last, through a rename: a dataset whose metadata file exists is complete.
  meta_path = os.path.join(builder.data_dir, META_FILE)
  with open(meta_path + ".part", "w", encoding="utf-8") as f:
    json.dump({**_metadata(seqs), "provenance": provenance}, f)
  os.replace(meta_path + ".part", meta_path)
  return builder.data_dir


def _resolve(path: str | os.PathLike, name: str | None) -> str:
  path = os.fspath(path)
  return version_dir(path, name) if name is not None else path


def sequences_data_source(path: str | os.PathLike, name: str | None = None, split: str = SPLIT):
  """Random-access source (len, [i], __getitems__) for grain: records in TFDS's shuffled order.

  Args:
    path: the version folder, or the data_dir when `name` is given.
  """
  return tfds.builder_from_directory(_resolve(path, name)).as_data_source(split=split)


def read_metadata(path: str | os.PathLike, name: str | None = None) -> dict:
  """The recjax metadata written beside the dataset (num_items, candidate_items, ...)."""
  with open(os.path.join(_resolve(path, name), META_FILE), encoding="utf-8") as f:
    return json.load(f)


def read_sequences_array_record(path: str | os.PathLike, name: str | None = None) -> UserSequences:
  """Reads a dataset written by write_sequences_array_record back into UserSequences, in the
  original user order (records are sorted by their `index` feature)."""
  meta = read_metadata(path, name)
  source = sequences_data_source(path, name)
  records = [source[i] for i in range(len(source))]
  records.sort(key=lambda r: int(r["index"]))
  lengths = np.array([len(r["items"]) for r in records], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

  def cat(key: str, dtype) -> np.ndarray:
    parts = [np.asarray(r[key], dtype) for r in records]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)

  candidates = meta["candidate_items"]
  return UserSequences(
      user_ids=np.array([int(r["user_id"]) for r in records], np.int64), offsets=offsets,
      items=cat("items", np.int32),
      timestamps=cat("timestamps", np.int64) if meta["has_timestamps"] else None,
      num_items=int(meta["num_items"]), source=meta["source"],
      candidate_items=None if candidates is None else np.array(candidates, np.int64),
      extras={k: cat(f"extra_{k}", np.dtype(dt)) for k, dt in meta["extras"].items()})
