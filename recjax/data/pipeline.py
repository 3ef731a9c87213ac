"""The grain input pipeline: shuffled, epoch-aligned, fixed-shape batches with resumable state.

Each epoch is a fresh permutation of the training examples (grain reseeds `shuffle` per `repeat`
epoch), cut into batches of `batch_size` users; the last batch of an epoch is padded with empty
rows (length 0, weight 0) so every batch has the same shape and one compiled step serves all.
The iterator's state (`get_state()`, a small dict) is saved with every checkpoint, so a resumed run
sees exactly the batches an uninterrupted run would.

For the sampled-softmax loss the batch also carries the *packed* supervised positions:
`token_index` [T] (flat indices into [B * L] of real positions, padded) and `token_weight` [T]
(1 for real, 0 for padding), with T rounded up to a multiple of `token_bucket` so that only a
handful of shapes ever compile. Padding positions are then never scored (≈ 45% of a padded
ML-1M batch).

Per-process data (multi-process runs, `part`): a process builds only its slots [start, stop) of each
global batch (its rows of the mesh's `data` axis, `train/mesh.process_rows`), cut from the same
global permutation, so the processes' parts laid side by side are exactly the 1-process batch. grain's
own per-process sharding (`ShardByJaxProcess`) splits the *examples* between processes, which gives
each process different batches than the 1-process run: exact equality needs this slicing instead.
The packed token fields index the global [B * L] batch, so each process still reads the labels of
the whole batch (one int array) to pack them; every other field it reads for its own rows only.
"""
from __future__ import annotations

from typing import Iterator

import grain
import numpy as np

from recjax.data.splits import EvalExamples, TrainExamples

PACKED_FIELDS = ("token_index", "token_weight")   # [T] flat indices into the whole [B * L] batch


def _pack_tokens(labels_BL: np.ndarray, bucket: int):
  flat = np.flatnonzero(labels_BL.reshape(-1) != 0).astype(np.int32)
  n = len(flat)
  size = labels_BL.size if bucket <= 0 else max(bucket, -(-n // bucket) * bucket)
  size = min(size, labels_BL.size)
  index = np.zeros(size, np.int32)
  weight = np.zeros(size, np.float32)
  index[:n] = flat
  weight[:n] = 1.0
  return index, weight


def _take_rows(arr, rows, batch_size):
  out = np.zeros((batch_size,) + arr.shape[1:], arr.dtype)
  out[:len(rows)] = arr[rows]
  return out


def _take_fields(ex, fields: tuple[str, ...], rows: np.ndarray, batch_size: int) -> dict:
  """The named per-user arrays of `rows`, padded to `batch_size`; times too when the data has them."""
  if ex.times is not None:
    fields = fields + ("times", "next_times")
  return {f: _take_rows(getattr(ex, f), rows, batch_size) for f in fields}


def local_rows(rows: np.ndarray, batch_size: int, part: tuple[int, int] | None) -> tuple[np.ndarray, int]:
  """(rows, batch size) of this process's part [start, stop) of a global batch of `batch_size` slots
  whose first len(rows) slots are `rows` (the rest padding); the whole batch when `part` is None."""
  rows = np.asarray(rows, np.int64)
  if part is None:
    return rows, batch_size
  start, stop = part
  if not 0 <= start < stop <= batch_size:
    raise ValueError(f"part {part} is not a slice of a batch of {batch_size} rows")
  return rows[start:stop], stop - start


def make_train_batch(ex: TrainExamples, rows: np.ndarray, batch_size: int, token_bucket: int,
                     part: tuple[int, int] | None = None) -> dict:
  """The batch of `rows` (padded to `batch_size`), or only its slots `part` [start, stop); the packed
  token fields always cover the whole batch (they index [B * L])."""
  rows = np.asarray(rows, np.int64)
  labels_BL = _take_rows(ex.labels, rows, batch_size)
  mine, size = local_rows(rows, batch_size, part)
  batch = _take_fields(ex, ("ids", "lengths"), mine, size)
  batch["labels"] = labels_BL if part is None else labels_BL[part[0]:part[1]]
  batch["token_index"], batch["token_weight"] = _pack_tokens(labels_BL, token_bucket)
  return batch


def train_dataset(ex: TrainExamples, *, batch_size: int, num_epochs: int, seed: int,
                  token_bucket: int = 2048, part: tuple[int, int] | None = None) -> grain.MapDataset:
  """Random-access dataset of batches: index k = epoch k // steps_per_epoch, batch k % steps
  (with `part`: this process's slots of each batch, see the module docstring)."""
  if len(ex) == 0:
    raise ValueError("no training examples: every user's history is too short for the split protocol")
  return batch_dataset(len(ex), lambda rows: make_train_batch(ex, rows, batch_size, token_bucket, part),
                       batch_size=batch_size, num_epochs=num_epochs, seed=seed)


def batch_dataset(num_examples: int, make_batch, *, batch_size: int, num_epochs: int,
                  seed: int) -> grain.MapDataset:
  """Any task's training batches: each epoch a fresh permutation of the `num_examples` example rows,
  cut into `batch_size` rows (the last batch short; `make_batch(rows)` pads it to a fixed shape)."""
  return (grain.MapDataset.range(num_examples)
          .shuffle(seed=seed)
          .batch(batch_size, drop_remainder=False)
          .repeat(num_epochs)
          .map(make_batch))


def bucketed_epoch(groups_N: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
  """One epoch's batches of rows when every batch must come from one group (e.g. a history-length
  bucket): rows shuffled, grouped stably, cut into `batch_size` rows per group (each group's last
  batch short), batch order shuffled; deterministic in (seed, epoch)."""
  rng = np.random.default_rng([seed, epoch])
  perm = rng.permutation(len(groups_N))
  perm = perm[np.argsort(groups_N[perm], kind="stable")]
  cuts = np.flatnonzero(np.diff(groups_N[perm])) + 1
  batches = [chunk[i:i + batch_size] for chunk in np.split(perm, cuts) if len(chunk)
             for i in range(0, len(chunk), batch_size)]
  return [batches[i] for i in rng.permutation(len(batches))]


def bucketed_steps(groups_N: np.ndarray, batch_size: int) -> int:
  """Batches per epoch of `bucketed_epoch` (the same every epoch)."""
  _, counts = np.unique(groups_N, return_counts=True)
  return int(sum(-(-c // batch_size) for c in counts))


def bucketed_batch_dataset(groups_N: np.ndarray, make_batch, *, batch_size: int, num_epochs: int,
                           seed: int) -> grain.MapDataset:
  """`batch_dataset` with every batch drawn from one group (`bucketed_epoch`): batches of similar
  history length, so a batch's width, and its memory, follow its real tokens."""
  groups_N = np.asarray(groups_N)
  return planned_batch_dataset(bucketed_steps(groups_N, batch_size), num_epochs,
                               lambda epoch: bucketed_epoch(groups_N, batch_size, seed, epoch),
                               lambda epoch, index, rows: make_batch(rows))


def planned_batch_dataset(per_epoch: int, num_epochs: int, plan, make_batch) -> grain.MapDataset:
  """Batches from a per-epoch plan: `plan(epoch)` -> the epoch's `per_epoch` batch entries
  (deterministic in `epoch`), batch k = make_batch(epoch, index, entry) with epoch, index =
  divmod(k, per_epoch). One epoch's plan is kept at a time (batches are read in order)."""
  cache: dict[int, list] = {}

  def entry(step: int):
    epoch, index = divmod(step, per_epoch)
    if epoch not in cache:
      cache.clear()
      entries = plan(epoch)
      if len(entries) != per_epoch:
        raise ValueError(f"epoch {epoch}'s plan has {len(entries)} batches, {per_epoch} expected")
      cache[epoch] = entries
    return epoch, index, cache[epoch][index]

  return grain.MapDataset.range(per_epoch * num_epochs).map(lambda k: make_batch(*entry(k)))


def sorted_epoch(keys_N: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
  """One epoch's batches of rows of similar `keys_N` (e.g. a history-length bucket that changes from
  epoch to epoch): rows shuffled, sorted stably by key, cut into ⌈N / batch_size⌉ batches (so a
  batch spans two keys at most where one key's rows run out), batch order shuffled; deterministic
  in (seed, epoch). Unlike `bucketed_epoch` the number of batches never depends on the keys."""
  rng = np.random.default_rng([seed, epoch])
  perm = rng.permutation(len(keys_N))
  perm = perm[np.argsort(np.asarray(keys_N)[perm], kind="stable")]
  batches = [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
  return [batches[i] for i in rng.permutation(len(batches))]


def steps_per_epoch(ex: TrainExamples, batch_size: int) -> int:
  return -(-len(ex) // batch_size)


class TrainIterator:
  """A checkpointable iterator over `train_dataset` batches with a background prefetch thread."""

  def __init__(self, dataset: grain.MapDataset, prefetch: int = 2):
    self._dataset = dataset
    self._iter = iter(dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)))

  def __next__(self) -> dict:
    return next(self._iter)

  def __iter__(self):
    return self

  def get_state(self) -> dict:
    return self._iter.get_state()

  def set_state(self, state: dict) -> None:
    self._iter.set_state(state)


def eval_batches(ex: EvalExamples, batch_size: int) -> Iterator[tuple[dict, int]]:
  """Fixed-size eval batches in user order; yields (batch, number of real rows)."""
  for start in range(0, len(ex), batch_size):
    rows = np.arange(start, min(start + batch_size, len(ex)))
    yield _take_fields(ex, ("ids", "lengths", "targets"), rows, batch_size), len(rows)
