"""Progress lines (steps/s, ETA, loss) and TensorBoard-readable scalars."""
from __future__ import annotations

import os
import time

from absl import logging


class Progress:
  """Logs `step/total, loss, steps/s, ETA` and writes scalars to `<workdir>/tensorboard`.

  `quiet` (processes other than 0 of a multi-process run): no lines, no TensorBoard file; process 0
  speaks for the run, as the values are the same on every process."""

  def __init__(self, workdir: str, total_steps: int, start_step: int = 0, quiet: bool = False):
    self._quiet = quiet
    if not quiet:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self.total = total_steps
    self._t0 = time.time()
    self._s0 = start_step

  def step(self, step: int, loss: float, epoch: int) -> str:
    elapsed = time.time() - self._t0
    rate = (step - self._s0) / max(elapsed, 1e-9)
    eta = (self.total - step) / max(rate, 1e-9)
    line = (f"step {step}/{self.total} (epoch {epoch}) loss {loss:.4f} | {rate:.2f} steps/s | "
            f"ETA {_hms(eta)}")
    if self._quiet:
      return line
    logging.info(line)
    print(line, flush=True)
    self.scalars(step, {"train/loss": loss, "train/steps_per_s": rate})
    return line

  def scalars(self, step: int, values: dict) -> None:
    if self._quiet:
      return
    for k, v in values.items():
      self._writer.add_scalar(k.replace("@", "_at_"), v, step)
    self._writer.flush()

  def close(self):
    if not self._quiet:
      self._writer.close()


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
