"""The training loop's step queue (recjax/train/dispatch.py): at most `depth` steps in flight, none
left when a batch of new shapes (a compile) or a drain comes."""
import numpy as np
import pytest

from recjax.train.dispatch import StepQueue, shape_signature


class FakeOutput:
  """A step output that records when the host waited for it."""

  def __init__(self, name, log):
    self.name, self.log = name, log

  def block_until_ready(self):
    self.log.append(self.name)
    return self


def _batch(tokens, rows=4):
  return {"ids": np.zeros((rows, 8), np.int32), "token_index": np.zeros(tokens, np.int32)}


def test_signature_follows_shapes_and_dtypes_not_values():
  assert shape_signature(_batch(16)) == shape_signature({"ids": np.ones((4, 8), np.int32),
                                                          "token_index": np.ones(16, np.int32)})
  assert shape_signature(_batch(16)) != shape_signature(_batch(32))
  assert shape_signature(_batch(16)) != shape_signature({**_batch(16), "ids": np.zeros((4, 8), np.int64)})
  assert shape_signature({"a": {"b": np.zeros(3)}}) != shape_signature({"a": {"c": np.zeros(3)}})


def test_at_most_depth_steps_in_flight_and_a_drain_before_new_shapes():
  log = []
  q = StepQueue(depth=2)
  for i, tokens in enumerate([16, 16, 16, 16]):
    q.before_dispatch(_batch(tokens))
    q.dispatched(FakeOutput(i, log))
    assert q.in_flight <= 2
  assert log == [0, 1] and q.in_flight == 2   # waited for the oldest only: one step stays queued
  q.before_dispatch(_batch(32))                # unseen shapes: everything in flight finishes first
  assert log == [0, 1, 2, 3] and q.in_flight == 0 and q.drains_for_new_shapes == 1
  q.dispatched(FakeOutput(4, log))
  q.before_dispatch(_batch(16))                # seen before: no drain, one in flight is below depth
  assert log == [0, 1, 2, 3] and q.in_flight == 1
  q.dispatched(FakeOutput(5, log))
  q.drain()
  assert log == [0, 1, 2, 3, 4, 5] and q.in_flight == 0


def test_depth_must_be_positive():
  with pytest.raises(ValueError, match="depth"):
    StepQueue(depth=0)
