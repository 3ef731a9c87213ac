"""FLOPs of a recjax step: XLA's cost analysis, cross-checked by analytic counts of the layers.

Two views of the same work:
  * `xla_cost(fn, *args)`: what XLA counts in the compiled program (`compiled.cost_analysis()`, a
    dict on jax 0.10; older releases returned a list with one dict per module, summed here). Two
    blind spots, both reported rather than hidden:
      - a `while` loop's body is counted ONCE, whatever its trip count (checked on jax 0.10.2: a
        10-step `lax.scan` of a matmul counts as one matmul; the chunked XLA sampled softmax
        at T = 20480, chunk 128, counts 1 chunk of 160). The compiled HLO names each loop's
        trip count, so the dots of the missing iterations are read from it and added
        (`XlaCost.loop_matmul_flops`; `XlaCost.total` = XLA's count + them). Elementwise work
        in loop bodies stays counted once (the chunked loss's table gradient is an elementwise
        scatter, so its corrected count is still ≈ 25% low at 4 chunks: count a step with
        `chunk ≥ T`, or add the analytic loss); a loop with a matmul and no known trip count
        makes `XlaCost.exact` false.
      - a custom call (the C++ sampled-softmax kernel of `recjax.native`) is opaque: listed in
        `XlaCost.custom_calls`, its work is added analytically (`sampled_softmax_flops`). The C++
        attention kernel is too: the trainer counts its step on the XLA attention path instead
        (`train/loop.py`), so runs stay comparable whichever path trained them;
        `causal_attention_flops` is the kernel's own (smaller, causal-only) count.
    XLA's "flops" counts every arithmetic op (elementwise too, 1 per element; exp/log/logistic go
    to "transcendentals"), so it runs above the matmul-only analytic count: +2% for the test's
    D = 256 models, +10% for the HSTU ML-1M forward (D = dqk = dv = 50, L = 200), where norms,
    SiLU and the materialised relative bias weigh more against the narrow matmuls.
    With `attention_tiling=True` XLA costs the tile conditionals statically, not the tiles a batch
    skips (ML-1M HSTU forward: 0.85× the dense analytic count, the causal count being 0.69×).
  * `analytic_hstu_flops(cfg, batch)` / `analytic_sasrec_flops(cfg, batch)`: the matmuls of the
    layer equations in `recjax/models/{hstu,sasrec}.py`, 2·M·N·K each. A training step is ≈ 3× the
    forward count: each matmul's backward is two matmuls of the same size (the input gradient
    and the weight gradient; for attention, dQ/dK and dA/dV).

Embedding lookups are gathers, not FLOPs: `embedding_traffic` reports rows and bytes moved.
Attention is counted dense (all L² scores, what `attention_tiling=False` computes); pass
`attention="causal"` for the L(L+1)/2 scores a causal model needs (the useful-work count that
MFU definitions use, and roughly what tiled attention executes).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

import jax
import numpy as np

ATTENTION_COUNTS = ("dense", "causal")
# The native fused sampled-softmax kernel's XLA FFI target (recjax/native/__init__.py).
NATIVE_SAMPLED_SOFTMAX_TARGET = "recjax_sampled_softmax"

_WHILE_RE = re.compile(r"\swhile\(.*\sbody=(%[\w.\-]+)")
_TRIP_RE = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_OP_NAME_RE = re.compile(r'op_name="([^"]*)"')
_CUSTOM_CALL_RE = re.compile(r'custom_call_target="([^"]+)"')
_NAME_RE = re.compile(r"%[\w.\-]+")
_INSTR_RE = re.compile(r"^\s*(?:ROOT\s+)?(%[\w.\-]+)\s*=\s*[a-z]\w*\[([\d,]*)\]")
_DOT_RE = re.compile(r"\sdot\((?:\w+\[([\d,]*)\](?:\{[\d,]*\})?\s+)?(%[\w.\-]+)")
_CONTRACT_RE = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")


@dataclasses.dataclass(frozen=True)
class Loop:
  """One `while` of the compiled program: XLA's cost analysis counts its body once.

  trip_count: what XLA knows (None: data-dependent).
  body_matmul_flops: dot FLOPs of one iteration (nested loops at their trip counts); threefry's
    5-round loop, say, has none and XLA misses only a few integer ops there.
  op_name: where it came from in JAX."""
  trip_count: int | None
  body_matmul_flops: float
  op_name: str

  @property
  def has_matmul(self) -> bool:
    return self.body_matmul_flops > 0


@dataclasses.dataclass(frozen=True)
class XlaCost:
  """XLA's cost analysis of one compiled program, and what it leaves out.

  flops: arithmetic ops XLA counts (matmuls 2·M·N·K, elementwise 1 per element), loop bodies once.
  transcendentals: exp, log, logistic, rsqrt... elements (not in `flops`).
  bytes_accessed: XLA's estimate of memory traffic.
  loops: every `while` of the compiled HLO (`Loop`).
  loop_matmul_flops: dot FLOPs of the loop iterations XLA's count leaves out (known trip counts;
    read from the HLO: 2 · output elements · contracted size per dot).
  custom_calls: targets of the custom calls XLA cannot see into.
  """
  flops: float
  transcendentals: float
  bytes_accessed: float
  loops: tuple[Loop, ...] = ()
  custom_calls: tuple[str, ...] = ()
  loop_matmul_flops: float = 0.0

  @property
  def total(self) -> float:
    """XLA's count with the loops' missing matmul iterations added."""
    return self.flops + self.loop_matmul_flops

  @property
  def exact(self) -> bool:
    """True when `total` counts every matmul: no custom call hides work and no loop with a matmul
    has an unknown trip count. (Elementwise work inside loops is still counted once.)"""
    return not self.custom_calls and not any(lp.has_matmul and lp.trip_count is None for lp in self.loops)


def _as_cost_dict(raw) -> dict:
  """`cost_analysis()` output as one dict (a dict on jax 0.10; a list of per-module dicts before)."""
  if raw is None:
    raise RuntimeError("XLA returned no cost analysis for this backend")
  if isinstance(raw, Mapping):
    return dict(raw)
  total: dict = {}
  for entry in raw:
    for k, v in entry.items():
      total[k] = total.get(k, 0.0) + float(v)
  return total


def xla_cost(fn, *args, **kwargs) -> XlaCost:
  """Compile `fn(*args, **kwargs)` (jitted here unless it already is) and read XLA's cost analysis.

  Only shapes and dtypes of the arguments matter; donated buffers are not consumed (nothing runs).
  """
  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  compiled = jitted.lower(*args, **kwargs).compile()
  cost = _as_cost_dict(compiled.cost_analysis())
  hlo = _Hlo(compiled.as_text())
  return XlaCost(float(cost.get("flops", 0.0)), float(cost.get("transcendentals", 0.0)),
                 float(cost.get("bytes accessed", 0.0)), hlo.loops(), hlo.custom_calls(),
                 hlo.matmul_flops(hlo.entry, unrolled=True) - hlo.matmul_flops(hlo.entry, unrolled=False))


def _dims(text: str) -> tuple[int, ...]:
  return tuple(int(d) for d in text.split(",") if d)


class _Hlo:
  """The parts of an optimised HLO module's text that the cost analysis needs: computations,
  loops with their trip counts, dots with their sizes, custom-call targets."""

  def __init__(self, text: str):
    self.comps: dict[str, list[str]] = {}
    self.entry = ""
    current = None
    for line in text.splitlines():
      if current is None:
        head = line.removeprefix("ENTRY ")
        if head.startswith("%") and line.rstrip().endswith("{"):
          current = head.split(" ", 1)[0]
          self.comps[current] = []
          if line.startswith("ENTRY "):
            self.entry = current
      elif line.startswith("}"):
        current = None
      else:
        self.comps[current].append(line)
    self._memo: dict = {}

  def _own_dot_flops(self, name: str) -> float:
    shapes = {}
    total = 0.0
    for line in self.comps[name]:
      m = _INSTR_RE.match(line)
      if m:
        shapes[m.group(1)] = _dims(m.group(2))
      dot = _DOT_RE.search(line)
      if dot and m:
        lhs = _dims(dot.group(1)) if dot.group(1) is not None else shapes.get(dot.group(2))
        contract = _CONTRACT_RE.search(line)
        if lhs is None or contract is None:
          raise RuntimeError(f"cannot size the dot in HLO computation {name}: {line.strip()[:200]}")
        k = math.prod(lhs[i] for i in _dims(contract.group(1)))
        total += 2.0 * math.prod(shapes[m.group(1)]) * k
    return total

  def matmul_flops(self, name: str, *, unrolled: bool) -> float:
    """Dot FLOPs of computation `name` and all it calls; loop bodies once (as XLA counts them) or,
    with `unrolled`, times their known trip counts."""
    key = (name, unrolled)
    if key not in self._memo:
      self._memo[key] = 0.0   # guards against cycles (none in valid HLO)
      total = self._own_dot_flops(name)
      for line in self.comps[name]:
        body = _WHILE_RE.search(line)
        trip = _TRIP_RE.search(line) if body else None
        for callee in set(_NAME_RE.findall(line)):
          if callee in self.comps and callee != name:
            mult = int(trip.group(1)) if (unrolled and trip and callee == body.group(1)) else 1
            total += mult * self.matmul_flops(callee, unrolled=unrolled)
      self._memo[key] = total
    return self._memo[key]

  def loops(self) -> tuple[Loop, ...]:
    out = []
    for lines in self.comps.values():
      for line in lines:
        m = _WHILE_RE.search(line)
        if m:
          trip = _TRIP_RE.search(line)
          op_name = _OP_NAME_RE.search(line)
          out.append(Loop(int(trip.group(1)) if trip else None, self.matmul_flops(m.group(1), unrolled=True),
                          op_name.group(1) if op_name else ""))
    return tuple(out)

  def custom_calls(self) -> tuple[str, ...]:
    return tuple(sorted({m.group(1) for lines in self.comps.values() for line in lines
                         if (m := _CUSTOM_CALL_RE.search(line))}))


@dataclasses.dataclass(frozen=True)
class StepFlops:
  """FLOPs of one step: XLA's count plus analytic counts of the work XLA cannot see.

  examples: sequences in the batch (B), the unit of "per example".
  extra: name -> FLOPs added analytically (e.g. the native sampled-softmax kernel).
  """
  xla: XlaCost
  examples: int
  extra: Mapping[str, float] = dataclasses.field(default_factory=dict)

  @property
  def total(self) -> float:
    return self.xla.total + sum(self.extra.values())

  @property
  def per_example(self) -> float:
    return self.total / self.examples

  def plus(self, name: str, flops: float) -> "StepFlops":
    """A copy with `flops` of uncounted work added under `name`."""
    if name in self.extra:
      raise ValueError(f"StepFlops already has an extra term named {name!r}")
    return dataclasses.replace(self, extra={**self.extra, name: float(flops)})

  def summary(self) -> dict:
    """Plain fields for a results file."""
    return {"flops_per_step": self.total, "flops_per_example": self.per_example,
            "xla_flops_per_step": self.xla.flops, "xla_loop_matmul_flops": self.xla.loop_matmul_flops,
            "extra_flops": dict(self.extra),
            "xla_loops": [dataclasses.asdict(lp) for lp in self.xla.loops if lp.has_matmul], "xla_custom_calls": list(self.xla.custom_calls),
            "xla_count_exact": self.xla.exact}


def _batch_size(args) -> int:
  """B from the first dict argument with `ids` [B, L] (the batch every recjax step takes)."""
  for a in jax.tree_util.tree_leaves(args, is_leaf=lambda x: isinstance(x, Mapping) and "ids" in x):
    if isinstance(a, Mapping) and "ids" in a:
      return int(a["ids"].shape[0])
  raise ValueError("cannot find the batch (a dict with 'ids' [B, L]) among the step's arguments; "
                   "pass examples= explicitly")


def train_step_flops(step_fn, *args, examples: int | None = None) -> StepFlops:
  """FLOPs of one call of `step_fn(*args)` (e.g. `train.step.make_train_step(...)(state, batch)`).

  Counts what XLA sees. When the step uses the native sampled-softmax kernel (`loss.impl` "native",
  or "auto" on CPU), `XlaCost.custom_calls` names it and its work is missing: add
  `sampled_softmax_flops(T, N, D, backward=True)` with `StepFlops.plus`, or count the step with
  `loss.impl="xla"`.
  """
  cost = xla_cost(step_fn, *args)
  return StepFlops(cost, _batch_size(args) if examples is None else int(examples))


class FlopsByShape:
  """`train_step_flops` of `step_fn`, counted once per distinct argument shapes and cached: the
  packed token count T of a batch varies with `token_bucket`, and the step's FLOPs with it.

  extra(*args) -> {name: FLOPs} adds work XLA cannot see (see `native_loss_extra`); examples(batch)
  -> int is the batch's example count where the batch has no `ids` (e.g. ranking requests).
  Counting compiles the step once more per shape (XLA's cost needs the compiled program)."""

  def __init__(self, step_fn, extra=None, examples=None):
    self._step_fn = step_fn
    self._extra = extra
    self._examples = examples
    self._cache: dict = {}

  def counted(self) -> tuple[StepFlops, ...]:
    """The counts made so far, one per distinct argument shapes, in first-seen order."""
    return tuple(self._cache.values())

  def __call__(self, *args) -> StepFlops:
    key = tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in jax.tree_util.tree_leaves(args))
    if key not in self._cache:
      batch = next((a for a in args if isinstance(a, Mapping)), None)
      examples = self._examples(batch) if self._examples is not None and batch is not None else None
      counted = train_step_flops(self._step_fn, *args, examples=examples)
      for name, value in (self._extra(*args) if self._extra else {}).items():
        counted = counted.plus(name, value)
      self._cache[key] = counted
    return self._cache[key]


def native_loss_extra(loss_cfg, dim: int):
  """For `FlopsByShape(extra=...)`: the native sampled-softmax kernel's FLOPs when `loss_cfg`
  resolves to it (`losses.resolve_impl`), else None. T is read from the batch's `token_index`."""
  from recjax import losses  # pylint: disable=import-outside-toplevel
  if loss_cfg.kind != "sampled_softmax" or losses.resolve_impl(loss_cfg.get("impl", "auto")) != "native":
    return None

  def extra(*args):
    batch = next(a for a in args if isinstance(a, Mapping) and "token_index" in a)
    t = int(np.shape(batch["token_index"])[0])
    return {"native_sampled_softmax": sampled_softmax_flops(t, loss_cfg.num_negatives, dim, backward=True)}
  return extra


def forward_flops(apply_fn, *args, examples: int | None = None) -> StepFlops:
  """FLOPs of one inference call, e.g. `lambda p, b: model.apply({"params": p}, b)`."""
  return train_step_flops(apply_fn, *args, examples=examples)


@dataclasses.dataclass(frozen=True)
class AnalyticFlops:
  """Matmul FLOPs of one forward pass of a batch, by term (name -> FLOPs)."""
  terms: Mapping[str, float]
  examples: int

  @property
  def forward(self) -> float:
    return float(sum(self.terms.values()))

  @property
  def forward_backward(self) -> float:
    """Forward + backward: each matmul's backward is two matmuls of its size, so 3× forward."""
    return 3.0 * self.forward

  def per_example(self, train: bool) -> float:
    return (self.forward_backward if train else self.forward) / self.examples


def _setting(cfg, name: str, model_cls):
  """cfg[name] (a mapping or ConfigDict) or cfg.name (a model instance), else the model's default."""
  if isinstance(cfg, Mapping):
    if name in cfg:
      return cfg[name]
  elif hasattr(cfg, name):
    return getattr(cfg, name)
  field = model_cls.__dataclass_fields__.get(name)
  if field is None or field.default is dataclasses.MISSING:
    raise ValueError(f"model config has no {name!r} and {model_cls.__name__} has no default for it")
  return field.default


def _batch_shape(batch) -> tuple[int, int]:
  if isinstance(batch, Mapping):
    if "ids" not in batch:
      raise ValueError(f"batch has no 'ids' [B, L]; fields: {sorted(batch)}")
    shape = tuple(np.shape(batch["ids"]))
  else:
    shape = tuple(batch)
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f"expected batch ids [B, L] (or a (B, L) tuple), got shape {shape}")
  return int(shape[0]), int(shape[1])


def _score_pairs(length: int, attention: str) -> int:
  if attention not in ATTENTION_COUNTS:
    raise ValueError(f"attention must be one of {ATTENTION_COUNTS}, got {attention!r}")
  return length * length if attention == "dense" else length * (length + 1) // 2


def analytic_hstu_flops(cfg, batch, *, attention: str = "dense") -> AnalyticFlops:
  """Matmul FLOPs of an HSTU forward pass (recjax/models/hstu.py), per block, with F = H·(2dv + 2dqk):

      uvqk  2·B·L·D·F           LN(X) · W_uvqk
      qk    2·B·H·P·dqk         Q·Kᵀ over P score pairs (P = L² dense, L(L+1)/2 causal)
      av    2·B·H·P·dv          A·V
      out   2·B·L·(H·dv)·D      W_o · (U ⊙ LN(AV))

  cfg: the model config (mapping) or an `HSTU` instance; batch: a batch dict or (B, L).
  """
  from recjax.models.hstu import HSTU  # pylint: disable=import-outside-toplevel
  b, l = _batch_shape(batch)
  d, blocks, h, dqk, dv = (int(_setting(cfg, k, HSTU)) for k in ("dim", "num_blocks", "num_heads", "dqk", "dv"))
  pairs = _score_pairs(l, attention)
  per_block = {
      "uvqk": 2.0 * b * l * d * h * (2 * dv + 2 * dqk),
      "qk": 2.0 * b * h * pairs * dqk,
      "av": 2.0 * b * h * pairs * dv,
      "out": 2.0 * b * l * h * dv * d,
  }
  return AnalyticFlops({k: blocks * v for k, v in per_block.items()}, b)


def analytic_sasrec_flops(cfg, batch, *, attention: str = "dense") -> AnalyticFlops:
  """Matmul FLOPs of a SASRec forward pass (recjax/models/sasrec.py), per block (Dh = D / H):

      qkv       3 · 2·B·L·D·D     query, key, value projections
      qk        2·B·H·P·Dh        Q·Kᵀ over P score pairs (= 2·B·P·D summed over heads)
      av        2·B·H·P·Dh        softmax(·)·V
      attn_out  2·B·L·D·D
      ffn       2 · 2·B·L·D·F     ffn_in, ffn_out (F = ffn_dim)

  cfg: the model config (mapping) or a `SASRec` instance; batch: a batch dict or (B, L).
  """
  from recjax.models.sasrec import SASRec  # pylint: disable=import-outside-toplevel
  b, l = _batch_shape(batch)
  d, blocks, h, f = (int(_setting(cfg, k, SASRec)) for k in ("dim", "num_blocks", "num_heads", "ffn_dim"))
  if d % h:
    raise ValueError(f"SASRec dim {d} is not divisible by num_heads {h}")
  pairs = _score_pairs(l, attention)
  per_block = {
      "qkv": 3 * 2.0 * b * l * d * d,
      "qk": 2.0 * b * pairs * d,
      "av": 2.0 * b * pairs * d,
      "attn_out": 2.0 * b * l * d * d,
      "ffn": 2 * 2.0 * b * l * d * f,
  }
  return AnalyticFlops({k: blocks * v for k, v in per_block.items()}, b)


ANALYTIC = {"hstu": analytic_hstu_flops, "sasrec": analytic_sasrec_flops}


def analytic_model_flops(cfg, batch, *, attention: str = "dense") -> AnalyticFlops:
  """The analytic count for `cfg["name"]` (a model config as in configs/)."""
  name = cfg["name"] if isinstance(cfg, Mapping) else getattr(cfg, "name", None)
  if name not in ANALYTIC:
    raise ValueError(f"no analytic FLOPs count for model {name!r}; known: {sorted(ANALYTIC)}")
  return ANALYTIC[name](cfg, batch, attention=attention)


def sampled_softmax_flops(num_tokens: int, num_negatives: int, dim: int, *, backward: bool) -> float:
  """Matmul FLOPs of the sampled softmax over T tokens with N negatives: 2·T·(N+1)·D for the
  logits; with `backward`, two more of that size (user gradient and item-row gradient), so 3×.

  The native kernel computes the loss and both gradients in one pass, so a training step with it
  costs the backward=True count, all of it invisible to XLA."""
  if min(num_tokens, dim) < 1 or num_negatives < 0:
    raise ValueError(f"sampled_softmax_flops: need T ≥ 1, N ≥ 0, D ≥ 1, got T={num_tokens}, "
                     f"N={num_negatives}, D={dim}")
  fwd = 2.0 * num_tokens * (num_negatives + 1) * dim
  return 3.0 * fwd if backward else fwd


def causal_attention_flops(lengths, heads: int, dqk: int, dv: int, *, backward: bool) -> float:
  """Matmul FLOPs of causal attention over the real tokens only (what the C++ kernel of
  `layers/native_attention.py` computes): P = sum over rows of len·(len+1)/2 query-key pairs, each
  head 2·P·(dqk + dv) forward (scores, weighted sum); with `backward` also the recomputed scores and
  dW, dV, dQ, dK: 2·P·(4·dqk + 3·dv) in all. Per attention layer."""
  lengths = np.asarray(lengths, dtype=np.float64)
  if heads < 1 or dqk < 1 or dv < 1 or np.any(lengths < 0):
    raise ValueError(f"causal_attention_flops: need heads, dqk, dv >= 1 and lengths >= 0, got {heads}, {dqk}, {dv}")
  pairs = float(np.sum(lengths * (lengths + 1) / 2)) * heads
  return 2.0 * pairs * ((4 * dqk + 3 * dv) if backward else (dqk + dv))


@dataclasses.dataclass(frozen=True)
class EmbeddingTraffic:
  """Rows gathered from embedding tables in one forward pass and the bytes they move.

  A training step moves the same rows again as a scatter-add of their gradients (×2 bytes)."""
  rows: int
  bytes: int

  def train_bytes(self) -> int:
    return 2 * self.bytes


def embedding_traffic(batch_size: int, seq_len: int, dim: int, *, num_tokens: int = 0,
                      num_negatives: int = 0, itemsize: int = 4) -> EmbeddingTraffic:
  """Input lookups (B·L rows of the item table) plus, for the sampled softmax, T·(N+1) candidate
  rows; each row is D·itemsize bytes. Position-table reads are dense slices, not counted."""
  if min(batch_size, seq_len, dim, itemsize) < 1 or min(num_tokens, num_negatives) < 0:
    raise ValueError(f"embedding_traffic: bad sizes B={batch_size}, L={seq_len}, D={dim}, T={num_tokens}, "
                     f"N={num_negatives}, itemsize={itemsize}")
  rows = batch_size * seq_len + num_tokens * (num_negatives + 1 if num_tokens else 0)
  return EmbeddingTraffic(rows, rows * dim * itemsize)
