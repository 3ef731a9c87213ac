"""How far the training loop may run ahead of the device, and why it waits before each compile.

JAX dispatches a step and returns at once, so the loop could queue dozens of steps (each holding its
batch on the device) while one runs. On XLA:CPU each running step holds one large temporary block
(≈ 470 MB for HSTU-large), and `cpu_allocator.tune()` serves it from a single glibc heap that never
gives memory back. Whatever the host allocates while that block is live and cannot place in a free
hole comes from the top of the heap, above the block: when the block is freed it becomes a hole
that a larger block of the next batch shape no longer fits, so that block goes on top and the heap
grows by a whole block. Two habits of the loop fed this ratchet (HSTU-large ML-1M, 48 steps: peak
RSS 2.1-3.1 GB over runs):
  * a compile (a new batch shape, which the FLOP counter or the step compiles on the host) while
    steps run: hundreds of MB of compiler memory, some of it kept with the executable, land above
    the live block. `StepQueue` therefore lets every queued step finish before a batch of unseen
    shapes is dispatched: the compiler then works in the freed block's space, and nothing is
    pinned above the next one. A shape compiles once per run, so this idles the device a few
    times per run, never per step.
  * batches dispatched far ahead: their buffers are allocated in bursts while a block is live.
    `depth` = 2 keeps one step queued behind the running one, which is all the device needs to
    stay busy (batches come from the prefetching iterator).
Results are unchanged: only when the host waits changes, not what any step computes.
"""
from __future__ import annotations

import collections

import jax
import numpy as np


def shape_signature(batch) -> tuple:
  """(path, shape, dtype) of every array in `batch`: equal signatures run the same compiled step."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(batch)
  return tuple((jax.tree_util.keystr(path), tuple(np.shape(x)), str(getattr(x, "dtype", type(x))))
               for path, x in leaves)


class StepQueue:
  """Bounds the steps in flight; drains them before a batch of new shapes (see the module docstring).

  Call `before_dispatch(batch)` before a batch's step is dispatched (before anything compiles it),
  `dispatched(output)` with any output of that step, and `drain()` before other large work (the
  evaluation, whose first call compiles)."""

  def __init__(self, depth: int = 2):
    if depth < 1:
      raise ValueError(f"StepQueue depth must be >= 1 (steps in flight), got {depth}")
    self.depth = depth
    self._in_flight: collections.deque = collections.deque()
    self._seen: set[tuple] = set()
    self.drains_for_new_shapes = 0

  def before_dispatch(self, batch) -> None:
    signature = shape_signature(batch)
    if signature not in self._seen:
      self._seen.add(signature)
      if self._in_flight:
        self.drains_for_new_shapes += 1
      self.drain()
      return
    while len(self._in_flight) >= self.depth:
      jax.block_until_ready(self._in_flight.popleft())

  def dispatched(self, output) -> None:
    self._in_flight.append(output)

  def drain(self) -> None:
    while self._in_flight:
      jax.block_until_ready(self._in_flight.popleft())

  @property
  def in_flight(self) -> int:
    return len(self._in_flight)
