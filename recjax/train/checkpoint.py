"""Orbax checkpoints of the train state plus a JSON sidecar (loader state, epoch, history).

Saves are synchronous: the state is small (≈ 1 MB for the ML-1M models) and a synchronous save
is what guarantees that a run killed right after `save` resumes from it.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  def __init__(self, directory: str, max_to_keep: int = 2):
    self._mngr = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                  meta=ocp.args.JsonSave(meta)), force=True)
    self._mngr.wait_until_finished()

  def restore(self, step: int, like_state, shardings=None):
    """The state of `step`, shaped like `like_state` (arrays or ShapeDtypeStructs). With
    `shardings` (a matching pytree of `jax.sharding.Sharding`, e.g. `train.mesh.tree_shardings`) each
    array is read straight onto that placement, whatever mesh the checkpoint was written from."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    if shardings is not None:
      abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    r = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                         meta=ocp.args.JsonRestore()))
    return r.state, r.meta

  def restore_meta(self, step: int) -> dict:
    """Only the JSON sidecar of `step` (no state: readable whatever the model's shapes)."""
    return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def close(self):
    self._mngr.close()
