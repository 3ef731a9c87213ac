"""A resumed run continues the experiment its checkpoint started: the config must match.

Every checkpoint stores the resolved config (`config_record`); a resume compares it with the new
one key by key. Keys in RESUMABLE_CHANGES may differ: they set how long the run trains, how often
it logs, evaluates and checkpoints, how evaluation is batched and which cut-offs it reports, and
the route the same data takes (`data.array_record`) or the same model (`model.attention_tiling`,
`model.token_packing`: tested equal to the plain path). `--snapshot` relies on this: it sets
`train.max_steps` to the checkpoint's step. Any other difference (model, data, split, loss,
optimizer, seed, `eval.exclude_history`, ...) would silently continue a different experiment, so it
raises `ConfigMismatchError` naming every differing key, unless the caller allows it
(`experiments/run.py --allow_config_change`); the allowed differences are then recorded in the
run's segments.
"""
from __future__ import annotations

import json

from absl import logging

RESUMABLE_CHANGES = (
    "quick",
    "train.num_epochs", "train.max_steps",
    "train.log_every_steps", "train.eval_every_epochs", "train.checkpoint_every_steps",
    "eval.batch_size", "eval.item_chunk", "eval.ks",
    "data.array_record",
    # Placement only: a checkpoint restores onto any mesh (train/mesh.py), and older ones lack it.
    "mesh.shape", "mesh.axes", "mesh.dense",
    "train.count_flops",
    # Execution routes tested equal to the plain path (tiles skipped, padding not computed).
    "model.attention_tiling", "model.token_packing", "model.attention_impl",
)
# Keys added with the task abstraction: a checkpoint written before it stores none of them and was
# a retrieval run, so their absence there matches a retrieval config (whatever the ranking block says).
_PRE_TASK_KEYS = ("task", "ranking.")

_MISSING = "<absent>"


# Evaluation keys that only batch or report the same measurement (no change of protocol).
_EVAL_ROUTE_KEYS = ("eval.batch_size", "eval.item_chunk", "eval.ks")


def changes_evaluation(key: str) -> bool:
  """Whether a change of `key` changes what evaluation measures (e.g. `eval.exclude_history`), so
  per-epoch metrics from before the change cannot be compared with those after it."""
  return key.startswith("eval.") and key not in _EVAL_ROUTE_KEYS


class ConfigMismatchError(ValueError):
  pass


def config_record(config) -> dict:
  """The resolved config as plain JSON values (tuples -> lists), as stored in checkpoints."""
  if hasattr(config, "copy_and_resolve_references"):
    config = config.copy_and_resolve_references().to_dict()
  return json.loads(json.dumps(config, default=str))


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
  """{dotted key: (old value, new value)} for every key whose value differs ("<absent>" when a side
  lacks it), sorted by key."""
  a, b = _flatten(old), _flatten(new)
  return {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
          if a.get(k, _MISSING) != b.get(k, _MISSING)}


def check_resume(stored: dict | None, current: dict, *, allow_change: bool = False,
                 where: str = "the checkpoint") -> dict[str, tuple]:
  """Raises ConfigMismatchError when `current` differs from `stored` outside RESUMABLE_CHANGES
  (unless `allow_change`); returns all differences. `stored=None` (a checkpoint written before
  configs were stored) checks nothing."""
  if stored is None:
    logging.warning("%s stores no config (written before configs were stored): not checked", where)
    return {}
  current = config_record(current)
  changes = config_changes(stored, current)
  if "task" not in stored and current.get("task", "retrieval") == "retrieval":
    changes = {k: v for k, v in changes.items()
               if not (v[0] == _MISSING and any(k == p or k.startswith(p) for p in _PRE_TASK_KEYS))}
  blocking = {k: v for k, v in changes.items() if k not in RESUMABLE_CHANGES}
  if blocking and not allow_change:
    lines = "\n".join(f"  {k}: {old!r} -> {new!r}" for k, (old, new) in blocking.items())
    raise ConfigMismatchError(
        f"the config differs from the one {where} was trained with, in {len(blocking)} key(s):\n{lines}\n"
        "Resume with the original config, use a fresh --workdir, or pass --allow_config_change to "
        f"continue anyway (keys that may always change: {', '.join(RESUMABLE_CHANGES)}).")
  return changes
