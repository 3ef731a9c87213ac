"""Mesh placement: `config.mesh` -> a device mesh, where every array of a run lives, and the step
jitted over it.

One place for the sharding rules (`param_spec`, `batch_spec`):
- embedding tables (a leaf named `table` or `embedding`, [V, D]) are row-sharded over as many mesh
  axes as divide V (all axes, else `data`, else `model`, else replicated);
- dense parameters are replicated (`mesh.dense="replicate"`) or FSDP-sharded over `data` on their
  largest dimension that `data` divides (`mesh.dense="fsdp"`);
- optimizer state follows its parameter (the rule reads the leaf's path, and optax's moments carry
  the parameter's path), scalars are replicated;
- batches: per-example fields [B, ...] are sharded over `data`; the packed token fields
  (`token_index`, `token_weight` [T], flat indices into [B * L]) are replicated.

Several processes (`jax.distributed`): each process's pipeline builds only its rows of the global
batch (`process_rows`, contiguous because the mesh lists devices process by process), and
`place_batch` assembles the global arrays from the parts. Evaluation reads its outputs on the host,
so `gather_for_evaluation` all-gathers the parameters onto each process's first device first.

The step itself is `train/step.py`'s, jitted once more with explicit in/out shardings and the state
donated, so the sharded and the 1-device step run the same function and GSPMD inserts the
communication (for a row-sharded table, the gather is the SPMD gather of
`layers/sharded_embedding.py`). The fast CPU paths do not partition: the C++ loss kernel is an
opaque custom call, and the tiled attention sorts the whole batch by length; on a mesh of more than
one device `resolve_fast_paths` turns them off with a logged note, the sampled softmax running as
`loss.impl="shard_map"` (`recjax/sharded_losses.py`: each candidate scored on the device that
holds its row; the step passes the mesh to the task's loss) unless the config asks for "xla".
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from recjax import compile_options
from recjax.data import pipeline
from recjax.layers import sharded_embedding

DEFAULT_AXES = ("data", "model")
DENSE_MODES = ("replicate", "fsdp")
EMBEDDING_LEAF_NAMES = ("table", "embedding")   # ItemEmbedding / feature tables, nn.Embed
PACKED_FIELDS = pipeline.PACKED_FIELDS   # [T] flat indices into [B * L]: not per-example


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """A validated `config.mesh`: axis sizes (no -1 left), axis names, dense-parameter placement."""
  shape: tuple[int, ...]
  axes: tuple[str, ...] = DEFAULT_AXES
  dense: str = "replicate"

  @property
  def num_devices(self) -> int:
    return math.prod(self.shape)

  @property
  def data_size(self) -> int:
    return self.shape[self.axes.index("data")]

  def size(self, axes: tuple[str, ...]) -> int:
    return math.prod(self.shape[self.axes.index(a)] for a in axes)


def mesh_spec(mesh_cfg, num_devices: int | None = None) -> MeshSpec:
  """`config.mesh` (shape, axes, dense) -> MeshSpec, checked against the device count.

  One size may be -1 (the rest of the devices). The mesh must divide the device count; it may use
  fewer devices than there are (the first ones), e.g. to restore a checkpoint onto a smaller mesh.
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  get = mesh_cfg.get if hasattr(mesh_cfg, "get") else (lambda k, d=None: getattr(mesh_cfg, k, d))
  shape, axes = get("shape", (1, 1)), tuple(get("axes", DEFAULT_AXES))
  dense = get("dense", "replicate")
  try:
    shape = tuple(int(s) for s in shape)
  except (TypeError, ValueError):
    raise ValueError(f"config.mesh.shape must be a tuple of ints, got {shape!r}") from None
  if len(shape) != len(axes):
    raise ValueError(f"config.mesh.shape {shape} and config.mesh.axes {axes} differ in length")
  if len(set(axes)) != len(axes) or "data" not in axes:
    raise ValueError(f"config.mesh.axes must be distinct names including 'data', got {axes}")
  if dense not in DENSE_MODES:
    raise ValueError(f"config.mesh.dense must be one of {DENSE_MODES}, got {dense!r}")
  if sum(s == -1 for s in shape) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"config.mesh.shape sizes must be positive (one may be -1), got {shape}")
  if -1 in shape:
    rest = math.prod(s for s in shape if s != -1)
    if num_devices % rest:
      raise ValueError(f"config.mesh.shape {shape}: the other axes ({rest} devices) do not divide the "
                       f"{num_devices} devices")
    shape = tuple(num_devices // rest if s == -1 else s for s in shape)
  n = math.prod(shape)
  if num_devices % n:
    raise ValueError(f"config.mesh.shape {shape} needs {n} devices, which does not divide the "
                     f"{num_devices} devices available (jax.device_count())")
  return MeshSpec(shape, axes, dense)


def check_batch(spec: MeshSpec, batch_size: int, field: str = "train.batch_size") -> None:
  """A batch is split evenly over the `data` axis; `field` names the config key in the error."""
  if batch_size % spec.data_size:
    raise ValueError(f"config.{field}={batch_size} does not divide over the mesh's data axis of size "
                     f"{spec.data_size} (config.mesh.shape={spec.shape}, axes={spec.axes})")


def make_mesh(spec: MeshSpec, devices=None) -> Mesh:
  """The first `spec.num_devices` devices laid out as `spec.shape` (axes in GSPMD 'auto' mode)."""
  devices = jax.devices() if devices is None else list(devices)
  if len(devices) < spec.num_devices:
    raise ValueError(f"config.mesh.shape {spec.shape} needs {spec.num_devices} devices, got {len(devices)}")
  if spec.num_devices < len(devices):
    logging.info("mesh %s uses %d of %d devices", spec.shape, spec.num_devices, len(devices))
  grid = np.asarray(devices[:spec.num_devices], dtype=object).reshape(spec.shape)
  return Mesh(grid, spec.axes, axis_types=(jax.sharding.AxisType.Auto,) * len(spec.axes))


# ------------------------------------------------------------------------------------------------
# The sharding rules
# ------------------------------------------------------------------------------------------------

def _leaf_name(path) -> str:
  for entry in reversed(path):
    name = getattr(entry, "key", None) or getattr(entry, "name", None)
    if isinstance(name, str):
      return name
  return ""


def row_axes(spec: MeshSpec, num_rows: int) -> tuple[str, ...] | None:
  """The mesh axes a table of `num_rows` rows is split over (`sharded_embedding.row_axes`: all axes,
  else `data`, else any other single axis, whichever first divides the rows; None: replicated)."""
  return sharded_embedding.row_axes(dict(zip(spec.axes, spec.shape)), num_rows)


def param_spec(path, shape: tuple[int, ...], spec: MeshSpec) -> P:
  """The partition of one parameter (or optimizer-state leaf) from its path and shape."""
  if len(shape) == 2 and _leaf_name(path) in EMBEDDING_LEAF_NAMES:
    axes = row_axes(spec, shape[0])
    return P(axes if len(axes or ()) != 1 else axes[0], None) if axes else P()
  if spec.dense == "fsdp" and spec.data_size > 1:
    dims = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in dims:
      if shape[i] % spec.data_size == 0:
        return P(*[("data" if j == i else None) for j in range(len(shape))])
  return P()


def tree_shardings(tree, mesh: Mesh, spec: MeshSpec):
  """NamedShardings for a params / TrainState pytree by `param_spec` (arrays or ShapeDtypeStructs)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, param_spec(path, tuple(np.shape(x)), spec)), tree)


def unsharded_tables(tree, spec: MeshSpec) -> list[str]:
  """Paths of embedding tables the mesh cannot row-shard (rows not divisible): logged by callers."""
  out = []
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    if (spec.num_devices > 1 and np.ndim(x) == 2 and _leaf_name(path) in EMBEDDING_LEAF_NAMES
        and row_axes(spec, np.shape(x)[0]) is None):
      out.append(f"{jax.tree_util.keystr(path)} {tuple(np.shape(x))}")
  return out


def batch_spec(name: str, shape: tuple[int, ...]) -> P:
  """Per-example fields over `data` on their leading axis; the packed token fields replicated."""
  if name in PACKED_FIELDS or len(shape) == 0:
    return P()
  return P("data")


def batch_shardings(batch: dict, mesh: Mesh) -> dict:
  return {k: NamedSharding(mesh, batch_spec(k, np.shape(v))) for k, v in batch.items()}


def _global_array(x, sharding):
  """A host value (the same on every process) -> a global array; each process fills only the
  shards on its own devices, so this works under `jax.distributed` as on one host."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def process_rows(shardings: dict, batch_size: int) -> tuple[int, int] | None:
  """The rows [start, stop) of a global batch whose `data` shards live on this process's devices, or
  None on one process (it holds the whole batch). The mesh lists devices process by process
  (`jax.devices()` order), so a process's rows are contiguous; anything else is an error here rather
  than a silently reordered batch."""
  if jax.process_count() == 1:
    return None
  sharded = [s for k, s in shardings.items() if k not in PACKED_FIELDS and s.spec != P()]
  if not sharded:
    raise ValueError("no per-example batch field is sharded over 'data': nothing to split between processes")
  spans = sorted({(i[0].start or 0, batch_size if i[0].stop is None else i[0].stop)
                  for i in sharded[0].addressable_devices_indices_map((batch_size,)).values()})
  for (_, stop), (start, _) in zip(spans, spans[1:]):
    if start != stop:
      raise ValueError(f"process {jax.process_index()} holds batch rows {spans}, not one contiguous "
                       "block: build config.mesh from jax.devices() in process order")
  return spans[0][0], spans[-1][1]


def place_batch(batch: dict, shardings: dict, batch_size: int | None = None) -> dict:
  """A batch of host arrays -> global arrays on the mesh.

  `batch_size` None: `batch` is the whole global batch (every process holding the same one) and
  each process copies its devices' shards out of it. Otherwise `batch` is this process's part
  (`process_rows`; the packed token fields whole) of a global batch of `batch_size` rows, and
  `jax.make_array_from_process_local_data` assembles the global array from the processes' parts."""
  if batch_size is None:
    return {k: _global_array(v, shardings[k]) for k, v in batch.items()}
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    replicated = shardings[k].spec == P()
    out[k] = jax.make_array_from_process_local_data(
        shardings[k], v, v.shape if replicated else (batch_size,) + v.shape[1:])
  return out


def gather_for_evaluation(tree):
  """Multi-process: the whole tree on this process's first device (all-gathered over the mesh), so
  that evaluation, which reads its outputs on the host, runs on every process as on one device.
  One process: unchanged (GSPMD evaluates the arrays where they lie)."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return jax.device_put(multihost_utils.process_allgather(tree, tiled=True), jax.local_devices()[0])


def place(tree, shardings):
  """Parameters / train state (identical on every process: same seed) onto the mesh, as copies."""
  return jax.tree.map(_global_array, tree, shardings)


# ------------------------------------------------------------------------------------------------
# The step
# ------------------------------------------------------------------------------------------------

# The sampled softmax on a mesh when loss.impl is "auto" (or "native"): the row-sharded shard_map
# loss, faster than the SPMD gather on 8 host devices (README, Scale out; bench_scaling.py).
# loss.impl="xla" asks for the SPMD path explicitly.
MESH_SAMPLED_SOFTMAX = "shard_map"


def _default_attention_impl(model_cfg: dict) -> str | None:
  """The model class's `attention_impl` default (configs that replace `model` may omit the key), or
  None for a model without the setting."""
  from recjax.models import model_class  # pylint: disable=import-outside-toplevel
  try:
    field = model_class(model_cfg.get("name", "")).__dataclass_fields__.get("attention_impl")
  except (KeyError, ValueError):
    return None
  return None if field is None else field.default


def resolve_fast_paths(loss_cfg, model_cfg: dict, spec: MeshSpec) -> tuple[Any, dict, list[str]]:
  """(loss config, model settings) with the paths that cannot partition replaced on a mesh of
  more than one device -> (loss_cfg, model_cfg, notes). One device: unchanged."""
  notes = []
  if spec.num_devices <= 1:
    return loss_cfg, model_cfg, notes
  if loss_cfg.get("kind") == "sampled_softmax" and loss_cfg.get("impl", "auto") in ("auto", "native"):
    loss_cfg = loss_cfg.copy_and_resolve_references() if hasattr(loss_cfg, "copy_and_resolve_references") \
        else dict(loss_cfg)
    loss_cfg["impl"] = MESH_SAMPLED_SOFTMAX
    notes.append(f"loss.impl -> '{MESH_SAMPLED_SOFTMAX}' on a {spec.num_devices}-device mesh: the C++ kernel "
                 "is an unpartitionable custom call; each candidate is scored on the device holding its row")
  if "attention_tiling" in model_cfg and model_cfg["attention_tiling"] not in (False, None, "off"):
    model_cfg = {**model_cfg, "attention_tiling": False}
    notes.append(f"model.attention_tiling -> False on a {spec.num_devices}-device mesh: its global "
                 "sort by length would gather the batch onto every device")
  if model_cfg.get("attention_impl", _default_attention_impl(model_cfg)) not in (None, "xla"):
    model_cfg = {**model_cfg, "attention_impl": "xla"}
    notes.append(f"model.attention_impl -> 'xla' on a {spec.num_devices}-device mesh: the C++ attention kernel "
                 "is an unpartitionable custom call")
  for n in notes:
    logging.info("mesh: %s", n)
  return loss_cfg, model_cfg, notes


def make_sharded_train_step(step_fn, mesh: Mesh, state_shardings, batch_shardings: dict):
  """`step_fn(state, batch) -> (state, loss)` (train/step.py) jitted over `mesh`: state in and out
  with `state_shardings` (donated), the batch with `batch_shardings`, the loss replicated."""
  # The outer jit's options are the ones compiled, and jax refuses compiler_options on a nested jit:
  # the step's plain function (train/step.py jits it for one device) with the step's schedule again.
  step_fn = getattr(step_fn, "__wrapped__", step_fn)
  return jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, NamedSharding(mesh, P())), donate_argnums=(0,),
                 compiler_options=compile_options.step_options())
