"""XLA compile options of recjax's large programs: the training step and the evaluation steps.

XLA:CPU runs a compiled program in one temporary block that holds all of its intermediates, sized
by what the program's instruction order keeps alive at once. The default CPU scheduler orders
independent instructions for concurrency; `CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED` orders the same
instructions for the smallest peak. That block is most of a step's memory (the activations kept for
the backward pass), and `cpu_allocator.tune()` keeps the heap at its high-water mark, so its size
is peak RSS. XLA's compiled memory analysis (temp bytes, jax 0.10.2), default -> memory-optimized:

  HSTU-large ML-1M  train step (T = 16384 / 14336 / 4096 supervised tokens)  650 / 599 / 363 -> 466 / 426 / 229 MB
                    eval step (batch 512)                                     415 -> 277 MB
  HSTU ML-1M        train step (T = 16384), eval step                         190 -> 173 MB, 296 -> 279 MB
  SASRec ML-1M      train step (T = 16384), eval step                         196 -> 168 MB, 139 -> 122 MB

Only the order changes, not the instructions: the parameters after training steps are bitwise
equal (tests/test_compile_options.py), and the HSTU-large step time was the same on the 2-core CPU
(medians of 36 alternating steps: 2186 ms default, 2148 ms memory-optimized, under load). On a
many-core host the concurrency the default order allows may be worth more than the memory:
`RECJAX_XLA_SCHEDULER=default` keeps XLA's default there (and for comparisons); what was applied
goes into every results file (`hardware.xla_compile_options`).

Only XLA:CPU has the option; on other backends nothing is set.
"""
from __future__ import annotations

import os

import jax

ENV_VAR = "RECJAX_XLA_SCHEDULER"
SCHEDULERS = ("memory", "default")
CPU_MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def step_options(backend: str | None = None) -> dict | None:
  """`compiler_options` for `jax.jit` of a train or eval step on `backend` (default: JAX's default
  backend): the memory-optimized scheduler on CPU unless `RECJAX_XLA_SCHEDULER=default`; else None."""
  choice = os.environ.get(ENV_VAR, "memory").strip().lower() or "memory"
  if choice not in SCHEDULERS:
    raise ValueError(f"{ENV_VAR} must be one of {SCHEDULERS} (or unset), got {os.environ[ENV_VAR]!r}")
  backend = jax.default_backend() if backend is None else backend
  if backend != "cpu" or choice == "default":
    return None
  return dict(CPU_MEMORY_SCHEDULER)
